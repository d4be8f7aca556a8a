#!/usr/bin/env bash
# Create .venv-tflite: the second inference backend (tflite-runtime 2.14, numpy < 2) used by
# tests/inference/test_tflite_runtime_backend.py to check gateway.inference against the
# legacy interpreter that older Raspberry Pi OS images ship. Pinned, idempotent.
#
#   bash tools/setup_tflite_env.sh            # creates/refreshes <repo>/.venv-tflite
#   PYTHON=/path/to/python3.11 bash tools/setup_tflite_env.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EDGELINE_TFLITE_VENV:-$ROOT/.venv-tflite}"
PY="${PYTHON:-python3.11}"

# tflite-runtime 2.14.0 publishes wheels for CPython 3.8-3.11 only.
if ! command -v "$PY" >/dev/null 2>&1; then
    echo "setup_tflite_env: $PY not found; set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
ver="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$ver" != "3.11" ]; then
    echo "setup_tflite_env: need Python 3.11 for tflite-runtime 2.14.0, $PY is $ver" >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
elif "$VENV/bin/python" - >/dev/null 2>&1 <<'PY'
import numpy, tflite_runtime
raise SystemExit(0 if (tflite_runtime.__version__, numpy.__version__) == ("2.14.0", "1.26.4") else 1)
PY
then
    echo "setup_tflite_env: ok (already there: tflite-runtime 2.14.0, numpy 1.26.4)"
    exit 0
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "numpy==1.26.4" "tflite-runtime==2.14.0"
"$VENV/bin/python" - <<'PY'
import numpy
import tflite_runtime
from tflite_runtime.interpreter import Interpreter  # noqa: F401

print("setup_tflite_env: ok (tflite-runtime %s, numpy %s)" % (tflite_runtime.__version__, numpy.__version__))
PY
