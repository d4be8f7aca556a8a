"""The simulation board's inputs reach the gateway: injected faults change the
vibration, a recorded file is replayed register-exact."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from shared_protocol import DATA
from shared_protocol.np_decode import decode_data
from tests.firmware.gateway_stub import GatewayStub
from tests.firmware.simdevice import SimDevice, base_config
from tools.mosquitto import Mosquitto


def test_fault_schedule_changes_vibration(
    mosquitto: Mosquitto, gateway: GatewayStub, flash: Callable[[str], Path]
) -> None:
    cfg = base_config(mosquitto.port, sample={"rate_hz": 100, "batch": 50})
    dev = SimDevice(flash("dev1"), cfg)
    rc = dev.run(
        timeout=60,
        EDGELINE_SIM_SPEED="max",
        EDGELINE_SIM_DURATION_S=20,
        EDGELINE_SIM_FAULTS="imbalance@10:1.0",
        EDGELINE_SIM_DRAIN_S=10,
    )
    assert rc == 0, dev.text()
    assert "fault imbalance" in dev.text()
    schema = gateway.schemas["dev1"]
    blocks = sorted((decode_data(r.raw, schema) for r in gateway.of(DATA)), key=lambda b: b.seq)
    t0 = blocks[0].ticks
    before = np.concatenate([b.values[:, 0] for b in blocks if (b.ticks - t0) < 9000])
    after = np.concatenate([b.values[:, 0] for b in blocks if (b.ticks - t0) > 11000])
    assert len(before) > 500 and len(after) > 500
    # imbalance: the 1x shaft component of the radial acceleration grows (x4 at severity 1)
    assert after.std() > 2.0 * before.std(), (before.std(), after.std())


def test_recorded_file_replayed_exactly(
    mosquitto: Mosquitto, gateway: GatewayStub, flash: Callable[[str], Path], tmp_path: Path
) -> None:
    rng = np.random.default_rng(7)
    rec = rng.integers(-20000, 20000, size=(40, 6))
    path = tmp_path / "recording.txt"
    path.write_text("# ax ay az gx gy gz (raw)\n" + "\n".join(" ".join(map(str, r)) for r in rec) + "\n")
    cfg = base_config(mosquitto.port, sample={"rate_hz": 50, "batch": 10})
    dev = SimDevice(flash("dev1"), cfg)
    rc = dev.run(timeout=60, EDGELINE_SIM_REPLAY=str(path), EDGELINE_SIM_DURATION_S=2, EDGELINE_SIM_DRAIN_S=5)
    assert rc == 0, dev.text()
    schema = gateway.schemas["dev1"]
    blocks = sorted((decode_data(r.raw, schema) for r in gateway.of(DATA)), key=lambda b: b.seq)
    raw = np.concatenate([b.raw for b in blocks])
    assert len(raw) >= 60
    # the simulated chip samples from the moment the firmware wakes it, before its FIFO is
    # reset and enabled: the DATA stream starts somewhere in the file, then follows it
    # row for row (the file loops)
    start = [i for i in range(len(rec)) if (rec[i] == raw[0]).all()]
    assert len(start) == 1, start
    looped = np.concatenate([rec] * (2 + len(raw) // len(rec)))
    expect = looped[start[0] : start[0] + len(raw)]
    assert (raw == expect).all()
