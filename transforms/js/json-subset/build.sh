#!/usr/bin/env bash
# Builds transform.js into a WebAssembly component at
# <repo>/target/examples/json_subset.wasm. Safe to run repeatedly: npm ci runs
# only when node_modules is missing or older than package-lock.json.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
out="$repo/target/examples/json_subset.wasm"

cd "$here"

# npm ci writes node_modules/.package-lock.json; it is newer than
# package-lock.json unless the lockfile changed since the last install.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
    npm ci --no-audit --no-fund
fi

mkdir -p "$(dirname "$out")"

# --disable all: a "pure" component that imports only the cvp-stream:transform
# host interface, no WASI at all (no stdio, clocks, random, http). Date.now()
# and timers are unavailable and Math.random() is deterministic; this
# transform needs none of them.
npx --no-install jco componentize transform.js \
    --wit "$repo/wit" \
    --world-name transform \
    --disable all \
    -o "$out" >/dev/null

echo "built $out ($(wc -c <"$out") bytes) from $here/transform.js"
