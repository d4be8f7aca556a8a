#!/usr/bin/env bash
# The whole test suite: set-up (idempotent), then pytest (CPython and MicroPython unix-port
# tests, lint, type checks, firmware builds, quick benchmarks, the fleet demo's short run).
# Extra arguments go to pytest. Fails when any test fails or when no test ran.
set -uo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh --test || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "run_tests: error: no test was collected or run" >&2
  exit 1
fi
exit "$rc"
