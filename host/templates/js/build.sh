#!/usr/bin/env bash
# Builds transform.js into the WebAssembly component {{name_snake}}.wasm, next
# to this script. Safe to run repeatedly: npm install runs only when
# node_modules is missing. Works from any directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

if [ ! -d node_modules ]; then
    npm install --no-audit --no-fund
fi

# --disable all: a "pure" component that imports only the cvp-stream host
# interface, no WASI at all. The script gets no clocks (Date.now(), timers),
# no real randomness (Math.random() is deterministic) and no console: log
# through the host's `log`.
npx --no-install jco componentize transform.js \
    --wit wit \
    --world-name transform \
    --disable all \
    -o {{name_snake}}.wasm >/dev/null

echo "built $here/{{name_snake}}.wasm ($(du -h {{name_snake}}.wasm | cut -f1))"
