#!/usr/bin/env bash
# Builds transform.js, with cvp-transform.js bundled, into the WebAssembly
# component {{name_snake}}.wasm, next to this script. Checks the syntax first
# (one `file:line: message` line and exit 1), since componentize takes ~20 s
# before it reports anything. Safe to run repeatedly: npm install runs only
# when node_modules is missing. Works from any directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

# node --check prints the file and line, the source line, a caret and the
# error over several lines: keep `file:line: message`.
for source in transform.js cvp-transform.js; do
    if ! report=$(node --check "$source" 2>&1); then
        where=$(printf '%s\n' "$report" | head -n 1)
        what=$(printf '%s\n' "$report" | grep -m 1 -E '^[A-Za-z]*Error' || printf '%s\n' "$report" | tail -n 1)
        echo "$where: $what" >&2
        exit 1
    fi
done

if [ ! -d node_modules ]; then
    npm install --no-audit --no-fund
fi

# --bundle: componentize-js takes one ES module, so jco's bundler inlines the
# imports of cvp-transform.js (and any module of yours); bundle.config.mjs
# leaves the contract's own imports (cvp-stream:transform/...) alone.
# --disable all: a "pure" component that imports only the cvp-stream host
# interface, no WASI at all. The script gets no clocks (Date.now(), timers),
# no real randomness (Math.random() is deterministic) and no console: log
# through the host's `log`.
echo "jco componentize: building {{name_snake}}.wasm (takes ~20 s)..."
SECONDS=0
npx --no-install jco componentize transform.js \
    --bundle --bundle-config bundle.config.mjs \
    --wit wit \
    --world-name transform \
    --disable all \
    -o {{name_snake}}.wasm >/dev/null

echo "built $here/{{name_snake}}.wasm ($(du -h {{name_snake}}.wasm | cut -f1), ${SECONDS} s)"
