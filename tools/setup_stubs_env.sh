#!/usr/bin/env bash
# Create .venv-stubs: mypy with the official MicroPython port stubs, so the firmware's port and
# board layers are type-checked against the APIs the real ESP32 and RP2040 ports have
# (tests/firmware/test_stubs_typecheck.py). Both stub packages define `machine`, so each goes
# into its own folder. Pinned, idempotent.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-stubs"
PY="${PYTHON:-python3}"
MYPY_VERSION="2.4.1"
STUBS_VERSION="1.29.0.post1"
stamp="$VENV/.edgeline-stubs-$MYPY_VERSION-$STUBS_VERSION"

if [ -f "$stamp" ]; then
    echo "setup_stubs_env: ok (already there: mypy $MYPY_VERSION, port stubs $STUBS_VERSION)"
    exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@"; }
pip_install "mypy==$MYPY_VERSION"
for port in esp32 rp2; do
    pip_install --upgrade --target "$VENV/$port" "micropython-$port-stubs==$STUBS_VERSION"
done
touch "$stamp"
echo "setup_stubs_env: ok (mypy $MYPY_VERSION, micropython-esp32-stubs and -rp2-stubs $STUBS_VERSION)"
