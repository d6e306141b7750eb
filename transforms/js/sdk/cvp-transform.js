// cvp-transform.js: helpers for cvp-stream transforms written in JavaScript.
//
// For the contract cvp-stream:transform@0.2.0 (wit/transform.wit), built with
// `jco componentize --bundle` (componentize-js 0.22). One ES module with no
// imports, bundled into the component with the transform:
//
//   import { log, config } from 'cvp-stream:transform/host@0.2.0';
//   import * as cvp from './cvp-transform.js';
//
//   const READS = ['title', 'data.deviceId', 'components', 'devices'];
//
//   function transform(event, record) {          // cvp.Event, cvp.Record
//     const device = event.device(event.deviceId());
//     if (!device) return cvp.keep();
//     return cvp.setHeader('hostname', device.hostname ?? device.id);
//   }
//
//   export const transformer = {
//     init: () => cvp.initialize(() => cvp.reads(...READS)),
//     process: (batch) => cvp.process(batch, transform, 'my-transform'),
//   };
//
// What it gives:
//   - reads(...): the names `init` returns, checked and remembered, so that
//     reading an undeclared field throws UndeclaredField (naming the field
//     and saying to add it) instead of quietly giving undefined: the host
//     leaves every undeclared field empty, which looks like "CVP left it
//     unset";
//   - Event and Record: views of the input that enforce that, with lookups
//     for a `data` field, a component field, the device and interface
//     records (tag()/tagValues() for their tags) and the event's JSON;
//   - keep(), drop(), patch({...}), setHeader(), addHeader(), copyTo(): the
//     outputs, as changes to the input's record;
//   - process(batch, fn, name): one output per input, an exception for one
//     event becoming that event's `error` output rather than a trap;
//   - initialize(fn): init's errors as the string componentize-js needs;
//   - toJson(value): JSON text of anything the bindings give, BigInt
//     timestamps included (JSON.stringify throws on those);
//   - apply(record, patch): what the host makes of a record and a patch,
//     for unit tests.
//
// How jco maps the contract: records are objects with camelCase fields,
// `option<T>` is the value or undefined, `s64` a BigInt, enums lower-case
// strings, `list<u8>` a Uint8Array, variants `{ tag, val }`.

// The names `init` may return (wit/transform.wit), besides "data.NAME".
export const FIELDS = Object.freeze([
  'title', 'description', 'event-type', 'rule-id', 'data', 'components',
  'metadata', 'json', 'devices', 'interfaces', 'link', 'value', 'headers',
]);

// Event properties (camelCase, as jco names them) filled only when declared,
// and the name that declares each.
const OPTIONAL = {
  title: 'title',
  description: 'description',
  eventType: 'event-type',
  ruleId: 'rule-id',
  data: 'data',
  components: 'components',
  metadata: 'metadata',
  json: 'json',
  devices: 'devices',
  interfaces: 'interfaces',
  link: 'link',
};
// Event properties the host always fills.
const ALWAYS = [
  'key', 'timestamp', 'operation', 'severity', 'severityCode', 'lastUpdatedTime', 'deleteTime',
];

// What this transform declared; set by reads(). One module instance serves
// every call from the host, so module state lasts from init to process.
let declaredNames = new Set();
let anyData = false; // "data" or some "data.NAME" was declared

// A field was read that the transform did not declare in init.
export class UndeclaredField extends Error {
  constructor(name) {
    super(
      `field "${name}" was read but not declared: add "${name}" to the reads ` +
        'list that init returns (cvp.reads(...))',
    );
    this.name = 'UndeclaredField';
    this.field = name;
  }
}

// Declares the fields the transform reads and returns them (once each, in
// order) as the list `init` returns. Throws for a name the contract does not
// have, so a typo fails in a unit test rather than at the host's start-up.
export function reads(...names) {
  const unique = [...new Set(names)];
  for (const name of unique) {
    const ok =
      typeof name === 'string' &&
      (FIELDS.includes(name) || (name.startsWith('data.') && name.length > 5));
    if (!ok) {
      throw new Error(
        `reads: unknown field ${JSON.stringify(name)} (expected data.NAME or one of ${[...FIELDS].sort().join(', ')})`,
      );
    }
  }
  declaredNames = new Set(unique);
  anyData = unique.some((n) => n === 'data' || n.startsWith('data.'));
  return unique;
}

