#!/usr/bin/env bash
# Create .venv-stubs: mypy with the official MicroPython port stubs, so the firmware's port and
# board layers are type-checked against the APIs the real ESP32 and RP2040 ports have
# (tests/firmware/test_stubs_typecheck.py). Both stub packages define `machine`, so each goes
# into its own folder. Also the CircuitPython stubs, for the CircuitPython port layer
# (tests/circuitpython/test_cp_typecheck.py): they are PEP 561 `*-stubs` packages, which mypy
# finds only in the site-packages of the interpreter given by --python-executable, so they go
# into a small venv of their own, .venv-stubs/circuitpython-env, with circuitpython_typing
# (the buffer types the stubs import; installed without its Blinka dependencies, which are
# CPython implementations of the same modules). Pinned, idempotent.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-stubs"
CP_ENV="$VENV/circuitpython-env"
PY="${PYTHON:-python3}"
MYPY_VERSION="2.4.1"
STUBS_VERSION="1.29.0.post1"
CP_STUBS_VERSION="10.3.1"
CP_TYPING_VERSION="1.13.0"
stamp="$VENV/.edgeline-stubs-$MYPY_VERSION-$STUBS_VERSION-cp$CP_STUBS_VERSION-$CP_TYPING_VERSION"

if [ -f "$stamp" ]; then
    echo "setup_stubs_env: ok (already there: mypy $MYPY_VERSION, port stubs $STUBS_VERSION, circuitpython-stubs $CP_STUBS_VERSION)"
    exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@"; }
pip_install "mypy==$MYPY_VERSION"
for port in esp32 rp2; do
    pip_install --upgrade --target "$VENV/$port" "micropython-$port-stubs==$STUBS_VERSION"
done
[ -x "$CP_ENV/bin/python" ] || "$VENV/bin/python" -m venv "$CP_ENV"
"$CP_ENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    "circuitpython-stubs==$CP_STUBS_VERSION" "adafruit-circuitpython-typing==$CP_TYPING_VERSION"
rm -f "$VENV"/.edgeline-stubs-*
touch "$stamp"
echo "setup_stubs_env: ok (mypy $MYPY_VERSION, micropython-esp32-stubs and -rp2-stubs $STUBS_VERSION, circuitpython-stubs $CP_STUBS_VERSION in ${CP_ENV#"$ROOT"/})"
