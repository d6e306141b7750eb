// Unit tests of cvp-transform.js (the JavaScript SDK helpers), run natively:
//   node --test transforms/js/sdk/cvp-transform.test.js
import test from 'node:test';
import assert from 'node:assert/strict';
import * as cvp from './cvp-transform.js';

const enc = (s) => new TextEncoder().encode(s);

function event(fields = {}) {
  return {
    key: 'k', timestamp: 1732500000123456789n, operation: 'updated', severity: 'info',
    severityCode: 2, lastUpdatedTime: 1n, deleteTime: 0n, ...fields,
  };
}

const tags = (pairs) => pairs.map(([label, value]) => ({ label, value, creator: 'user' }));
const LEAF1 = { id: 'D1', hostname: 'leaf1', streamingStatus: 'active', tags: tags([['site', 'dc1'], ['role', 'leaf'], ['site', 'dc9']]) };

test('reads returns the names once, in order, and refuses unknown ones', () => {
  assert.deepEqual(cvp.reads('title', 'data.deviceId', 'title', 'value'), ['title', 'data.deviceId', 'value']);
  assert.throws(() => cvp.reads('devises'), {
    message: 'reads: unknown field "devises" (expected data.NAME or one of components, data, description, devices, event-type, headers, interfaces, json, link, metadata, rule-id, title, value)',
  });
  assert.throws(() => cvp.reads('data.'), /unknown field "data."/);
});

test('an undeclared field throws, naming it and what to do', () => {
  cvp.reads('title', 'data.deviceId');
  const ev = new cvp.Event(event({ title: 'T' }));
  assert.equal(ev.title, 'T');
  assert.equal(ev.key, 'k');
  assert.equal(ev.timestamp, 1732500000123456789n);
  assert.throws(() => ev.link, {
    name: 'UndeclaredField',
    field: 'link',
    message: 'field "link" was read but not declared: add "link" to the reads list that init returns (cvp.reads(...))',
  });
  assert.throws(() => ev.eventType, { field: 'event-type' });
  assert.throws(() => ev.dataField('interfaceId'), { field: 'data.interfaceId' });
  assert.equal(ev.dataField('deviceId'), undefined); // declared, unset
  assert.throws(() => ev.deviceId(), { field: 'components' });
});

test('data covers every data.NAME', () => {
  cvp.reads('data');
  const ev = new cvp.Event(event({ data: [['a', '1'], ['deviceId', 'D']] }));
  assert.equal(ev.dataField('deviceId'), 'D');
  assert.deepEqual(ev.data, [['a', '1'], ['deviceId', 'D']]);
});

test('device and interface ids, records and tags', () => {
  cvp.reads('data.deviceId', 'data.interfaceId', 'components', 'devices', 'interfaces');
  const comps = [{ kind: 'COMPONENT_TYPE_INTERFACE', fields: [['deviceId', 'C1'], ['interfaceId', 'Et2']] }];
  const intf = { deviceId: 'D1', interfaceId: 'Et1', tags: tags([['peer', 'spine1']]) };
  const ev = new cvp.Event(event({ data: [['deviceId', 'D1']], components: comps, devices: [LEAF1], interfaces: [intf] }));
  assert.deepEqual([ev.deviceId(), ev.interfaceId()], ['D1', 'Et2']);
  assert.equal(ev.componentField('deviceId'), 'C1');
  assert.equal(ev.componentField('nope', '-'), '-');
  assert.equal(ev.device('D1').hostname, 'leaf1');
  assert.equal(ev.device('D2'), undefined);
  assert.equal(cvp.tag(ev.device('D1'), 'site'), 'dc1');
  assert.deepEqual(cvp.tagValues(ev.device('D1'), 'site'), ['dc1', 'dc9']);
  assert.equal(cvp.tag(ev.device('D1'), 'rack', '?'), '?');
  assert.equal(cvp.tag(ev.interface('D1', 'Et1'), 'peer'), 'spine1');
  assert.equal(ev.interface('D1', 'Et2'), undefined);
  const empty = new cvp.Event(event());
  assert.deepEqual([empty.deviceId(), empty.interfaceId(), empty.device('D1')], [undefined, undefined, undefined]);
});

test('parseJson and severityAtLeast', () => {
  cvp.reads('json');
  assert.deepEqual(new cvp.Event(event({ json: enc('{"key":{"key":"k"}}') })).parseJson(), { key: { key: 'k' } });
  const at = (severity, severityCode) => new cvp.Event(event({ severity, severityCode })).severityAtLeast('error');
  assert.deepEqual(
    [at('warning', 3), at('error', 4), at('critical', 5), at('unspecified', 0), at('unspecified', 9)],
    [false, true, true, false, true],
  );
});

test('the record: value and headers need declaring', () => {
  cvp.reads('title');
  const r = new cvp.Record({ topic: 't', key: enc('k'), value: undefined, headers: [] });
  assert.equal(r.topic, 't');
  assert.throws(() => r.value, { field: 'value' });
  assert.throws(() => r.headers, { field: 'headers' });
  cvp.reads('value', 'headers');
  const h = new cvp.Record({ topic: 't', value: enc('v'), headers: [{ key: 'a', value: enc('1') }, { key: 'a', value: enc('2') }] });
  assert.deepEqual([h.value, h.header('a'), h.header('b')], [enc('v'), enc('1'), undefined]);
});

