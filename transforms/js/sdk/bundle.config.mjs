// bundle.config.mjs: the Rolldown options `jco componentize --bundle` merges
// into its own when it bundles a transform with cvp-transform.js.
// The contract's interfaces (`cvp-stream:transform/host@0.2.0`) are provided
// by the component model, not by a file: mark them external, which the
// bundler would otherwise do anyway after a warning per import.
export default { external: [/^cvp-stream:/] };
