"""Nothing lost silently, nothing spoofed into the truth: frame order within a batch, gap
repair (CMD_RESEND / LOSS), absurd sequence jumps and unknown ids, on plain data.

The pipeline runs in-process with a fake clock; the device side is tests/support/simdevice.py.
The same guarantees with the real firmware and a real broker: tests/firmware/test_fw_repair.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.ingest import RawFrame
from gateway.pipeline import Gateway
from gateway.rawlog import read_all
from shared_protocol import CMD_RESEND, LOSS_GONE, LOSS_UNSAVED, LOSS_UNUSED
from shared_protocol.decode import decode
from tests.gateway.doubles import Published
from tests.gateway.test_pipeline import T0, acked, make_gateway
from tests.support.simdevice import SimDevice, device_of, historical


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def rx(dev: SimDevice, kind: str, payload: bytes, t: float) -> RawFrame:
    return RawFrame(dev.topic(kind), payload, t)


def resends(pub: Published, device: str) -> list[list[tuple[int, int, int]]]:
    out = []
    for topic, payload, _qos in pub.kind("cmd"):
        f = decode(payload)
        if device_of(topic) == device and f.fields["op"] == CMD_RESEND:
            out.append([tuple(r) for r in f.fields["ranges"]])
    return out


def stored(gw: Gateway, device: str) -> set[int]:
    return {r.seq for r in read_all(gw.rawlog.path, device)}


def test_a_health_frame_in_a_backlog_does_not_make_earlier_data_late(tmp_path: Path) -> None:
    """A reconnect replays DATA 2..6, HEALTH 7, DATA 8..11 in one batch: all in order, all scored."""
    gw, pub, _fwd = make_gateway(tmp_path)
    dev = SimDevice("pump-1")
    gw.process([rx(dev, "birth", dev.birth(), T0)])
    first = [dev.data() for _ in range(5)]
    health = dev.health()
    rest = [dev.data() for _ in range(4)]
    # The broker hands the frames over in publish order; the batch holds them all.
    batch = [rx(dev, "data", historical(f), T0 + 1) for f in first]
    batch.append(rx(dev, "health", health, T0 + 1))
    batch += [rx(dev, "data", f, T0 + 1) for f in rest]
    gw.process(batch)
    c = gw.sequence.counters["pump-1"]
    assert (c.gaps, c.recovered, c.duplicates) == (0, 0, 0)  # no false gap, nothing "late"
    w = gw.pipeline_windows("pump-1")
    assert w["late_frames"] == 0 and w["gaps"] == 0
    assert w["samples"] == 9 * 32
    assert acked(pub, "pump-1") == {(1, s) for s in range(1, 12)}


def test_missing_frames_are_asked_for_and_a_loss_answer_closes_the_gap(tmp_path: Path) -> None:
    clock = Clock()
    gw, pub, fwd = make_gateway(tmp_path, clock=clock)
    dev = SimDevice("pump-1")
    gw.process([rx(dev, "birth", dev.birth(), clock.t), rx(dev, "data", dev.data(), clock.t)])  # seq 1, 2
    lost = [dev.data() for _ in range(3)]  # seq 3, 4, 5 never reach the gateway
    gw.process([rx(dev, "data", dev.data(), clock.t)])  # seq 6: a gap 3..5
    assert gw.sequence.missing("pump-1", 1) == [(3, 5)]
    gw.tick()
    assert resends(pub, "pump-1") == []  # frames in flight get a chance first
    clock.t += 5.0
    gw.tick()
    assert resends(pub, "pump-1") == [[(1, 3, 5)]]
    clock.t += 1.0
    gw.tick()
    assert len(resends(pub, "pump-1")) == 1  # not again before resend_interval_s
    # The device still holds 3 and 5 (sent again, historical) and dropped 4 (queue full).
    answer = [rx(dev, "data", historical(lost[0]), clock.t), rx(dev, "data", historical(lost[2]), clock.t)]
    answer.append(rx(dev, "loss", dev.loss([(1, 4, 4, LOSS_GONE)]), clock.t))
    gw.process(answer)
    assert gw.sequence.missing("pump-1", 1) == []
    assert gw.sequence.lost("pump-1", 1) == [(4, 4, LOSS_GONE)]
    c = gw.sequence.counters["pump-1"]
    assert (c.lost_gone, c.recovered) == (1, 2)
    assert stored(gw, "pump-1") == {1, 2, 3, 5, 6}
    assert ("registry", "loss") in [(lane, r.get("event")) for lane, r in fwd]
    clock.t += 20
    gw.tick()
    assert len(resends(pub, "pump-1")) == 1  # nothing wanted any more
    gw.close()
    # A restarted gateway still knows what was lost (state committed with the raw log).
    gw2, _pub2, _ = make_gateway(tmp_path, clock=clock)
    assert gw2.sequence.lost("pump-1", 1) == [(4, 4, LOSS_GONE)]
    assert gw2.sequence.counters["pump-1"].lost_gone == 1
    gw2.close()


def test_a_device_that_never_answers_is_given_up_on_and_counted(tmp_path: Path) -> None:
    clock = Clock()
    gw, pub, fwd = make_gateway(tmp_path, clock=clock, extra={"sequence": {"resend_attempts": 3}})
    dev = SimDevice("pump-1")
    gw.process([rx(dev, "birth", dev.birth(), clock.t)])
    dev.skip(2)
    for _ in range(12):  # keeps publishing (online), never answers CMD_RESEND
        clock.t += 5.0
        gw.process([rx(dev, "data", dev.data(), clock.t)])
        gw.tick()
    assert len(resends(pub, "pump-1")) == 3
    c = gw.sequence.counters["pump-1"]
    assert c.lost_unanswered == 2 and gw.sequence.missing("pump-1", 1) == []
    assert any(r.get("event") == "loss" and r["lost"] == {"unanswered": 2} for _lane, r in fwd)
    gw.close()


def test_a_new_boot_asks_where_the_old_one_ended(tmp_path: Path) -> None:
    """Power loss: the old boot's tail is asked for; LOSS_UNSAVED + LOSS_UNUSED close it."""
    clock = Clock()
    gw, pub, _fwd = make_gateway(tmp_path, clock=clock)
    dev = SimDevice("pump-1")
    gw.process([rx(dev, "birth", dev.birth(), clock.t)] + [rx(dev, "data", dev.data(), clock.t) for _ in range(4)])
    dev.reboot()
    gw.process([rx(dev, "birth", dev.birth(), clock.t)])
    gw.tick()  # the runner ticks every 0.25 s: the tail is wanted from now on
    clock.t += 6
    gw.tick()
    assert resends(pub, "pump-1") == [[(1, 6, 0xFFFFFFFF)]]
    # The device kept nothing of boot 1 above seq 5 and had reserved numbers up to 8.
    gw.process([rx(dev, "loss", dev.loss([(1, 6, 8, LOSS_UNSAVED), (1, 9, 0xFFFFFFFF, LOSS_UNUSED)]), clock.t)])
    assert gw.sequence.end("pump-1", 1) == 9
    assert gw.sequence.wanted("pump-1") == []
    assert gw.sequence.counters["pump-1"].lost_unsaved == 3
    gw.close()


