"""Broker outages and power loss: the offline queue keeps every frame within its
capacity, in order, replays flagged historical; beyond capacity the oldest frames
are dropped and the count is reported; frames on flash survive kill -9."""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

from shared_protocol import DATA, FLAG_HISTORICAL, HEALTH
from tests.firmware.gateway_stub import GatewayStub
from tests.firmware.simdevice import SimDevice, base_config
from tests.support.waiting import wait_until
from tools.mosquitto import Mosquitto


def _first_seen(gw: GatewayStub) -> list[tuple[int, int, int]]:
    """(boot, seq, flags) of DATA frames in order of first reception."""
    seen: set[tuple[int, int]] = set()
    out = []
    for r in gw.of(DATA):
        key = (r.frame.boot, r.frame.seq)
        if key not in seen:
            seen.add(key)
            out.append((r.frame.boot, r.frame.seq, r.frame.flags))
    return out


def test_broker_outage_loses_nothing_keeps_order_flags_replays(
    mosquitto_factory: Callable[..., Mosquitto], flash: Callable[[str], Path]
) -> None:
    # the gateway's session must outlive the broker restart, as a real gateway's does
    mosquitto = mosquitto_factory(extra_conf="queue_qos0_messages true\n")
    gateway = GatewayStub(mosquitto.host, mosquitto.port, persistent=True).start()
    cfg = base_config(
        mosquitto.port,
        sample={"rate_hz": 50, "batch": 10},
        queue={"ram_frames": 4, "flash_frames": 256, "block_bytes": 1024, "ack_timeout_s": 2},
    )
    dev = SimDevice(flash("dev1"), cfg).start(EDGELINE_SIM_DURATION_S=10, EDGELINE_SIM_DRAIN_S=10)
    try:
        gateway.wait_for(lambda g: len(g.of(DATA)) >= 5, what="first DATA frames")
        mosquitto.stop()
        time.sleep(3.0)  # pacing, not synchronisation: ~15 frames produced while the broker is away
        mosquitto.start()
        rc = dev.wait(timeout=60)
    finally:
        dev.kill()
        gateway.stop()
    assert rc == 0, dev.text()
    st = dev.stats()
    assert st["losses"] >= 1 and st["connects"] >= 2, st
    assert st["dropped"] == 0 and st["queue_depth"] == 0, st
    assert st["spilled"] > 0  # more than the 4 RAM slots were waiting: spilled to flash
    got = _first_seen(gateway)
    seqs = [s for _, s, _ in got]
    assert len(seqs) == st["frames"], (len(seqs), st)  # no DATA frame lost
    assert seqs == sorted(seqs), "DATA frames arrived out of order"
    # Every frame that takes a sequence number leaves in sequence order, the BIRTH of the new
    # session included (behind the replay): the gateway never sees a newer frame first.
    every: list[int] = []
    with gateway.lock:
        for r in gateway.frames:
            if r.frame.seq not in every and not r.retained:
                every.append(r.frame.seq)
    assert every == sorted(every), every
    replayed = [s for _, s, fl in got if fl & FLAG_HISTORICAL]
    assert len(replayed) >= 8, got
    # frames published live before the outage are not flagged
    assert not got[0][2] & FLAG_HISTORICAL