// Whether `name` ("title", "data.deviceId", ...) was declared; "data" covers
// every "data.NAME".
export function declared(name) {
  if (name.startsWith('data.')) return declaredNames.has(name) || declaredNames.has('data');
  return declaredNames.has(name);
}

function need(name) {
  if (!declared(name)) throw new UndeclaredField(name);
}

// The values of `entity`'s tags with this label, in order (a device or an
// interface; a label can carry several values).
export function tagValues(entity, label) {
  return entity.tags.filter((t) => t.label === label).map((t) => t.value);
}

// The first value of `entity`'s tag with this label, or `fallback`.
export function tag(entity, label, fallback = undefined) {
  const found = entity.tags.find((t) => t.label === label);
  return found ? found.value : fallback;
}

const SEVERITIES = ['unspecified', 'debug', 'info', 'warning', 'error', 'critical'];

// A view of one event that throws UndeclaredField on reading a field the
// transform did not declare. Properties are those of the bindings' event
// (`eventType`, `severityCode`, ...); a declared field CVP left unset is
// undefined. The bindings' object itself is `.raw`.
export class Event {
  constructor(raw) {
    this.raw = raw;
  }

  // The `data` entry `name` (e.g. "deviceId"); needs "data.NAME" or "data".
  dataField(name, fallback = undefined) {
    need(`data.${name}`);
    const found = (this.raw.data ?? []).find(([k]) => k === name);
    return found ? found[1] : fallback;
  }

  // The first field `name` (e.g. "deviceId", "interfaceId") of the event's
  // components, in order; needs "components".
  componentField(name, fallback = undefined) {
    need('components');
    for (const c of this.raw.components ?? []) {
      const found = c.fields.find(([k]) => k === name);
      if (found) return found[1];
    }
    return fallback;
  }

  // The device the event is about: its `data` entry `deviceId`, else the
  // first component field `deviceId`; undefined if neither. Needs
  // "data.deviceId" and "components" (checked up front, not only when data
  // lacks it).
  deviceId() {
    need('components');
    return this.dataField('deviceId') || this.componentField('deviceId');
  }

  // Like deviceId(), for `interfaceId`. Needs "data.interfaceId" and
  // "components".
  interfaceId() {
    need('components');
    return this.dataField('interfaceId') || this.componentField('interfaceId');
  }

  // The inventory's record of the device with this id (serial), with
  // `.hostname`, `.model`, ... and `.tags`; undefined when the event does not
  // carry it (the inventory does not know it). Needs "devices".
  device(id) {
    need('devices');
    return (this.raw.devices ?? []).find((d) => d.id === id);
  }

  // The interface with these ids, with `.tags`; undefined when the event does
  // not carry it. Needs "interfaces".
  interface(deviceId, interfaceId) {
    need('interfaces');
    return (this.raw.interfaces ?? []).find(
      (i) => i.deviceId === deviceId && i.interfaceId === interfaceId,
    );
  }

  // The whole event in the protobuf JSON mapping, parsed; undefined if the
  // host sent none. Needs "json".
  parseJson() {
    need('json');
    const bytes = this.raw.json;
    return bytes === undefined ? undefined : JSON.parse(decoder.decode(bytes));
  }

  // Whether the event is at least as severe as `min` ('warning', ...). A
  // severity newer than the contract ('unspecified' with a non-zero code)
  // counts as severe enough: better to pass on an alert nobody understands
  // than to drop it.
  severityAtLeast(min) {
    const floor = SEVERITIES.indexOf(min);
    if (floor < 0) throw new Error(`unknown severity ${JSON.stringify(min)}`);
    if (this.raw.severity === 'unspecified' && this.raw.severityCode !== 0) return true;
    return SEVERITIES.indexOf(this.raw.severity) >= floor;
  }

