// {{name}}: a cvp-stream transform written in JavaScript.
//
// As generated, it passes every record on with a header
// `x-transform: {{name}}` added, and drops events less severe than the
// `min_severity` config key when one is given. Change `transform` below to
// make it do what you need.
//
// Built into a WebAssembly component by build.sh (`jco componentize`). How the
// contract (wit/transform.wit) looks from JavaScript:
//   - records are plain objects with camelCase fields (`eventType`,
//     `severityCode`, `lastUpdatedTime`; `input.record`);
//   - `s64` (timestamps) is a BigInt, `s32` a Number, enums are their
//     lower-case names (`'error'`), tuples are arrays, `list<u8>` is a
//     Uint8Array, `option<T>` is the value or undefined;
//   - an output is `{ tag: 'records', val: [record, ...] }` (an empty list
//     drops the input) or `{ tag: 'error', val: 'message' }`;
//   - `init` returns `result<_, string>`: returning is `ok`; throwing a
//     *string* is `err` with that string (throwing an Error object traps).

import { log, config } from 'cvp-stream:transform/host@0.1.0';

const NAME = '{{name}}';

// The WIT `severity` enum, least severe first.
const SEVERITIES = ['unspecified', 'debug', 'info', 'warning', 'error', 'critical'];

// Set by init, read by process: one instance of this module serves every call.
let minSeverity = null; // an index into SEVERITIES, or null to keep every event

const encoder = new TextEncoder();
const HEADER = { key: 'x-transform', value: encoder.encode(NAME) };

function parseMinSeverity(text) {
  const index = SEVERITIES.indexOf(text.trim().toLowerCase());
  if (index <= 0) {
    throw new Error(
      `min_severity: invalid value ${JSON.stringify(text)} (expected debug, info, warning, error or critical)`,
    );
  }
  return index;
}

// Whether the event is at least as severe as SEVERITIES[min]. A severity newer
// than this contract ('unspecified' with a non-zero code) counts as severe
// enough: better to pass on an alert nobody understands than to drop it.
function severityAtLeast(event, min) {
  if (event.severity === 'unspecified' && event.severityCode !== 0) return true;
  return SEVERITIES.indexOf(event.severity) >= min;
}

// Turns one event and the record produced for it so far into the records to
// produce: [record] to pass it on (changed or not), [] to drop it, several to
// fan out. Throw when this event cannot be transformed: the host applies the
// transform's `on_error` policy.
//
// `record` is { topic, key, value, headers }: key and value are Uint8Arrays
// (undefined for a Kafka null), headers a list of { key, value: Uint8Array }.
// The first transform in a chain gets the default record: the configured
// topic, key = event key, value = the event as JSON, no headers.
function transform(event, record) {
  // Filter.
  if (minSeverity !== null && !severityAtLeast(event, minSeverity)) {
    return [];
  }

  // Rewrite. Change topic, key or value here too, e.g.
  //   record.key = encoder.encode(event.title);
  // The event's fields: event.key, event.severity, event.title,
  // event.description, event.eventType, event.data (array of [name, value]).
  record.headers.push(HEADER);
  return [record];
}

export const transformer = {
  // Runs once before the first batch. config() is this transform's `config:`
  // map as [key, value] pairs: scalars as text, lists and maps as JSON text
  // (JSON.parse them). Throwing a string stops the host's start-up (and
  // `cvp-stream validate`) with it, so name the key and the value. Read your
  // own config keys here.
  init() {
    const cfg = new Map(config());
    try {
      minSeverity = cfg.has('min_severity') ? parseMinSeverity(cfg.get('min_severity')) : null;
    } catch (e) {
      // A thrown Error would trap the instance: throw its message instead.
      throw e && e.message ? e.message : String(e);
    }
    log(
      'debug',
      minSeverity === null
        ? `${NAME}: keeping every event`
        : `${NAME}: dropping events below ${SEVERITIES[minSeverity]}`,
    );
  },

  // Must return exactly one output per input, in the same order.
  process(batch) {
    return batch.map(({ event, record }) => {
      try {
        return { tag: 'records', val: transform(event, record) };
      } catch (e) {
        // One bad event must not cost the batch.
        return { tag: 'error', val: `${NAME}: ${e && e.message ? e.message : String(e)}` };
      }
    });
  },
};
