#!/usr/bin/env bash
# Builds the site-enrich Python transform into a WebAssembly component:
#   <repo>/target/examples/site_enrich.wasm
# Checks the syntax first (one `file:line: message` line and exit 1), since
# componentize-py takes ~20 s before it reports anything. Idempotent: the venv
# and componentize-py are installed only when missing.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
venv="$repo/target/py-venv"
out="$repo/target/examples/site_enrich.wasm"
sources=("$here/app.py" "$here/../sdk/cvp_transform.py")

# compile() rather than `python -m py_compile`: the same check, without
# writing __pycache__ into the source folder.
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

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if [ "$("$venv/bin/componentize-py" --version 2>/dev/null || true)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

# componentize-py bundles every file of its Python path: give it the app and
# the SDK helpers alone, not the tests and docs beside them.
stage="$repo/target/py-build/site-enrich"
rm -rf "$stage"
mkdir -p "$stage" "$(dirname "$out")"
cp "${sources[@]}" "$stage/"
cd "$stage"
echo "componentize-py: building $(basename "$out") (takes ~20 s)..."
SECONDS=0
"$venv/bin/componentize-py" -d "$repo/wit" -w transform componentize -p "$stage" app -o "$out" >/dev/null
echo "built $out ($(du -h "$out" | cut -f1), ${SECONDS} s, componentize-py $COMPONENTIZE_PY_VERSION)"