test('patches and outputs', () => {
  assert.deepEqual(cvp.patch(), {
    topic: undefined, key: { tag: 'keep' }, value: { tag: 'keep' }, headers: undefined, setHeaders: [], removeHeaders: [],
  });
  assert.deepEqual(
    cvp.patch({ topic: 't', key: 'k', value: null, headers: { a: '1' }, setHeaders: [{ key: 'b', value: enc('2') }], removeHeaders: ['c'] }),
    {
      topic: 't', key: { tag: 'set', val: enc('k') }, value: { tag: 'null' },
      headers: [{ key: 'a', value: enc('1') }], setHeaders: [{ key: 'b', value: enc('2') }], removeHeaders: ['c'],
    },
  );
  assert.throws(() => cvp.patch({ key: 3 }), { message: 'key must be a string or a Uint8Array, got number' });
  assert.deepEqual(cvp.keep(), { tag: 'keep' });
  assert.deepEqual(cvp.drop(), { tag: 'records', val: [] });
  assert.equal(cvp.copyTo('audit').topic, 'audit');
  assert.deepEqual(cvp.setHeader('s', 'x').setHeaders, [{ key: 's', value: enc('x') }]);
  cvp.reads('headers');
  const r = new cvp.Record({ topic: 't', headers: [{ key: 'a', value: enc('1') }] });
  assert.deepEqual(cvp.addHeader(r, 'a', '2').headers, [{ key: 'a', value: enc('1') }, { key: 'a', value: enc('2') }]);
});

test('process converts results and isolates failures', () => {
  cvp.reads('title');
  const results = [cvp.keep(), cvp.copyTo('x'), [cvp.patch(), cvp.copyTo('y')], [], undefined, 'oops'];
  const batch = results.map((_, i) => ({ event: event({ title: String(i) }), record: { topic: 't', headers: [] } }));
  let i = 0;
  const outs = cvp.process(batch, () => results[i++], 't');
  assert.deepEqual(outs, [
    { tag: 'keep' },
    { tag: 'records', val: [cvp.copyTo('x')] },
    { tag: 'records', val: [cvp.patch(), cvp.copyTo('y')] },
    { tag: 'records', val: [] },
    { tag: 'error', val: 't: the transform returned undefined: return cvp.keep() to pass the record on' },
    { tag: 'error', val: 't: the transform returned neither an output nor patches' },
  ]);
  const [out] = cvp.process(batch.slice(0, 1), (e) => cvp.setHeader('l', e.link), 't');
  assert.deepEqual(out, {
    tag: 'error',
    val: 't: field "link" was read but not declared: add "link" to the reads list that init returns (cvp.reads(...))',
  });
});

test('initialize turns an exception into the string componentize-js needs', () => {
  assert.deepEqual(cvp.initialize(() => ['title']), ['title']);
  assert.throws(() => cvp.initialize(() => { throw new Error('bad key'); }), (e) => e === 'bad key');
});

test('toJson renders BigInts and bytes where JSON.stringify throws', () => {
  const ev = event({ title: 'T', json: enc('{}'), data: [['a', 'b']] });
  assert.throws(() => JSON.stringify(ev), TypeError);
  assert.equal(
    cvp.toJson(ev),
    '{"key":"k","timestamp":"1732500000123456789","operation":"updated","severity":"info","severityCode":2,"lastUpdatedTime":"1","deleteTime":"0","title":"T","json":"{}","data":[["a","b"]]}',
  );
  assert.equal(cvp.toJson({ t: 1732500000123456789n, u: undefined, n: NaN }, { bigint: 'number' }), '{"t":1732500000123456789,"n":null}');
  cvp.reads('title');
  assert.equal(cvp.toJson([new cvp.Event(event({ title: 'x' })).title, undefined]), '["x",null]');
  assert.throws(() => cvp.toJson(1, { bigint: 'text' }), /bigint must be/);
});

test('apply: what the host makes of a record and a patch', () => {
  const rec = {
    topic: 't', key: enc('k'), value: enc('v'),
    headers: [['a', '1'], ['b', '2'], ['a', '3'], ['c', '4']].map(([key, v]) => ({ key, value: enc(v) })),
  };
  const got = cvp.apply(rec, cvp.patch({ topic: 'u', key: null, setHeaders: { a: '9', d: '5' }, removeHeaders: ['c'] }));
  assert.deepEqual(got, {
    topic: 'u', key: undefined, value: enc('v'),
    headers: [['b', '2'], ['a', '9'], ['d', '5']].map(([key, v]) => ({ key, value: enc(v) })),
  });
  assert.deepEqual(cvp.apply(rec, cvp.patch({ value: 'w', headers: [] })), { topic: 't', key: enc('k'), value: enc('w'), headers: [] });
});
