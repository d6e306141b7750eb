#!/usr/bin/env bash
# Builds transform.js, with the helpers in ../sdk/cvp-transform.js bundled,
# into a WebAssembly component at <repo>/target/examples/json_subset.wasm.
# Checks the syntax first (one `file:line: message` line and exit 1), since
# componentize takes ~20 s before it reports anything. Safe to run
# repeatedly: npm ci runs only when node_modules is missing or older than
# package-lock.json.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
sdk="$here/../sdk"
out="$repo/target/examples/json_subset.wasm"

# node --check prints the file and line, the source line, a caret and the
# error over several lines: keep `file:line: message`.
for source in "$here/transform.js" "$sdk/cvp-transform.js"; do
    if ! report=$(node --check "$source" 2>&1); then
        where=$(printf '%s\n' "$report" | head -n 1)
        what=$(printf '%s\n' "$report" | grep -m 1 -E '^[A-Za-z]*Error' || printf '%s\n' "$report" | tail -n 1)
        echo "$where: $what" >&2
        exit 1
    fi
done

cd "$here"

# npm ci writes node_modules/.package-lock.json; it is newer than
# package-lock.json unless the lockfile changed since the last install.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
    npm ci --no-audit --no-fund
fi

mkdir -p "$(dirname "$out")"

# --bundle: componentize-js takes one ES module, so jco's bundler (Rolldown)
# inlines the import of ../sdk/cvp-transform.js; bundle.config.mjs leaves the
# contract's own imports alone.
# --disable all: a "pure" component that imports only the cvp-stream:transform
# host interface, no WASI at all (no stdio, clocks, random, http). Date.now()
# and timers are unavailable and Math.random() is deterministic; this
# transform needs none of them.
echo "jco componentize: building $(basename "$out") (takes ~20 s)..."
SECONDS=0
npx --no-install jco componentize transform.js \
    --bundle --bundle-config "$sdk/bundle.config.mjs" \
    --wit "$repo/wit" \
    --world-name transform \
    --disable all \
    -o "$out" >/dev/null

echo "built $out ($(wc -c <"$out") bytes, ${SECONDS} s) from $here/transform.js"
