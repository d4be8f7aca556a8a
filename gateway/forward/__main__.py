"""Stand-alone forwarder process: ``python -m gateway.forward --config forward.json --gateway-id gw1 --data-dir DIR``.

Reads JSON lines from standard input and answers on standard output (one JSON object a line):

    {"lane": "alert", "record": {...}}   submit a record (no answer; with "ticket": true -> {"ticket": n})
    {"op": "committed", "ticket": n}     -> {"committed": true|false}   (Forwarder.committed)
    {"op": "flush"}                      -> {"flushed": true}   once everything read so far is committed
    {"op": "status"}                     -> {"status": {...}}
    {"op": "drain", "timeout": 30}       -> {"drained": true|false}
    {"op": "stop"}                       stop (commit what is buffered) and exit

Cloud commands are printed as {"command": {...}}.  Prints {"ready": true, "recovery": {...}} once started.
Used by the fault tests (kill -9 of a real process) and handy to try a configuration by hand.
The config file is JSON or TOML holding the ``[forward]`` table (TOML: the ``forward`` table of it).
``--key-dir DIR`` encrypts the queue at rest under that key directory (made if missing; file sealer,
or ``--sealer tpm --tpm-tcti ...``), as ``[encryption]`` does for the gateway.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

from gateway.atrest import SEALERS, EncryptionSettings, open_keyring
from gateway.errors import GatewayError
from gateway.forward.config import ForwardConfig
from gateway.forward.errors import ForwardError
from gateway.forward.forwarder import Forwarder

_out_lock = threading.Lock()


def _emit(obj: dict[str, Any]) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
        sys.stdout.flush()


def _load_config(path: Path) -> ForwardConfig:
    text = path.read_text()
    data: dict[str, Any] = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    if "forward" in data and isinstance(data["forward"], dict):
        data = data["forward"]
    return ForwardConfig.from_dict(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.forward", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="JSON or TOML file with the [forward] table")
    parser.add_argument("--gateway-id", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--max-page-count", type=int, default=None, help="cap the queue file (simulates a small disk)")
    parser.add_argument("--key-dir", type=Path, default=None, help="encrypt the queue at rest (key directory)")
    parser.add_argument("--sealer", choices=SEALERS, default="file", help="what seals the data keys (with --key-dir)")
    parser.add_argument("--tpm-tcti", default="device:/dev/tpmrm0", help="the TPM's TCTI (with --sealer tpm)")
    args = parser.parse_args(argv)
    try:
        config = _load_config(args.config)
        cipher = None
        if args.key_dir is not None:
            settings = EncryptionSettings(key_dir=args.key_dir, sealer=args.sealer, tpm_tcti=args.tpm_tcti)
            cipher = open_keyring(settings, writer=True, create=True).cipher()
        forwarder = Forwarder(
            config,
            args.gateway_id,
            args.data_dir,
            on_command=lambda cmd: _emit({"command": cmd}),
            max_page_count=args.max_page_count,
            cipher=cipher,
        )
        forwarder.start()
    except (GatewayError, OSError, ValueError) as exc:
        print(f"gateway.forward: {exc}", file=sys.stderr)
        return 2
    _emit({"ready": True, "recovery": forwarder.recovery.as_dict() if forwarder.recovery else None})
    try:
        for raw in sys.stdin:
            line = raw.strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
                if not isinstance(msg, dict):
                    raise ValueError("expected a JSON object")
                op = msg.get("op")
                if op is None:
                    ticket = forwarder.submit(str(msg["lane"]), msg["record"])
                    if msg.get("ticket"):
                        _emit({"ticket": ticket})
                elif op == "committed":
                    _emit({"committed": forwarder.committed(int(msg["ticket"]))})
                elif op == "flush":
                    _emit({"flushed": forwarder.flush(float(msg.get("timeout", 30)))})
                elif op == "status":
                    _emit({"status": forwarder.status()})
                elif op == "drain":
                    _emit({"drained": forwarder.wait_drained(float(msg.get("timeout", 30)))})
                elif op == "stop":
                    break
                else:
                    raise ValueError(f"unknown op {op!r}: expected committed, flush, status, drain or stop")
            except (ValueError, KeyError, ForwardError) as exc:
                _emit({"error": f"{type(exc).__name__}: {exc}", "line": line[:200]})
    finally:
        forwarder.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
