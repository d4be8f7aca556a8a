"""Gap repair with the real firmware, a real Mosquitto and the gateway as a real process.

- Frames lost between the broker and the gateway while the device stays connected are sent
  again because the gateway asks for exactly those (CMD_RESEND), not because a device timer
  happens to fire: the device's ACK timeout is an hour here.
- A device killed (power cut) while offline loses what was in RAM; the next boot answers the
  gateway's question about the old boot (LOSS), and every number of the old boot is then
  either stored or counted lost.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from shared_protocol import DATA, FLAG_HISTORICAL, LOSS_GONE, LOSS_UNSAVED
from shared_protocol.decode import decode
from tests.firmware.gateway_stub import GatewayStub
from tests.firmware.simdevice import SimDevice, base_config
from tests.gateway.mqtt_util import Client
from tests.support.gateway_proc import GatewayProcess
from tests.support.upy import ROOT
from tests.support.waiting import wait_until
from tools.mosquitto import Mosquitto

REPAIR = """
[sequence]
resend_after_s = 1.0
resend_interval_s = 2.0
"""


def test_frames_lost_on_the_way_to_the_gateway_are_asked_for_and_sent_again(
    tmp_path: Path, mosquitto: Mosquitto, flash: Callable[[str], Path]
) -> None:
    # DATA at QoS 0: what is published while the gateway is away is not kept by the broker.
    gw = GatewayProcess(tmp_path / "gw", mosquitto.port, extra_toml="[ingest]\ndata_qos = 0\n" + REPAIR).start()
    watch = Client(mosquitto.host, mosquitto.port, client_id="watch")
    watch.subscribe("el/s1/dev1/data")
    seen: list[tuple[str, bytes, float]] = []
    cfg = base_config(mosquitto.port, sample={"rate_hz": 50, "batch": 10}, queue={"ack_timeout_s": 3600})
    dev = SimDevice(flash("dev1"), cfg).start(EDGELINE_SIM_DURATION_S=14, EDGELINE_SIM_DRAIN_S=30)
    try:
        wait_until(lambda: len(gw.stored("dev1")) >= 5, what="the first frames stored")
        gw.kill()
        seen += watch.drain(0)
        mark = len(seen)
        # The device keeps publishing while the gateway is away: wait for 10 of its DATA frames.
        wait_until(lambda: seen.extend(watch.drain(0)) or len(seen) >= mark + 10, what="DATA while away")
        gw.start()
        assert dev.wait(timeout=90) == 0, dev.text()
    finally:
        dev.kill()
        gw.stop()
        seen += watch.drain(0.3)
        watch.close()
    st = dev.stats()
    assert st["queue_depth"] == 0 and st["dropped"] == 0, st
    assert st["resend_requests"] >= 1, st  # repaired on request, not by the (hour-long) ACK timeout
    # Every DATA frame the device made reached the broker, and every one is stored at the gateway.
    published = {(f.boot, f.seq) for f in (decode(p) for _t, p, _ in seen) if f.type == DATA}
    assert len(published) == st["frames"], (len(published), st)
    missing = published - gw.stored("dev1")
    assert not missing, sorted(missing)[:10]


def test_a_power_cut_while_offline_is_reported_by_the_next_boot(
    tmp_path: Path, mosquitto: Mosquitto, flash: Callable[[str], Path]
) -> None:
    gw = GatewayProcess(tmp_path / "gw", mosquitto.port, extra_toml=REPAIR).start()
    fl = flash("dev1")
    cfg = base_config(
        mosquitto.port,
        sample={"rate_hz": 50, "batch": 10},
        queue={"ram_frames": 6, "block_bytes": 2048, "seq_lease": 8},
    )
    # First boot: online for 2 s, then the network goes; power is cut while frames wait in RAM.
    dev = SimDevice(fl, cfg).start(EDGELINE_SIM_LINK_DOWN="2-100000")
    try:
        wait_until(lambda: len(gw.stored("dev1")) >= 5, what="the first frames stored")
        wait_until(lambda: len(dev.segments()) >= 1, what="frames spilled to flash while offline")
    finally:
        dev.kill()
    stored_before = gw.stored("dev1")
    # Second boot, online: replays boot 1 from flash and answers the gateway about its end.
    dev2 = SimDevice(fl, None)
    assert dev2.run(timeout=90, EDGELINE_SIM_DURATION_S=6, EDGELINE_SIM_DRAIN_S=30) == 0, dev2.text()

    def boot1_closed() -> bool:
        _cur, streams = gw.seq_state("dev1")
        return any(s[0] == 1 and s[5] is not None for s in streams)

    wait_until(boot1_closed, what="the gateway to learn where boot 1 ended")
    gw.stop()
    st = dev2.stats()
    assert st["boot"] == 2 and st["resend_requests"] >= 1 and st["loss_reported"] >= 1, st
    _cur, streams = gw.seq_state("dev1")
    boot1 = next(s for s in streams if s[0] == 1)
    end, lost, missing = boot1[5], boot1[4], boot1[3]
    stored = {seq for b, seq in gw.stored("dev1") if b == 1}
    lost_seqs = {s for lo, hi, _r in lost for s in range(lo, hi + 1)}
    # Every number of boot 1 is stored or counted lost, never both, none missing.
    assert missing == []
    assert stored | lost_seqs == set(range(end)), (end, sorted(set(range(end)) - stored - lost_seqs)[:10])
    assert not stored & lost_seqs
    assert {r for _lo, _hi, r in lost} <= {LOSS_GONE, LOSS_UNSAVED}
    assert any(r == LOSS_UNSAVED for _lo, _hi, r in lost), lost  # RAM frames went with the power
    # The bound is tight: at most the RAM slots, the open flash block and one lease.
    assert len(lost_seqs) <= 6 + 2048 // 200 + 8, lost
    assert {k for k in stored_before if k[0] == 1} <= {(1, s) for s in stored}


def test_the_ack_timeout_runs_from_the_oldest_frame_in_flight(
    mosquitto: Mosquitto, gateway: GatewayStub, flash: Callable[[str], Path]
) -> None:
    """The fallback when nobody asks (a gateway without gap repair): ACKs of newer frames must
    not keep resetting the timer of a frame that was lost, or it is never sent again."""
    gateway.lose_once = {6}
    cfg = base_config(mosquitto.port, sample={"rate_hz": 50, "batch": 10}, queue={"ack_timeout_s": 2})
    dev = SimDevice(flash("dev1"), cfg)
    assert dev.run(timeout=60, EDGELINE_SIM_DURATION_S=6, EDGELINE_SIM_DRAIN_S=20) == 0, dev.text()
    copies = [r.frame for r in gateway.of(DATA) if r.frame.seq == 6]
    assert copies, "seq 6 was never sent again"
    assert copies[0].flags & FLAG_HISTORICAL
    assert dev.stats()["queue_depth"] == 0


def test_a_backlog_after_an_outage_is_scored_in_order(
    tmp_path: Path, mosquitto: Mosquitto, flash: Callable[[str], Path]
) -> None:
    """After a broker outage the device sends its backlog (DATA with HEALTH between) and a new
    BIRTH: every frame goes out in sequence order, so none arrives "late" (stored but not
    scored) and no false gap is reported."""
    model = ROOT / "models" / "vibration_anomaly_int8.json"
    imu = ["imu_ax", "imu_ay", "imu_az", "imu_gx", "imu_gy", "imu_gz"]
    pipeline = f'[[pipelines]]\nname = "vib"\nmodel = "{model}"\ndevices = ["dev1"]\nchannels = {json.dumps(imu)}\n'
    # DATA at QoS 1: the broker keeps what the device sends while the gateway reconnects after
    # the broker restart (at QoS 0 it would come back by gap repair: stored, not scored).
    gw = GatewayProcess(tmp_path / "gw", mosquitto.port, extra_toml="[ingest]\ndata_qos = 1\n" + pipeline).start()
    fl = flash("dev1")
    cfg = base_config(mosquitto.port, sample={"rate_hz": 100, "batch": 32}, health_s=1)
    dev = SimDevice(fl, cfg).start(EDGELINE_SIM_STOP_FILE=tmp_path / "stop", EDGELINE_SIM_DRAIN_S=30)
    try:
        wait_until(lambda: len(gw.stored("dev1")) >= 10, 30, "the first frames stored")
        mosquitto.stop()
        stamp = (fl / "seq.dat").stat().st_mtime_ns
        wait_until(lambda: (fl / "seq.dat").stat().st_mtime_ns != stamp, 30, "frames numbered while offline")
        mosquitto.start()
        gw.wait_subscribed()
        done = len(gw.stored("dev1")) + 30
        wait_until(lambda: len(gw.stored("dev1")) >= done, 60, "the backlog and new frames stored")
        (tmp_path / "stop").touch()
        assert dev.wait(timeout=60) == 0, dev.text()
        st = wait_until(lambda: (s := gw.status()) and s["frames"]["data_accepted"] >= dev.stats()["frames"] and s)
    finally:
        dev.kill()
        gw.stop()
    c = st["sequence"]["dev1"]
    assert (c["gaps"], c["recovered"], c["duplicates"] >= 0) == (0, 0, True), c
    w = st["pipelines"]["vib"]["windows"]["dev1"]
    assert w["late_frames"] == 0 and w["windows"] > 0, w
    assert dev.stats()["losses"] >= 1  # the outage was real
