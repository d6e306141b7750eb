// testing/hooks.js: the module resolution hook register.js installs (it runs
// in Node's loader thread): the contract's host interface is testing/host.js.
const HOST = new URL('./host.js', import.meta.url).href;

export async function resolve(specifier, context, next) {
  if (specifier.startsWith('cvp-stream:transform/host@')) {
    return { url: HOST, shortCircuit: true };
  }
  return next(specifier, context);
}
