// testing/host.js: stands in for the host interface
// (cvp-stream:transform/host@0.2.0) when a transform runs natively in Node,
// for unit tests. register.js points the import at this file.

const state = { config: [], logs: [] };

// What the test gives as the transform's config: { key: value }; values
// that are not strings are JSON text, as the host gives lists and maps.
export function setConfig(config) {
  state.config = Object.entries(config).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]);
  state.logs = [];
}

// The [level, message] pairs logged since the last setConfig.
export function logs() {
  return state.logs;
}

export function config() {
  return state.config;
}

export function log(level, message) {
  state.logs.push([level, message]);
}
