#!/usr/bin/env bash
# Builds app.py into the WebAssembly component {{name_snake}}.wasm, next to
# this script. Safe to run repeatedly: the venv (.venv) and componentize-py
# are installed only when missing. Works from any directory.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if [ "$(.venv/bin/componentize-py --version 2>/dev/null || true)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
        "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

# componentize-py bundles every file on its Python path: give it app.py
# alone, not the venv, tests or docs beside it. Add your other modules here.
stage="$here/.build"
rm -rf "$stage"
mkdir -p "$stage"
cp app.py "$stage/"

(cd "$stage" && "$here/.venv/bin/componentize-py" -d "$here/wit" -w transform \
    componentize -p "$stage" app -o "$here/{{name_snake}}.wasm" >/dev/null)
echo "built $here/{{name_snake}}.wasm ($(du -h {{name_snake}}.wasm | cut -f1))"
