#!/usr/bin/env bash
# TPM 2.0 support for the gateway (gateway/tpm.py): the cloud client key held in a TPM, and the
# at-rest data keys sealed by it.
#
#   tools/setup_tpm.sh          libtss2 (TPM software stack) with what building tpm2-pytss needs
#                               (libtss2-dev, pkg-config, gcc), then tpm2-pytss into .venv,
#                               pinned with its sha256 (requirements/tpm.txt); what a Pi owner runs
#   tools/setup_tpm.sh --test   the same, plus swtpm, the TPM simulator the tests run
#                               (tools/setup.sh --test calls this)
#
# apt-get runs only when something is missing (as root; otherwise it says what to install).
# Safe to run again: quick when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1
say() { printf 'setup_tpm: %s\n' "$*"; }

if [ ! -x .venv/bin/python ]; then
  echo "setup_tpm: error: .venv is missing: run tools/setup.sh first" >&2
  exit 1
fi

# --- the Debian packages ----------------------------------------------------------------
missing=()
pkg-config --exists tss2-esys 2>/dev/null || missing+=(libtss2-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
# Python's headers, for the C extension of tpm2-pytss (a pyenv or python.org build has them)
py_h="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h"
[ -f "$py_h" ] || missing+=(python3-dev)
if [ "$want_test" = 1 ] && ! command -v swtpm >/dev/null 2>&1; then
  missing+=(swtpm)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup_tpm: error: missing ${missing[*]}: install them (e.g. sudo apt-get install ${missing[*]}) and run again" >&2
    exit 1
  fi
fi

# --- tpm2-pytss, built against this machine's libtss2 -------------------------------------
pinned="$(sed -n 's/^tpm2-pytss==\([0-9.]*\).*/\1/p' requirements/tpm.txt)"
have="$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("tpm2-pytss"))' 2>/dev/null || true)"
if [ "$have" != "$pinned" ] || ! .venv/bin/python -c 'import tpm2_pytss' 2>/dev/null; then
  say "building tpm2-pytss $pinned against libtss2 $(pkg-config --modversion tss2-esys) (about a minute)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
    --no-binary tpm2-pytss -r requirements/tpm.txt
  .venv/bin/python -c 'import tpm2_pytss'
fi
say "ok (tpm2-pytss $pinned$([ "$want_test" = 1 ] && printf ', %s' "$(swtpm --version | sed "s/,.*//")"))"