def test_beyond_capacity_oldest_dropped_and_reported(
    mosquitto: Mosquitto, gateway: GatewayStub, flash: Callable[[str], Path]
) -> None:
    cfg = base_config(
        mosquitto.port,
        sample={"rate_hz": 50, "batch": 10},
        queue={"ram_frames": 2, "flash_frames": 6, "block_bytes": 1024, "segment_blocks": 1},
        health_s=1,
    )
    dev = SimDevice(flash("dev1"), cfg)
    # simulated link loss from t=2 s to t=8 s (40 % of it fits the queue), clock 4x
    rc = dev.run(
        timeout=60,
        EDGELINE_SIM_SPEED=4,
        EDGELINE_SIM_LINK_DOWN="2-8",
        EDGELINE_SIM_DURATION_S=12,
        EDGELINE_SIM_DRAIN_S=8,
    )
    assert rc == 0, dev.text()
    st = dev.stats()
    assert st["dropped"] > 0 and st["queue_depth"] == 0, st
    got = _first_seen(gateway)
    seqs = [s for _, s, _ in got]
    assert seqs == sorted(seqs)
    # every frame was either delivered or counted as dropped; a frame can be both when
    # it was published just before the link broke and its ACK never came back
    assert st["frames"] <= len(seqs) + st["dropped"] <= st["frames"] + 4, (len(seqs), st)
    # the frames dropped are the oldest of the outage: one hole, then the newest kept
    holes = [(a, b) for a, b in pairwise(seqs) if b - a > 3]
    assert len(holes) == 1, holes
    assert holes[0][1] - holes[0][0] > st["dropped"] - 4
    # HEALTH reports the drop count
    assert max(r.frame.fields["dropped_frames"] for r in gateway.of(HEALTH)) == st["dropped"]


_MAGIC = 0xA5


def _records_on_flash(qdir: Path) -> list[tuple[int, int]]:
    """(boot, seq) of every intact record, read with an independent parser of the
    documented segment format (docs/firmware.md)."""
    out = []
    for seg in sorted(qdir.glob("q*.seg")):
        data = seg.read_bytes()
        for base in range(0, len(data), 1024):
            blk = data[base : base + 1024]
            pos = 0
            while pos + 7 <= len(blk) and blk[pos] == _MAGIC:
                n, crc = struct.unpack_from("<HI", blk, pos + 1)
                frame = blk[pos + 7 : pos + 7 + n]
                if len(frame) < n or zlib.crc32(frame) != crc:
                    break
                boot, seq = struct.unpack_from("<HI", frame, 3)
                out.append((boot, seq))
                pos += 7 + n
    return out


def test_kill9_with_frames_on_flash_replayed_and_trimmed_by_ack(
    mosquitto: Mosquitto, gateway: GatewayStub, flash: Callable[[str], Path]
) -> None:
    cfg = base_config(
        mosquitto.port,
        sample={"rate_hz": 100, "batch": 10},
        queue={"ram_frames": 2, "flash_frames": 512, "block_bytes": 1024, "segment_blocks": 2},
    )
    fl = flash("dev1")
    dev = SimDevice(fl, cfg)
    # phase 1: no network at all, simulated clock as fast as it goes: frames spill to flash
    dev.start(EDGELINE_SIM_SPEED="max", EDGELINE_SIM_LINK_DOWN="0-1000000")
    try:
        wait_until(lambda: len(dev.segments()) >= 3, timeout=30, what="3 queue segments on flash")
    finally:
        dev.kill()  # power loss
    assert len(dev.segments()) >= 3, dev.text()
    on_flash = _records_on_flash(fl / "queue")
    assert len(on_flash) >= 20
    assert {b for b, _ in on_flash} == {1}
    assert gateway.of(DATA) == []

    # phase 2: power back, network up, gateway ACKing
    rc = dev.run(timeout=60, EDGELINE_SIM_DURATION_S=2, EDGELINE_SIM_DRAIN_S=10)
    assert rc == 0, dev.text()
    st = dev.stats()
    assert st["boot"] == 2
    assert st["loaded"] >= len(on_flash)
    old = [(r.frame.seq, r.frame.flags) for r in gateway.of(DATA) if r.frame.boot == 1]
    assert sorted({s for s, _ in old}) == sorted(s for _, s in on_flash)
    assert all(f & FLAG_HISTORICAL for _, f in old)
    assert [s for s, _ in old][: len(on_flash)] == [s for _, s in on_flash]  # oldest first
    assert st["queue_depth"] == 0
    assert dev.segments() == []  # ACKed: every segment trimmed from flash
