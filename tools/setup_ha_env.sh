#!/usr/bin/env bash
# Create .venv-ha: a pinned Home Assistant release whose MQTT integration validates the
# gateway's discovery payloads with Home Assistant's own schemas (DISCOVERY_SCHEMA of each
# platform, the discovery topic pattern, the abbreviations): tests/gateway/test_hadiscovery.py.
# homeassistant 2024.1.6 is the last release that runs on Python 3.11; its dependencies are
# pinned in requirements/ha-schema.txt (installed without resolving, so nothing moves).
# Idempotent.
#
#   bash tools/setup_ha_env.sh
#   PYTHON=/path/to/python3.11 bash tools/setup_ha_env.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-ha"
PY="${PYTHON:-python3}"
HA_VERSION="2024.1.6"
REQS="$ROOT/requirements/ha-schema.txt"
want="$(cat "$REQS" | sha256sum | cut -d' ' -f1)-$HA_VERSION"
stamp="$VENV/.edgeline-ha"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "setup_ha_env: ok (already there: homeassistant $HA_VERSION)"
    exit 0
fi
ver="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
case "$ver" in
3.11) ;;
*)
    echo "setup_ha_env: need Python 3.11 for homeassistant $HA_VERSION, $PY is $ver (set PYTHON=)" >&2
    exit 1
    ;;
esac
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary :all: "$@"; }
pip_install --no-deps -r "$REQS"
pip_install --no-deps "homeassistant==$HA_VERSION"
"$VENV/bin/python" -c 'import homeassistant.components.persistent_notification, homeassistant.components.mqtt.sensor'
echo "$want" >"$stamp"
echo "setup_ha_env: ok (homeassistant $HA_VERSION in ${VENV#"$ROOT"/})"
