"""The soak: real firmware on three simulated boards, the gateway as a real process forwarding
to a second Mosquitto, and repeated faults: gateway kill -9, device kill -9 (one of them while
offline, with frames in RAM), local broker restarts. Bounded in time (about a minute of faults).

At the end, per device and boot, every sequence number the device used is either stored by the
gateway or counted lost under a documented rule (LOSS_GONE, LOSS_UNSAVED, unanswered; see
docs/protocol.md, "Gap repair"); every stored reading is covered by a summary record that
reached the cloud (live or rebuilt after a crash) or by a summary_missing report; and no
forward sequence number was used under two epochs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.rawlog import read_all
from shared_protocol import DATA, LOSS_GONE, LOSS_UNSAVED
from tests.firmware.simdevice import SimDevice, base_config
from tests.forward.helpers import Collector, records
from tests.support.gateway_proc import GatewayProcess
from tests.support.waiting import wait_until
from tools.mosquitto import Mosquitto

DEVICES = ("pump-1", "pump-2", "fan-1")
NSAMPLES = 10  # samples per DATA frame (50 Hz, batch 10: 5 DATA frames/s per device)
ROUNDS = 15
PROGRESS = 12  # DATA frames of every device stored between two faults (about 2.4 s)


def _device_config(port: int, name: str) -> dict[str, Any]:
    return base_config(
        port,
        name,
        sample={"rate_hz": 50, "batch": NSAMPLES},
        queue={"ram_frames": 6, "flash_frames": 512, "block_bytes": 2048, "ack_timeout_s": 5, "seq_lease": 8},
        health_s=2,
    )


class Fleet:
    """The three boards: each a firmware process on its own flash directory."""

    def __init__(self, root: Path, port: int) -> None:
        self.dirs = {d: root / f"flash-{d}" for d in DEVICES}
        self.port = port
        self.procs: dict[str, SimDevice] = {}
        for d in DEVICES:
            self.start(d)

    def start(self, name: str) -> SimDevice:
        first = name not in self.procs
        dev = SimDevice(self.dirs[name], _device_config(self.port, name) if first else None)
        self.procs[name] = dev.start(EDGELINE_SIM_STOP_FILE=self.stop_file(name), EDGELINE_SIM_DRAIN_S=40)
        return dev

    def stop_file(self, name: str) -> Path:
        return self.dirs[name].parent / f"stop-{name}"

    def kill(self, name: str) -> None:
        self.procs[name].kill()

    def lease_stamp(self, name: str) -> float:
        p = self.dirs[name] / "seq.dat"
        return p.stat().st_mtime_ns if p.exists() else 0


def _progress(gw: GatewayProcess, frames: int) -> Callable[[], bool]:
    """True once every device has `frames` more frames stored than now."""
    base = {d: len(gw.stored(d)) for d in DEVICES}
    return lambda: all(len(gw.stored(d)) >= base[d] + frames for d in DEVICES)


def test_soak_with_gateway_device_and_broker_faults(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    local = mosquitto_factory()
    cloud = mosquitto_factory()
    collector = Collector(cloud)
    forward = (
        f'[forward]\nhost = "{cloud.host}"\nport = {cloud.port}\nbackoff_min_s = 0.05\nbackoff_max_s = 0.5\n'
        "keepalive_s = 5\n"
    )
    gw = GatewayProcess(
        tmp_path / "gw",
        local.port,
        extra_toml=(
            "[summary]\ninterval_s = 1\n"
            "[ingest]\ndata_qos = 0\n"  # what the broker drops while the gateway is away is repaired
            "[sequence]\nresend_after_s = 1\nresend_interval_s = 2\nresend_attempts = 30\n" + forward
        ),
    ).start()
    fleet = Fleet(tmp_path, local.port)
    faults: list[str] = []
    try:
        for rnd in range(ROUNDS):
            wait_until(_progress(gw, PROGRESS), 60, f"progress before round {rnd}")
            kind = rnd % 5
            name = DEVICES[(rnd // 5 + kind) % len(DEVICES)]
            if kind == 0:
                faults.append("gateway kill -9")
                gw.kill()
                gw.start()
            elif kind == 1:
                faults.append(f"{name} kill -9")
                fleet.kill(name)
                fleet.start(name)
            elif kind == 2:
                faults.append("broker restart")
                local.stop()
                local.start()
            elif kind == 3:
                faults.append("broker kill -9")
                local.kill()
                local.start()
            else:
                # A power cut while offline: frames still in RAM go with it.
                faults.append(f"broker down, {name} kill -9 while offline")
                local.stop()
                stamp = fleet.lease_stamp(name)
                wait_until(lambda n=name, s=stamp: fleet.lease_stamp(n) != s, 30, f"{name} numbering frames offline")
                fleet.kill(name)
                local.start()
                fleet.start(name)
        wait_until(_progress(gw, PROGRESS), 60, "progress after the last fault")
        # Repair settles while the devices are online: nothing wanted, every old boot closed.
        wait_until(lambda: _settled(gw), 90, "gap repair to settle")
        # Then every device stops cleanly: queue drained, exact end of its numbering on record.
        for name in DEVICES:
            fleet.stop_file(name).touch()
        for name in DEVICES:
            assert fleet.procs[name].wait(timeout=90) == 0, fleet.procs[name].text()
    finally:
        for name in DEVICES:
            fleet.kill(name)
    finals = {d: fleet.procs[d].stats() for d in DEVICES}
    # The summaries of the last readings reach the cloud (interval 1 s). Readings: DATA frames;
    # a device's last HEALTH may come after its last summary, which only devices with data get.
    last_rx = {d: max(r.received for r in read_all(gw.data / "rawlog.sqlite", d) if r.type == DATA) for d in DEVICES}
    try:
        collector.wait_for(lambda msgs: _summaries_reach(msgs, last_rx), timeout=60)
    except AssertionError as exc:
        ends = _summary_ends(collector.snapshot())
        raise AssertionError(f"{exc}: last summary end per device {dict(ends)}, last DATA received {last_rx}") from None
    finally:
        assert gw.stop() == 0
    report = _check_frames(gw, finals)
    report += _check_summaries(gw, collector.snapshot())
    report += _check_forward_seq(collector.snapshot())
    collector.close()
    print("\nsoak faults:", ", ".join(faults))
    print("\n".join(report))


def _settled(gw: GatewayProcess) -> bool:
    for d in DEVICES:
        cur, streams = gw.seq_state(d)
        if any(s[3] or (s[0] != cur and s[5] is None) for s in streams):
            return False
    return True


def _summary_ends(msgs: list[tuple[str, Any]]) -> dict[str, float]:
    ends: dict[str, float] = defaultdict(float)
    for env in records(msgs):
        rec = env["record"]
        if env["lane"] == "summary" and "device" in rec:
            ends[rec["device"]] = max(ends[rec["device"]], rec["end"])
    return ends


def _summaries_reach(msgs: list[tuple[str, Any]], last_rx: dict[str, float]) -> bool:
    ends = _summary_ends(msgs)
    return all(ends[d] >= last_rx[d] for d in DEVICES)


def _check_frames(gw: GatewayProcess, finals: dict[str, dict[str, Any]]) -> list[str]:
    """Every number of every boot: stored or counted lost (not both), none open."""
    out = []
    for d in DEVICES:
        _cur, streams = gw.seq_state(d)
        by_boot = {s[0]: s for s in streams}
        stored: dict[int, set[int]] = defaultdict(set)
        for boot, seq in gw.stored(d):
            stored[boot].add(seq)
        final_boot, final_seq = finals[d]["boot"], finals[d]["seq"]
        counted = {"stored": 0, "gone": 0, "unsaved": 0}
        for boot in range(1, final_boot + 1):
            assert boot in by_boot, (d, boot, sorted(by_boot))
            _b, _lo, _hi, missing, lost, end = by_boot[boot]
            if boot == final_boot:
                end = final_seq
            assert end is not None, (d, boot, "the end of an old boot was never learnt")
            assert missing == [], (d, boot, missing)
            lost_seqs = {s for lo, hi, _r in lost for s in range(lo, hi + 1)}
            reasons = {r for _lo, _hi, r in lost}
            assert reasons <= {LOSS_GONE, LOSS_UNSAVED}, (d, boot, lost)  # none given up on
            assert not stored[boot] & lost_seqs, (d, boot)
            hole = set(range(end)) - stored[boot] - lost_seqs
            assert not hole, (d, boot, end, sorted(hole)[:20])
            assert max(stored[boot] | lost_seqs, default=-1) < end, (d, boot, end)
            counted["stored"] += len(stored[boot])
            for lo, hi, r in lost:
                counted["gone" if r == LOSS_GONE else "unsaved"] += hi - lo + 1
        out.append(f"{d}: boots 1..{final_boot}, {counted}")
    return out


def _check_summaries(gw: GatewayProcess, msgs: list[tuple[str, Any]]) -> list[str]:
    """Every stored reading lies in a summary interval of its device that reached the cloud, or
    in a summary_missing span; summary counts cover the stored readings."""
    intervals: dict[str, list[tuple[float, float]]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    rebuilt = 0
    missing: list[tuple[float, float]] = []
    seen: set[tuple[str, float]] = set()
    for env in records(msgs):
        rec = env["record"]
        if env["lane"] == "summary" and "device" in rec:
            intervals[rec["device"]].append((rec["start"], rec["end"]))
            rebuilt += bool(rec.get("rebuilt"))
            if (rec["device"], rec["start"]) not in seen:  # a copy after a crash: counted once
                seen.add((rec["device"], rec["start"]))
                counts[rec["device"]] += rec.get("count", 0)
        elif rec.get("event") == "summary_missing":
            missing.append((rec["start"], rec["end"]))
    out = []
    tol = 1.0  # a batch received just before a flush may be processed just after it
    for d in DEVICES:
        rows = [r for r in read_all(gw.data / "rawlog.sqlite", d) if r.type == DATA]
        spans = sorted(intervals[d] + missing)
        uncovered = [r.received for r in rows if not any(a - tol <= r.received <= b + tol for a, b in spans)]
        assert not uncovered, (d, len(uncovered), uncovered[:5])
        # nsamples from each frame (u16 at offset 19): the last frame before a clean stop is partial
        readings = sum(int.from_bytes(r.payload[19:21], "little") for r in rows)
        assert counts[d] >= readings, (d, counts[d], readings)
        out.append(f"{d}: {len(rows)} DATA frames stored, {counts[d]} readings summarised")
    out.append(f"summaries rebuilt after crashes: {rebuilt}; spans reported missing: {len(missing)}")
    return out


def _check_forward_seq(msgs: list[tuple[str, Any]]) -> list[str]:
    epochs: dict[tuple[str, int], set[str]] = defaultdict(set)
    keys = set()
    for env in records(msgs):
        epochs[(env["lane"], env["seq"])].add(env["epoch"])
        keys.add(env["key"])
    reused = {k: v for k, v in epochs.items() if len(v) > 1}
    assert not reused, sorted(reused.items())[:5]
    per_lane: dict[str, int] = defaultdict(int)
    for lane, _seq in epochs:
        per_lane[lane] += 1
    return [f"forward: {len(keys)} distinct records, no seq under two epochs ({dict(per_lane)})"]
