// {{name}}: a cvp-stream transform written in JavaScript.
//
// As generated, it passes every record on with a header
// `x-transform: {{name}}` added, and drops events less severe than the
// `min_severity` config key when one is given. Change `transform` below (and
// READS) to make it do what you need.
//
// Built into a WebAssembly component by build.sh (`jco componentize
// --bundle`), for the contract in wit/transform.wit
// (cvp-stream:transform@0.2.0). The helpers in cvp-transform.js (`cvp`
// below) are bundled with it; its comments say what each does. How the
// contract looks from JavaScript:
//   - records are plain objects with camelCase fields (`eventType`,
//     `severityCode`, `lastUpdatedTime`);
//   - `s64` (timestamps) is a BigInt (cvp.toJson renders it; JSON.stringify
//     throws), `s32` a Number, enums are their lower-case names ('error'),
//     tuples are arrays, `list<u8>` is a Uint8Array, `option<T>` is the value
//     or undefined;
//   - variants are `{ tag, val }`; the cvp helpers build the outputs.

import { log, config } from 'cvp-stream:transform/host@0.2.0';
import * as cvp from './cvp-transform.js';

const NAME = '{{name}}';

// The fields `transform` reads. The host fills only these, so a transform
// pays only for what it uses; reading any other throws cvp.UndeclaredField,
// naming it. Always there without asking: key, timestamp, operation,
// severity, severityCode, lastUpdatedTime, deleteTime, and the record's topic
// and key. To ask for: 'title', 'description', 'event-type', 'rule-id',
// 'data' (or 'data.deviceId', ... one entry each), 'components', 'metadata',
// 'json' (the whole event as protobuf JSON), 'devices' and 'interfaces'
// (CloudVision's inventory records, with tags), 'link', and the record's
// 'value' and 'headers'.
const READS = [];

// The WIT `severity` enum, least severe first.
const SEVERITIES = ['unspecified', 'debug', 'info', 'warning', 'error', 'critical'];

// Set by init, read by process: one instance of this module serves every call.
let minSeverity = null; // a name from SEVERITIES, or null to keep every event

const TAGGED = cvp.setHeader('x-transform', NAME); // built once, shared

function parseMinSeverity(text) {
  const name = text.trim().toLowerCase();
  if (SEVERITIES.indexOf(name) <= 0) {
    throw new Error(
      `min_severity: invalid value ${JSON.stringify(text)} (expected debug, info, warning, error or critical)`,
    );
  }
  return name;
}

// What to produce for one event (a cvp.Event) and its record so far (a
// cvp.Record: topic, key; value and headers when declared). Return
//   cvp.keep()                 the record unchanged
//   cvp.drop()                 no record
//   cvp.patch({ topic, key, value, setHeaders: { name: value } })
//                              the record with changes (strings or
//                              Uint8Arrays; null is a Kafka null)
//   [patch, patch, ...]        several records (fan out), e.g.
//                              [cvp.patch(), cvp.copyTo('audit')]
// Throw when this event cannot be transformed: the host applies the
// transform's `on_error` policy. Lookups: event.title,
// event.dataField('deviceId'), event.deviceId(), event.device(id).hostname,
// cvp.tag(event.device(id), 'site').
function transform(event, record) {
  // Filter.
  if (minSeverity !== null && !event.severityAtLeast(minSeverity)) {
    return cvp.drop();
  }

  // Rewrite, e.g. (after adding 'title' to READS):
  //   return cvp.patch({ key: event.title, setHeaders: { 'x-transform': NAME } });
  return TAGGED;
}

export const transformer = {
  // Runs once before the first batch; returns the fields it reads. config()
  // is this transform's `config:` map as [key, value] pairs: scalars as text,
  // lists and maps as JSON text (JSON.parse them). An exception stops the
  // host's start-up (and `cvp-stream validate`) with its message, so name the
  // key and the value. Read your own config keys here.
  init() {
    return cvp.initialize(() => {
      const cfg = new Map(config());
      minSeverity = cfg.has('min_severity') ? parseMinSeverity(cfg.get('min_severity')) : null;
      log(
        'debug',
        minSeverity === null ? `${NAME}: keeping every event` : `${NAME}: dropping events below ${minSeverity}`,
      );
      return cvp.reads(...READS);
    });
  },

  // One output per input, in order; an exception for one event is that
  // event's error, not the batch's.
  process(batch) {
    return cvp.process(batch, transform, NAME);
  },
};
