#!/usr/bin/env bash
# Builds app.py, with cvp_transform.py, into the WebAssembly component
# {{name_snake}}.wasm, next to this script. Checks the syntax first (one
# `file:line: message` line and exit 1), since componentize-py takes ~20 s
# before it reports anything. Safe to run repeatedly: the venv (.venv) and
# componentize-py are installed only when missing. Works from any directory.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

# Your modules: add any file app.py imports.
sources=(app.py cvp_transform.py)

# compile() rather than `python -m py_compile`: the same check, without
# writing __pycache__ here.
python3 - "${sources[@]}" <<'PY'
import sys
for path in sys.argv[1:]:
    try:
        with open(path, "rb") as f:
            compile(f.read(), path, "exec")
    except SyntaxError as e:
        print(f"{e.filename}:{e.lineno}: {e.msg}", file=sys.stderr)
        sys.exit(1)
PY

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if [ "$(.venv/bin/componentize-py --version 2>/dev/null || true)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
        "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

# componentize-py bundles every file on its Python path: give it the sources
# alone, not the venv, tests or docs beside them.
stage="$here/.build"
rm -rf "$stage"
mkdir -p "$stage"
cp "${sources[@]}" "$stage/"

echo "componentize-py: building {{name_snake}}.wasm (takes ~20 s)..."
SECONDS=0
(cd "$stage" && "$here/.venv/bin/componentize-py" -d "$here/wit" -w transform \
    componentize -p "$stage" app -o "$here/{{name_snake}}.wasm" >/dev/null)
echo "built $here/{{name_snake}}.wasm ($(du -h {{name_snake}}.wasm | cut -f1), ${SECONDS} s)"
