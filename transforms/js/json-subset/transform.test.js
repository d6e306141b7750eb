// Unit tests of transform.js, run natively in Node (no WebAssembly):
//   node --import ../sdk/testing/register.js --test transform.test.js
// (npm test, in this folder). register.js points the contract's host import
// at ../sdk/testing/host.js, which stands in for config() and log().
import test from 'node:test';
import assert from 'node:assert/strict';
import { setConfig, logs } from '../sdk/testing/host.js';

const { transformer } = await import('./transform.js');

const dec = new TextDecoder();

// An event as jco gives it, with what a transform that declared every field
// of json-subset would receive.
const EVENT = {
  key: 'e1', timestamp: 1732500000123456789n, operation: 'updated', severity: 'critical',
  severityCode: 5, lastUpdatedTime: 1732500001000000000n, deleteTime: 0n,
  title: 'Link down', description: 'Et1 went down', eventType: 'LINK_DOWN', ruleId: 'R1',
  data: [['deviceId', 'JPE123'], ['interfaceId', 'Et1']],
  components: [{ kind: 'COMPONENT_TYPE_INTERFACE', fields: [['deviceId', 'JPE123'], ['interfaceId', 'Et1']] }],
};
const RECORD = { topic: 'events', key: new TextEncoder().encode('e1'), headers: [] };

function start(config) {
  setConfig(config);
  return transformer.init();
}

function initError(config) {
  try {
    start(config);
  } catch (e) {
    assert.equal(typeof e, 'string', 'init must throw a string, or the instance traps');
    return e;
  }
  assert.fail('init did not fail');
}

// The value each event's output sets, as text.
function values(events) {
  return transformer.process(events.map((event) => ({ event, record: RECORD }))).map((out) => {
    assert.equal(out.tag, 'records');
    assert.equal(out.val.length, 1);
    const [p] = out.val;
    assert.deepEqual(
      [p.topic, p.key, p.headers, p.setHeaders, p.removeHeaders, p.value.tag],
      [undefined, { tag: 'keep' }, undefined, [], [], 'set'],
    );
    return dec.decode(p.value.val);
  });
}

test('default fields: reads exactly what it renders', () => {
  assert.deepEqual(start({}), ['title', 'description', 'event-type', 'data']);
  assert.deepEqual(logs(), [['debug', 'json-subset: fields key, timestamp, severity, title, description, eventType, data']]);
  assert.deepEqual(values([EVENT]), [
    '{"key":"e1","timestamp":1732500000123456789,"severity":"critical","title":"Link down","description":"Et1 went down","eventType":"LINK_DOWN","data":{"deviceId":"JPE123","interfaceId":"Et1"}}',
  ]);
});

test('every field, in the order given, any spelling, iso timestamps', () => {
  const reads = start({
    fields: ['components', 'rule_id', 'severity-code', 'operation', 'lastUpdatedTime', 'key', 'timestamp'],
    timestamps: 'iso',
  });
  assert.deepEqual(reads, ['components', 'rule-id']);
  assert.deepEqual(values([EVENT, { ...EVENT, timestamp: 0n }]), [
    '{"components":[{"kind":"COMPONENT_TYPE_INTERFACE","fields":{"deviceId":"JPE123","interfaceId":"Et1"}}],"ruleId":"R1","severityCode":5,"operation":"updated","lastUpdatedTime":"2024-11-25T02:00:01.000000000Z","key":"e1","timestamp":"2024-11-25T02:00:00.123456789Z"}',
    '{"components":[{"kind":"COMPONENT_TYPE_INTERFACE","fields":{"deviceId":"JPE123","interfaceId":"Et1"}}],"ruleId":"R1","severityCode":5,"operation":"updated","lastUpdatedTime":"2024-11-25T02:00:01.000000000Z","key":"e1","timestamp":null}',
  ]);
});

test('fields CVP left unset render empty, as before 0.2', () => {
  start({ fields: 'key,title,data,components' });
  const bare = { ...EVENT, title: undefined, data: undefined, components: undefined };
  assert.deepEqual(values([bare]), ['{"key":"e1","title":"","data":{},"components":[]}']);
});

test('key-only needs no field from the host', () => {
  assert.deepEqual(start({ fields: ['key', 'severity'] }), []);
});

test('config errors name the key', () => {
  assert.equal(
    initError({ fields: ['sevrity'] }),
    'fields: unknown field "sevrity" (expected one of: key, timestamp, operation, severity, severity-code, title, description, event-type, rule-id, data, components, last-updated-time)',
  );
  assert.equal(initError({ fields: ['key', 'key'] }), 'fields: "key" is listed twice');
  assert.equal(initError({ fields: [] }), 'fields: the list is empty (omit the key to get the default fields)');
  assert.equal(initError({ timestamps: 'ms' }), 'timestamps: invalid value "ms" (expected ns or iso)');
  assert.equal(initError({ field: 'key' }), 'unknown config key "field" (expected fields, timestamps)');
});

test('a bad event is that event\'s error, not a trap', () => {
  start({ fields: ['key', 'data'] });
  const outs = transformer.process([
    { event: { ...EVENT, data: 7 }, record: RECORD },
    { event: EVENT, record: RECORD },
  ]);
  assert.deepEqual(outs[0], { tag: 'error', val: 'pairs is not iterable' });
  assert.equal(outs[1].tag, 'records');
});
