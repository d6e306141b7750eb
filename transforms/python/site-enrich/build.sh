#!/usr/bin/env bash
# Builds the site-enrich Python transform into a WebAssembly component:
#   <repo>/target/examples/site_enrich.wasm
# Idempotent: the venv and componentize-py are installed only when missing.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
venv="$repo/target/py-venv"
out="$repo/target/examples/site_enrich.wasm"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if [ "$("$venv/bin/componentize-py" --version 2>/dev/null || true)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

# componentize-py bundles every file of its Python path: give it app.py alone,
# not the tests and docs beside it.
stage="$repo/target/py-build/site-enrich"
rm -rf "$stage"
mkdir -p "$stage" "$(dirname "$out")"
cp "$here/app.py" "$stage/"
cd "$stage"
"$venv/bin/componentize-py" -d "$repo/wit" -w transform componentize -p "$stage" app -o "$out" >/dev/null
echo "built $out ($(du -h "$out" | cut -f1), componentize-py $COMPONENTIZE_PY_VERSION)"
