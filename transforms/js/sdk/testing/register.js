// testing/register.js: `node --import .../testing/register.js --test` makes
// `import ... from 'cvp-stream:transform/host@0.2.0'` load testing/host.js,
// so a transform's module runs natively in Node's test runner.
import { register } from 'node:module';

register('./hooks.js', import.meta.url);
