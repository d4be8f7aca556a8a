#!/usr/bin/env bash
# Create .venv-train: TensorFlow for training (edgeline-train, python -m tools.train), with the
# pinned packages of requirements/train.txt (numpy and LiteRT at the versions of
# requirements/lock.txt, so a model is scored the same way as in .venv) and the project itself
# (editable, no dependencies). Idempotent: a stamp records what was installed.
#
#   bash tools/setup_train_env.sh            # creates/refreshes <repo>/.venv-train
#   EDGELINE_TRAIN_VENV=/tmp/v bash tools/setup_train_env.sh   # elsewhere
#   PYTHON=/path/to/python3.11 bash tools/setup_train_env.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EDGELINE_TRAIN_VENV:-$ROOT/.venv-train}"
PY="${PYTHON:-python3.11}"

if ! command -v "$PY" >/dev/null 2>&1; then
    echo "setup_train_env: $PY not found; set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
ver="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$ver" != "3.11" ]; then
    echo "setup_train_env: requirements/train.txt is pinned for Python 3.11, $PY is $ver" >&2
    exit 1
fi

stamp="$VENV/.edgeline-installed"
want=$(cat "$ROOT/requirements/train.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "setup_train_env: .venv-train is up to date ($VENV)"
    exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
echo "setup_train_env: installing requirements/train.txt into .venv-train (TensorFlow: a few minutes)"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$ROOT/requirements/train.txt"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e "$ROOT"
"$VENV/bin/python" - <<'PY'
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy
import tensorflow

print("setup_train_env: ok (tensorflow %s, numpy %s)" % (tensorflow.__version__, numpy.__version__))
PY
echo "$want" >"$stamp"
