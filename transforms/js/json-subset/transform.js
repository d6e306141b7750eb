// json-subset: a cvp-stream transform written in JavaScript.
//
// Rewrites each record's value to a compact JSON object holding a chosen
// subset of the event's fields, in the order they were chosen. Topic, key and
// headers pass through unchanged; every input gives exactly one record.
//
// Contract cvp-stream:transform@0.2.0: init returns the fields it reads (only
// those of the chosen ones that the host fills on request), and each output
// is a patch that sets the value. Built into a WebAssembly component with
// `jco componentize --bundle` (see build.sh), which bundles the helpers in
// ../sdk/cvp-transform.js. jco's mapping of the contract to JavaScript:
//   - the exported interface `transformer` is the exported object of that name;
//   - records are plain objects with camelCase fields (`eventType`,
//     `severityCode`, `lastUpdatedTime`; `input.record`);
//   - `s64` (timestamps) is a BigInt, `s32` a Number, enums are their
//     lower-case names, tuples are arrays, `list<u8>` is a Uint8Array,
//     `option<T>` is the value or undefined;
//   - variants are `{ tag, val }`: an output is `{ tag: 'keep' }`,
//     `{ tag: 'records', val: [patch, ...] }` or `{ tag: 'error', val: '...' }`;
//   - `init` returns `result<list<string>, string>`: returning the list is
//     `ok`; throwing a string is `err` (throwing an Error object traps), which
//     cvp.initialize takes care of.

import { log, config } from 'cvp-stream:transform/host@0.2.0';
import * as cvp from '../sdk/cvp-transform.js';

const DEFAULT_FIELDS = ['key', 'timestamp', 'severity', 'title', 'description', 'event-type', 'data'];

// Field name in the output JSON (camelCase, as in the default record value and
// in jco's bindings) -> renderer from the event (a cvp.Event) to JSON text.
// A string, `data` or `components` CVP left unset renders empty, as before
// contract 0.2 made them optional.
const RENDERERS = {
  key: (e) => JSON.stringify(e.key),
  timestamp: (e, ts) => ts(e.timestamp),
  operation: (e) => JSON.stringify(e.operation),
  severity: (e) => JSON.stringify(e.severity),
  severityCode: (e) => String(e.severityCode),
  title: (e) => JSON.stringify(e.title ?? ''),
  description: (e) => JSON.stringify(e.description ?? ''),
  eventType: (e) => JSON.stringify(e.eventType ?? ''),
  ruleId: (e) => JSON.stringify(e.ruleId ?? ''),
  data: (e) => pairsToObject(e.data ?? []),
  components: (e) =>
    '[' +
    (e.components ?? [])
      .map((c) => '{"kind":' + JSON.stringify(c.kind) + ',"fields":' + pairsToObject(c.fields) + '}')
      .join(',') +
    ']',
  lastUpdatedTime: (e, ts) => ts(e.lastUpdatedTime),
};

// The field the host fills only on request, for each output field that
// needs one (the others are always filled).
const READS = {
  title: 'title',
  description: 'description',
  eventType: 'event-type',
  ruleId: 'rule-id',
  data: 'data',
  components: 'components',
};

// `event-type` / `eventType` / `EVENT_TYPE` -> `eventType`.
function camel(name) {
  const lower = name.includes('-') || name.includes('_') ? name.toLowerCase() : name;
  return lower.replace(/[-_]([a-z])/g, (_, c) => c.toUpperCase());
}

// A list of [name, value] string pairs as a JSON object (text). Names are
// unique in practice (CVP sends maps); a repeated name keeps its last value.
function pairsToObject(pairs) {
  const seen = new Map();
  for (const [k, v] of pairs) seen.set(k, v);
  let out = '{';
  let first = true;
  for (const [k, v] of seen) {
    out += (first ? '' : ',') + JSON.stringify(k) + ':' + JSON.stringify(v);
    first = false;
  }
  return out + '}';
}

// Nanoseconds since the epoch (BigInt) as an exact JSON integer.
function tsNanos(t) {
  return t.toString();
}