  // For toJson/JSON.stringify: the fields the host filled.
  toJSON() {
    return this.raw;
  }
}

for (const [prop, name] of Object.entries(OPTIONAL)) {
  Object.defineProperty(Event.prototype, prop, {
    get() {
      if (!(prop === 'data' && anyData)) need(name);
      return this.raw[prop];
    },
  });
}
for (const prop of ALWAYS) {
  Object.defineProperty(Event.prototype, prop, {
    get() {
      return this.raw[prop];
    },
  });
}

// A view of the input's record: `topic` and `key` always, `value` and
// `headers` only when "value" and "headers" were declared. The bindings'
// object itself is `.raw`.
export class Record {
  constructor(raw) {
    this.raw = raw;
  }

  get topic() {
    return this.raw.topic;
  }

  // A Uint8Array, or undefined for a Kafka null.
  get key() {
    return this.raw.key;
  }

  // A Uint8Array, or undefined for a Kafka null. Needs "value".
  get value() {
    need('value');
    return this.raw.value;
  }

  // [{ key, value: Uint8Array }, ...]. Needs "headers".
  get headers() {
    need('headers');
    return this.raw.headers;
  }

  // The value (Uint8Array) of the first header named `key`. Needs "headers".
  header(key, fallback = undefined) {
    const found = this.headers.find((h) => h.key === key);
    return found ? found.value : fallback;
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function bytes(value, what) {
  if (typeof value === 'string') return encoder.encode(value);
  if (value instanceof Uint8Array) return value;
  throw new TypeError(`${what} must be a string or a Uint8Array, got ${typeof value}`);
}

// A header list from { name: value } or [{ key, value }, ...] (values as
// strings or Uint8Arrays).
function headerList(given) {
  if (given === undefined) return undefined;
  const entries = Array.isArray(given)
    ? given.map((h) => [h.key, h.value])
    : Object.entries(given);
  return entries.map(([key, value]) => ({ key, value: bytes(value, `header ${key}`) }));
}

function change(value, what) {
  if (value === undefined) return { tag: 'keep' };
  if (value === null) return { tag: 'null' };
  return { tag: 'set', val: bytes(value, what) };
}

// One record to produce, as changes to the input's record; every property
// left out leaves that part as it is:
//   topic:         another topic
//   key, value:    a string or Uint8Array to set, null for a Kafka null
//   headers:       replace every header ({ name: value } or a list)
//   setHeaders:    add these last, each replacing the headers of the same name
//   removeHeaders: remove the headers with these names
export function patch({ topic, key, value, headers, setHeaders, removeHeaders } = {}) {
  return {
    topic,
    key: change(key, 'key'),
    value: change(value, 'value'),
    headers: headerList(headers),
    setHeaders: headerList(setHeaders) ?? [],
    removeHeaders: [...(removeHeaders ?? [])],
  };
}

// Output: the input's record, unchanged.
export function keep() {
  return { tag: 'keep' };
}

// Output: no record for this input.
export function drop() {
  return { tag: 'records', val: [] };
}

// A patch setting one header: the host removes any header of that name and
// adds this one last. Needs no declared field.
export function setHeader(name, value) {
  return patch({ setHeaders: { [name]: value } });
}

// A patch adding a header even when one of that name exists (Kafka allows
// repeats). `record` is the input's Record; needs "headers".
export function addHeader(record, name, value) {
  return patch({ headers: [...record.headers, { key: name, value: bytes(value, name) }] });
}

// A patch sending the record to `topic`. Return [patch(), copyTo(t)] to keep
// the original and add a copy.
export function copyTo(topic) {
  return patch({ topic });
}

function isPatch(p) {
  return p !== null && typeof p === 'object' && 'setHeaders' in p && 'key' in p && 'value' in p;
}

// A transform function's result as an output: an output ({ tag }) as it is,
// one patch as that record, an array of patches as those records ([] drops).
export function output(result) {
  if (Array.isArray(result)) {
    for (const p of result) {
      if (!isPatch(p)) throw new TypeError('a record must be a patch (cvp.patch)');
    }
    return { tag: 'records', val: result };
  }
  if (isPatch(result)) return { tag: 'records', val: [result] };
  if (result && (result.tag === 'keep' || result.tag === 'records' || result.tag === 'error')) {
    return result;
  }
  if (result === undefined) {
    // A forgotten `return` must not pass records through unnoticed.
    throw new TypeError('the transform returned undefined: return cvp.keep() to pass the record on');
  }
  throw new TypeError('the transform returned neither an output nor patches');
}

// An exception's message (a thrown non-Error as text).
export function message(e) {
  return e instanceof Error ? e.message : String(e);
}

// Runs `transform(Event, Record)` on every input of the batch and returns one
// output per input, in order. An exception for one event becomes that event's
// `error` output ("NAME: message"; the host applies `on_error`) instead of
// trapping the instance.
export function process(batch, transform, name = '') {
  const prefix = name ? `${name}: ` : '';
  const out = new Array(batch.length);
  for (let i = 0; i < batch.length; i++) {
    try {
      out[i] = output(transform(new Event(batch[i].event), new Record(batch[i].record)));
    } catch (e) {
      out[i] = { tag: 'error', val: prefix + message(e) };
    }
  }
  return out;
}

// Runs init's body and returns its result; an exception becomes a thrown
// string, which componentize-js turns into init's `err` (a thrown Error
// object would trap the instance instead).
export function initialize(fn) {
  try {
    return fn();
  } catch (e) {
    throw message(e);
  }
}

// JSON text of `value`, like JSON.stringify without indentation, that also
// takes what the bindings give: a BigInt (timestamps) as a string, or with
// { bigint: 'number' } as an exact JSON integer (beyond 2^53, which a double
// cannot hold; a consumer parsing into doubles rounds it); a Uint8Array
// (header values, the `json` field) as its UTF-8 text.
export function toJson(value, { bigint = 'string' } = {}) {
  if (bigint !== 'string' && bigint !== 'number') {
    throw new Error(`toJson: bigint must be 'string' or 'number', got ${JSON.stringify(bigint)}`);
  }
  const render = (v) => {
    if (v !== null && typeof v === 'object' && typeof v.toJSON === 'function') v = v.toJSON();
    switch (typeof v) {
      case 'bigint':
        return bigint === 'number' ? v.toString() : `"${v}"`;
      case 'string':
      case 'boolean':
        return JSON.stringify(v);
      case 'number':
        return Number.isFinite(v) ? String(v) : 'null';
      case 'undefined':
      case 'function':
      case 'symbol':
        return undefined;
      default:
        break;
    }
    if (v === null) return 'null';
    if (v instanceof Uint8Array) return JSON.stringify(decoder.decode(v));
    if (Array.isArray(v)) return '[' + v.map((x) => render(x) ?? 'null').join(',') + ']';
    const parts = [];
    for (const [k, x] of Object.entries(v)) {
      const text = render(x);
      if (text !== undefined) parts.push(JSON.stringify(k) + ':' + text);
    }
    return '{' + parts.join(',') + '}';
  };
  return render(value);
}

// The record the host makes of `record` (the bindings' record or a Record)
// with `p` (a patch) applied, for unit tests. Changes apply in field order:
// topic, key, value, headers, setHeaders, removeHeaders.
export function apply(record, p) {
  const raw = record instanceof Record ? record.raw : record;
  const changed = (c, old) => (c.tag === 'set' ? c.val : c.tag === 'null' ? undefined : old);
  let headers = [...(p.headers ?? raw.headers)];
  for (const h of p.setHeaders) {
    // As the host does: every header of that key goes, the new one is last.
    headers = headers.filter((old) => old.key !== h.key);
    headers.push(h);
  }
  const remove = new Set(p.removeHeaders);
  return {
    topic: p.topic ?? raw.topic,
    key: changed(p.key, raw.key),
    value: changed(p.value, raw.value),
    headers: headers.filter((h) => !remove.has(h.key)),
  };
}
