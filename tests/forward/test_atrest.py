"""The forward queue encrypted at rest, with real processes: ``python -m gateway.forward --key-dir``,
``edgeline-gateway keys`` and a real cloud Mosquitto.  Records queued under one key, a rotation
taken up by the running forwarder, more under the new key, retire (refused while the forwarder
runs), kill -9 in the middle of the drain: every record arrives as it was submitted.  A body
altered on disk is counted and reported, its neighbours are delivered.  The data key sealed by a
real TPM (swtpm) instead of the key file."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.atrest import FILE_SEALER_KEY, FileSealer, key_name
from gateway.forward.queue import LANE_SHIFT, LANES, key_usage
from gateway.tpm import SEALED_MAGIC
from tests.forward.helpers import Collector, Runner, forward_config, records
from tests.support.mosquitto import Mosquitto
from tests.support.swtpm import Swtpm
from tests.support.upy import ROOT

MARKER = "ZQX-CONFIDENTIAL-READING"


def _toml(tmp: Path, cloud: Mosquitto, data: Path, keys: Path) -> Path:
    """The gateway configuration `edgeline-gateway keys` reads (the same queue file and key directory)."""
    path = tmp / "gateway.toml"
    path.write_text(
        f'[gateway]\nid = "gw7"\nsite = "s1"\ndata_dir = "{data}"\n\n'
        f'[forward]\nhost = "{cloud.host}"\nport = {cloud.port}\n\n'
        f'[encryption]\nenabled = true\nkey_dir = "{keys}"\n'
    )
    return path


def keys_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "gateway", "keys", *args[:1], "-c", str(config), *args[1:]]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)


def _on_disk(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal")) if p.exists())


def _delivered(messages: list[tuple[str, Any]]) -> dict[int, dict[str, Any]]:
    """n -> the record as the cloud received it (one per idempotency key; duplicates must be equal)."""
    by_key: dict[str, dict[str, Any]] = {}
    for r in records(messages):
        assert by_key.setdefault(str(r["key"]), r) == r  # a duplicate is the very same record
    return {int(r["record"]["n"]): r["record"] for r in by_key.values() if "n" in r["record"]}


def test_rotate_retire_and_kill_9_deliver_every_record_as_it_was(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    cloud = mosquitto_factory()
    collector = Collector(cloud)
    cloud.stop()
    data, keys = tmp_path / "data", tmp_path / "keys"
    db = data / "forward.db"
    config = _toml(tmp_path, cloud, data, keys)
    cfg = forward_config(cloud, drain_limit_messages_per_s=300.0, max_inflight=16)
    sent: dict[int, dict[str, Any]] = {}

    def submit(runner: Runner, first: int, n: int) -> None:
        items = [(LANES[i % 3], {"n": i, "note": MARKER, "pad": "x" * (i % 50)}) for i in range(first, first + n)]
        sent.update((rec["n"], rec) for _lane, rec in items)
        runner.submit_many(items)
        assert runner.request("flush", "flushed") is True

    fwd = Runner(tmp_path, cfg, "gw7", data, "--key-dir", str(keys))
    submit(fwd, 0, 300)
    first = int(fwd.request("status", "status")["encryption"]["key"], 16)
    assert set(key_usage(db)) == {first}

    rotated = keys_cli(config, "rotate")
    assert rotated.returncode == 0, rotated.stderr
    second = next(k for k in keys_cli_ids(config) if k != first)
    # The running forwarder takes the new key up within a second: records go on being queued
    # until the first one under it is in the file.
    deadline = time.monotonic() + 10
    while second not in key_usage(db):
        assert time.monotonic() < deadline, "the forwarder did not take the rotated key up"
        submit(fwd, len(sent), 1)
    submit(fwd, len(sent), 300)
    usage = key_usage(db)
    under_first = sum(usage[first])
    assert set(usage) == {first, second} and under_first >= 300 and under_first + sum(usage[second]) == len(sent)
    assert MARKER.encode() not in _on_disk(db)  # database and WAL, while the forwarder runs

    refused = keys_cli(config, "retire", key_name(first))
    assert refused.returncode == 2 and "stop it first" in refused.stderr, refused.stderr
    fwd.kill()  # kill -9 with everything queued

    retired = keys_cli(config, "retire", key_name(first))
    assert retired.returncode == 0, retired.stderr
    assert (
        f"{under_first} record(s) re-encrypted" in retired.stdout and f"key {key_name(first)} retired" in retired.stdout
    )
    assert set(key_usage(db)) == {second}
    assert not (keys / f"key-{key_name(first)}.sealed").exists()
    status = keys_cli(config, "status")
    assert status.returncode == 0 and key_name(first) not in status.stdout, status.stdout

    fwd = Runner(tmp_path, cfg, "gw7", data, "--key-dir", str(keys))
    cloud.start()
    collector.wait_for(lambda m: len(records(m)) >= 150, timeout=60)
    fwd.kill()  # kill -9 in the middle of the drain
    assert len(_delivered(collector.snapshot())) < len(sent), "the drain ended before the kill"

    fwd = Runner(tmp_path, forward_config(cloud), "gw7", data, "--key-dir", str(keys))
    try:
        assert fwd.request("drain", "drained", timeout=60) is True
        got = collector.wait_for(lambda m: len(_delivered(m)) >= len(sent), timeout=60)
    finally:
        fwd.stop()
        collector.close()
    assert _delivered(got) == sent  # every record, exactly as submitted


def keys_cli_ids(config: Path) -> list[int]:
    out = keys_cli(config, "status")
    assert out.returncode == 0, out.stderr
    return [int(line.split()[0], 16) for line in out.stdout.splitlines()[2:] if line.split()[1] in ("active", "old")]


def test_a_body_altered_on_disk_is_counted_and_reported_and_its_neighbours_delivered(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    cloud = mosquitto_factory()
    collector = Collector(cloud)
    cloud.stop()
    data, keys = tmp_path / "data", tmp_path / "keys"
    db = data / "forward.db"
    fwd = Runner(tmp_path, forward_config(cloud), "gw8", data, "--key-dir", str(keys))
    fwd.submit_many([("summary", {"n": i, "note": MARKER}) for i in range(20)])
    assert fwd.request("flush", "flushed") is True
    fwd.stop()  # a clean stop: everything is in the database file (the WAL is checkpointed)

    # One byte of one body flipped in the file itself, as an SD card edited elsewhere.
    conn = sqlite3.connect(db)
    rid, seq, body = conn.execute("SELECT id, seq, body FROM records ORDER BY id LIMIT 1 OFFSET 7").fetchone()
    conn.close()
    image = db.read_bytes()
    at = image.find(body)
    assert at > 0 and image.count(body) == 1 and rid >> LANE_SHIFT == LANES.index("summary")
    with open(db, "r+b") as f:
        f.seek(at + len(body) // 2)
        f.write(bytes([image[at + len(body) // 2] ^ 0x04]))

    cloud.start()
    fwd = Runner(tmp_path, forward_config(cloud), "gw8", data, "--key-dir", str(keys))
    try:
        assert fwd.request("drain", "drained", timeout=60) is True
        got = collector.wait_for(
            lambda m: len(_delivered(m)) >= 19 and any(r["record"].get("type") == "loss_report" for r in records(m)),
            timeout=60,
        )
        status = fwd.request("status", "status")
        fwd.send({"op": "stop"})
        assert fwd.proc.wait(30) == 0 and fwd.proc.stderr is not None
        stderr = fwd.proc.stderr.read()
    finally:
        fwd.stop()
        collector.close()
    assert sorted(_delivered(got)) == [n for n in range(20) if n != 7]
    report = next(r["record"] for r in records(got) if r["record"].get("type") == "loss_report")
    assert report["reason"] == "unreadable_on_disk" and report["unreadable_seq_ranges"] == {"summary": [[seq, seq]]}
    assert status["losses"] == {"unreadable.summary": 1} and status["encryption"]["unreadable"] == 1
    # Logged (what, where) without key material.
    assert f"1 summary record(s) unreadable, dropped (seq {seq})" in stderr, stderr
    sealer = FileSealer(keys / FILE_SEALER_KEY)
    data_key = sealer.unseal(next(keys.glob("key-*.sealed")).read_bytes())
    assert data_key.hex() not in stderr and (keys / FILE_SEALER_KEY).read_bytes().hex() not in stderr


def test_queue_sealed_by_a_real_tpm_survives_kill_9(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    """``--sealer tpm`` (``[encryption] sealer = "tpm"``): the data key sealed by a real TPM (swtpm)."""
    cloud = mosquitto_factory()
    collector = Collector(cloud)
    cloud.stop()
    data, keys = tmp_path / "data", tmp_path / "keys"
    with Swtpm(tmp_path / "tpm") as tpm:
        tpm_args = ("--key-dir", str(keys), "--sealer", "tpm", "--tpm-tcti", tpm.tcti)
        fwd = Runner(tmp_path, forward_config(cloud), "gw9", data, *tpm_args)
        fwd.submit_many([("alert", {"n": i, "note": MARKER}) for i in range(50)])
        assert fwd.request("flush", "flushed") is True
        fwd.kill()
        sealed = list(keys.glob("key-*.sealed"))
        assert len(sealed) == 1 and sealed[0].read_bytes().startswith(SEALED_MAGIC)
        assert not (keys / FILE_SEALER_KEY).exists()
        assert MARKER.encode() not in _on_disk(data / "forward.db")
        cloud.start()
        fwd = Runner(tmp_path, forward_config(cloud), "gw9", data, *tpm_args)
        try:
            assert fwd.request("drain", "drained", timeout=60) is True
            got = collector.wait_for(lambda m: len(_delivered(m)) >= 50, timeout=60)
        finally:
            fwd.stop()
            collector.close()
    assert _delivered(got) == {i: {"n": i, "note": MARKER} for i in range(50)}