const NS_PER_S = 1000000000n;

// Nanoseconds since the epoch (BigInt) as an RFC 3339 UTC string with
// nanosecond precision; 0 (unset) as null.
function tsIso(t) {
  if (t === 0n) return 'null';
  let secs = t / NS_PER_S;
  let nanos = t % NS_PER_S;
  if (nanos < 0n) {
    nanos += NS_PER_S;
    secs -= 1n;
  }
  const d = new Date(Number(secs) * 1000);
  if (Number.isNaN(d.getTime())) return t.toString(); // outside Date's range
  const base = d.toISOString().slice(0, 19); // YYYY-MM-DDTHH:MM:SS
  return '"' + base + '.' + nanos.toString().padStart(9, '0') + 'Z"';
}

const TIMESTAMP_FORMATS = { ns: tsNanos, iso: tsIso };

// Parsed in init, used by process.
let selected = null; // [[jsonKeyPrefix, renderer], ...]
let renderTs = tsNanos;

function parseFields(text) {
  const trimmed = text.trim();
  let names;
  if (trimmed.startsWith('[')) {
    try {
      names = JSON.parse(trimmed);
    } catch (e) {
      throw new Error(`fields: not a valid JSON list: ${e.message}`);
    }
    if (!Array.isArray(names) || names.some((n) => typeof n !== 'string')) {
      throw new Error(`fields: expected a list of field names, got ${trimmed}`);
    }
  } else {
    // A plain scalar: `fields: key,title` is accepted too.
    names = trimmed === '' ? [] : trimmed.split(',').map((s) => s.trim());
  }
  if (names.length === 0) {
    throw new Error('fields: the list is empty (omit the key to get the default fields)');
  }
  return names;
}

function configure(pairs) {
  const cfg = new Map(pairs);
  for (const key of cfg.keys()) {
    if (key !== 'fields' && key !== 'timestamps') {
      throw new Error(`unknown config key ${JSON.stringify(key)} (expected fields, timestamps)`);
    }
  }

  const format = (cfg.get('timestamps') ?? 'ns').trim().toLowerCase();
  if (!(format in TIMESTAMP_FORMATS)) {
    throw new Error(`timestamps: invalid value ${JSON.stringify(cfg.get('timestamps'))} (expected ns or iso)`);
  }

  const names = cfg.has('fields') ? parseFields(cfg.get('fields')) : DEFAULT_FIELDS;
  const chosen = [];
  const seen = new Set();
  for (const name of names) {
    const field = camel(name);
    if (!Object.hasOwn(RENDERERS, field)) {
      throw new Error(
        `fields: unknown field ${JSON.stringify(name)} (expected one of: ` +
          'key, timestamp, operation, severity, severity-code, title, description, ' +
          'event-type, rule-id, data, components, last-updated-time)',
      );
    }
    if (seen.has(field)) {
      throw new Error(`fields: ${JSON.stringify(name)} is listed twice`);
    }
    seen.add(field);
    chosen.push([JSON.stringify(field) + ':', RENDERERS[field]]);
  }
  const reads = [...seen].filter((f) => f in READS).map((f) => READS[f]);
  return { chosen, ts: TIMESTAMP_FORMATS[format], names: [...seen], reads };
}

function render(event) {
  let out = '{';
  for (let i = 0; i < selected.length; i++) {
    const [prefix, fn] = selected[i];
    out += (i === 0 ? '' : ',') + prefix + fn(event, renderTs);
  }
  return out + '}';
}

// The output for one event: the record with its value replaced.
function transform(event) {
  return cvp.patch({ value: render(event) });
}

export const transformer = {
  init() {
    return cvp.initialize(() => {
      const parsed = configure(config());
      selected = parsed.chosen;
      renderTs = parsed.ts;
      log('debug', `json-subset: fields ${parsed.names.join(', ')}`);
      return cvp.reads(...parsed.reads);
    });
  },

  process(batch) {
    return cvp.process(batch, transform);
  },
};