def test_an_absurd_sequence_jump_is_held_back_not_believed(tmp_path: Path) -> None:
    gw, pub, _fwd = make_gateway(tmp_path)
    dev = SimDevice("pump-1")
    gw.process([rx(dev, "birth", dev.birth(), T0)] + [rx(dev, "data", dev.data(), T0) for _ in range(3)])
    forged = SimDevice("pump-1", seq=dev.seq + 1_000_000)
    gw.process([rx(dev, "data", forged.data(), T0 + 1)])
    # The real device carries on: nothing missing, windows go on, the forged frame not kept.
    gw.process([rx(dev, "data", dev.data(), T0 + 2) for _ in range(3)])
    c = gw.sequence.counters["pump-1"]
    assert c.suspect == 1 and c.gaps == 0 and gw.sequence.missing("pump-1", 1) == []
    assert stored(gw, "pump-1") == set(range(1, 8))
    assert (1, forged.seq) not in acked(pub, "pump-1")
    assert gw.bad.counts["pump-1"]["seq_jump"] == 1
    w = gw.pipeline_windows("pump-1")
    assert w["gaps"] == 0 and w["samples"] == 6 * 32
    # A jump that the following frames confirm is accepted (e.g. a device that dropped a
    # million frames while the gateway was away): the skipped numbers become a gap.
    jumped = SimDevice("pump-1", seq=dev.seq + 2_000_000)
    gw.process([rx(dev, "data", jumped.data(), T0 + 3) for _ in range(3)])
    assert c.jumps_accepted == 1 and c.suspect == 3
    assert gw.sequence.missing("pump-1", 1) == [(dev.seq + 1, jumped.seq - 1)]
    gw.close()


def test_unknown_ids_are_quarantined_with_bounded_state(tmp_path: Path) -> None:
    gw, pub, _fwd = make_gateway(tmp_path, extra={"registry": {"max_devices": 3, "quarantine_size": 16}})
    batch: list[RawFrame] = []
    for i in range(500):
        d = SimDevice(f"flood-{i}")
        batch += [rx(d, "birth", d.birth(), T0), rx(d, "data", d.data(), T0)]
    gw.process(batch)
    a = gw.admission
    assert len(a.admitted) == 3 and len(a.quarantine) == 16
    assert a.quarantined_frames == 2 * 497 and a.quarantine_forgotten == 497 - 16
    assert len(gw.registry.devices) == 3 and len(gw.sequence.devices()) == 3
    assert len(gw.bad.counts) <= 1 and gw.router.cached_topics() <= 3 * 2
    # Nothing is stored, ACKed or asked of a quarantined id.
    assert {device_of(t) for t, _p, _q in pub} == {"flood-0", "flood-1", "flood-2"}
    assert not read_all(gw.rawlog.path, "flood-3")
    gw.close()


def test_a_devices_file_admits_only_listed_ids(tmp_path: Path) -> None:
    listed = tmp_path / "passwd"
    listed.write_text("pump-1:$7$101$abc\n# a comment\nvalve-1\n")
    gw, _pub, _fwd = make_gateway(tmp_path, extra={"registry": {"devices_file": str(listed)}})
    frames: list[Any] = []
    for name in ("pump-1", "intruder", "valve-1"):
        d = SimDevice(name)
        frames.append(rx(d, "birth", d.birth(), T0))
    gw.process(frames)
    assert gw.admission.admitted == {"pump-1", "valve-1"}
    assert gw.admission.quarantine == {"intruder": 1}
    gw.close()
