// components.test.js: the example transforms as the real WebAssembly
// components their build.sh scripts make (target/examples/*.wasm: Python and
// JavaScript), run in Node through `jco transpile`, with ../sdk/testing/host.js
// as the host's config() and log(). This checks what crosses the component
// boundary under contract 0.2 (options, variants, init's result) without
// cvp-stream itself:
//
//   node --test transforms/js/components.test.js     (after the build.sh scripts)
//
// jco comes from json-subset's node_modules (its build.sh installs it); the
// transpiled modules are written under it too, so that the WASI shims the
// Python components import resolve.
import test from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import v8 from 'node:v8';
import { setConfig, logs } from './sdk/testing/host.js';
import * as cvp from './sdk/cvp-transform.js';

// componentize-py's CPython uses extended constant expressions, which Node
// 20's V8 has behind a flag; it must be on before the first compile.
v8.setFlagsFromString('--experimental-wasm-extended-const');

const HERE = fileURLToPath(new URL('.', import.meta.url));
const REPO = join(HERE, '..', '..');
const MODULES = join(HERE, 'json-subset', 'node_modules');
const HOST = join(HERE, 'sdk', 'testing', 'host.js');

// The component's `transformer` export, transpiled into a fresh folder.
async function load(name) {
  const wasm = join(REPO, 'target', 'examples', `${name}.wasm`);
  assert.ok(existsSync(wasm), `${wasm} is missing: run its build.sh`);
  const out = join(MODULES, '.cvp-components', name);
  rmSync(out, { recursive: true, force: true });
  execFileSync(join(MODULES, '.bin', 'jco'), [
    'transpile', wasm, '-o', out, '--name', name, '--quiet',
    '--map', `cvp-stream:transform/host@0.2.0=${HOST}`,
  ]);
  return (await import(join(out, `${name}.js`))).transformer;
}

function init(transformer, config) {
  setConfig(config);
  return transformer.init();
}

// init's error, as the component returns it (jco throws a ComponentError
// whose payload is the string).
function initError(transformer, config) {
  try {
    init(transformer, config);
  } catch (e) {
    return e.payload;
  }
  assert.fail('init did not fail');
}

const enc = (s) => new TextEncoder().encode(s);
const tags = (pairs) => pairs.map(([label, value]) => ({ label, value, creator: 'user' }));
const device = (id, hostname, pairs) => ({ id, hostname, streamingStatus: 'active', tags: tags(pairs) });

// An event as the host would send it to a transform that declared
// `fields` (others are absent), with the record the stock chain gives.
function input(fields) {
  return {
    event: {
      key: 'e1', timestamp: 1732500000123456789n, operation: 'updated', severity: 'error',
      severityCode: 4, lastUpdatedTime: 1732500000123456789n, deleteTime: 0n, ...fields,
    },
    record: { topic: 'cvp-events', key: enc('e1'), headers: [] },
  };
}

// The records the host makes of `inputs` and their outputs: per input,
// 'keep', an error message, or [[topic, key, headers], ...].
function records(inputs, outputs) {
  assert.equal(outputs.length, inputs.length);
  const text = (b) => (b === undefined ? null : new TextDecoder().decode(b));
  return outputs.map((out, i) => {
    if (out.tag !== 'records') return out.tag === 'error' ? `error: ${out.val}` : out.tag;
    return out.val.map((p) => {
      const r = cvp.apply(inputs[i].record, p);
      return [r.topic, text(r.key), r.headers.map((h) => `${h.key}=${text(h.value)}`).join(',')];
    });
  });
}

test('json_subset.wasm (JavaScript)', async () => {
  const t = await load('json_subset');
  assert.deepEqual(init(t, { fields: ['key', 'severity', 'title', 'timestamp'] }), ['title']);
  assert.deepEqual(logs(), [['debug', 'json-subset: fields key, severity, title, timestamp']]);
  const outs = t.process([input({ title: 'Link down' }), input({})]);
  assert.deepEqual(outs.map((o) => o.val.map((p) => [p.topic, p.key.tag, new TextDecoder().decode(p.value.val)])), [
    [[undefined, 'keep', '{"key":"e1","severity":"error","title":"Link down","timestamp":1732500000123456789}']],
    [[undefined, 'keep', '{"key":"e1","severity":"error","title":"","timestamp":1732500000123456789}']],
  ]);
  assert.equal(initError(t, { fields: ['sevrity'] }).split(' (')[0], 'fields: unknown field "sevrity"');
});

test('site_enrich.wasm (Python)', async () => {
  const t = await load('site_enrich');
  assert.deepEqual(init(t, { sites: { JPE19181520: 'dc1' }, default: 'elsewhere' }), ['data.deviceId', 'components']);
  assert.deepEqual(logs(), [['debug', 'site-enrich: 1 devices mapped, header `site`, default `elsewhere`']]);
  const inputs = [
    input({ data: [['deviceId', 'JPE19181520']], components: [] }),
    input({ components: [{ kind: 'COMPONENT_TYPE_DEVICE', fields: [['deviceId', 'SSJ17371234']] }] }),
  ];
  inputs[0].record.headers = [{ key: 'site', value: enc('old') }, { key: 'x', value: enc('1') }];
  assert.deepEqual(records(inputs, t.process(inputs)), [
    [['cvp-events', 'e1', 'x=1,site=dc1']],
    [['cvp-events', 'e1', 'site=elsewhere']],
  ]);
  init(t, { sites: { JPE19181520: 'dc1' } });
  assert.deepEqual(t.process(inputs.slice(1)), [{ tag: 'keep' }]);
  assert.equal(
    initError(t, {}),
    'config key `sites` is missing: give a map of deviceId to site name, e.g. sites: { JPE19181520: dc1 }',
  );
});

test('site_route.wasm (Python)', async () => {
  const t = await load('site_route');
  assert.deepEqual(init(t, { topic: 'events.{site}', fallback: 'events.unrouted' }), [
    'data.deviceId', 'data.interfaceId', 'components', 'devices',
  ]);
  const devices = [
    device('JPE19181520', 'leaf1', [['role', 'leaf'], ['site', 'dc1']]),
    device('SSJ17371234', 'leaf2', [['site', 'New York']]),
    device('HSH14525062', 'spine1', [['role', 'spine']]),
    device('JAS13340011', undefined, [['site', 'dc2']]),
  ];
  const about = (id, intf) => input({
    data: [['deviceId', id], ...(intf ? [['interfaceId', intf]] : [])],
    components: [],
    devices,
  });
  const inputs = [
    about('JPE19181520', 'Ethernet49/1'),
    about('SSJ17371234', 'Management1'),
    about('HSH14525062', 'Ethernet1'),
    about('JAS13340011', 'Ethernet2'),
    about('ZZZ00000000', 'Ethernet3'),
    about('JPE19181520'),
    input({ data: [], components: [], devices }),
  ];
  assert.deepEqual(records(inputs, t.process(inputs)), [
    [['events.dc1', 'leaf1:Ethernet49/1', '']],
    [['events.New_York', 'leaf2:Management1', '']],
    [['events.unrouted', 'spine1:Ethernet1', '']],
    [['events.dc2', 'JAS13340011:Ethernet2', '']],
    [['events.unrouted', 'ZZZ00000000:Ethernet3', '']],
    [['events.dc1', 'leaf1', '']],
    [['events.unrouted', 'e1', '']],
  ]);
  assert.equal(
    initError(t, { topic: 'events' }),
    "config key `topic` must contain {site}, got 'events' (e.g. events.{site})",
  );
});
