"""The firmware publishes BIRTH, DATA, EVENT and HEALTH that the gateway-side decoders
read back with the right values and units (real micropython process, real Mosquitto)."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import numpy as np

from shared_protocol import BIRTH, DATA, EVENT, FLAG_HISTORICAL, HEALTH
from shared_protocol.np_decode import decode_data
from tests.firmware.gateway_stub import GatewayStub
from tests.firmware.simdevice import SimDevice, base_config
from tools.mosquitto import Mosquitto

SENSORS = [
    {"type": "mpu6050", "name": "imu", "accel_range_g": 4, "gyro_range_dps": 500},
    {"type": "analog", "name": "temp", "pin": 34, "unit": "degC", "scale": 0.01, "offset": -40.0},
    {"type": "pulse", "name": "door", "pin": 4, "mode": "event", "sim_hz": 4},
    {"type": "pulse", "name": "flow", "pin": 27, "mode": "count", "sim_hz": 20},
]


def test_frames_decode_with_values_and_units(
    mosquitto: Mosquitto, gateway: GatewayStub, flash: Callable[[str], Path]
) -> None:
    cfg = base_config(mosquitto.port, sensors=SENSORS, sample={"rate_hz": 50, "batch": 25}, health_s=1)
    dev = SimDevice(flash("dev1"), cfg)
    rc = dev.run(timeout=60, EDGELINE_SIM_DURATION_S=4, EDGELINE_SIM_DRAIN_S=5)
    assert rc == 0, dev.text()
    stats = dev.stats()

    births = gateway.first_copies(BIRTH)
    assert len(births) == stats["births"] >= 1
    if stats["losses"] == 0:  # else (a stall past the 1 s broker timeout) a new session, its BIRTH, and frames again
        assert len(births) == 1 and gateway.copies_again() == 0
    channels = births[0].frame.fields["channels"]
    names = [c[0] for c in channels]
    assert names == ["imu_ax", "imu_ay", "imu_az", "imu_gx", "imu_gy", "imu_gz", "temp", "door", "flow"]
    units = [c[1] for c in channels]
    assert units == ["g", "g", "g", "deg/s", "deg/s", "deg/s", "degC", "level", "pulses"]
    assert abs(channels[0][2] - 1 / 8192) < 1e-12  # +-4 g range: 8192 LSB/g
    assert abs(channels[3][2] - 1 / 65.5) < 1e-9  # +-500 deg/s: 65.5 LSB/(deg/s)
    assert all(c[5] == 50 for c in channels)

    schema = gateway.schemas["dev1"]
    data = gateway.first_copies(DATA)
    assert len(data) == stats["frames"] >= 7
    blocks = [decode_data(r.raw, schema) for r in data]
    values = np.concatenate([b.values for b in blocks])
    assert values.shape == (stats["frames"] * 25 - sum(25 - b.values.shape[0] for b in blocks), 9)
    assert all(b.period_us == 20000 for b in blocks)
    # the simulated MPU-6050 sits upright: az ~ +1 g, ax/ay around 0 g, gyros small
    assert 0.9 < values[:, 2].mean() < 1.1
    assert abs(values[:, 0].mean()) < 0.1 and abs(values[:, 1].mean()) < 0.1
    assert np.abs(values[:, 3:6]).max() < 20
    # analog: read_u16 in 0..65535 mapped with the configured scale/offset
    assert (values[:, 6] >= -40.0).all() and (values[:, 6] <= 0.01 * 65535 - 40.0).all()
    assert values[:, 6].std() > 0
    # pulse channels: door level is 0/1, flow counts pulses per sample (~20 Hz / 50 Hz)
    assert set(np.unique(values[:, 7])) <= {0.0, 1.0}
    assert 0.2 < values[:, 8].mean() < 0.6
    # consecutive DATA frames are contiguous in device ticks: the first sample of the
    # next frame is one batch of periods later, give or take the stamping bound (each
    # FIFO row is stamped up to one period late, on a millisecond clock)
    for a, b in pairwise(blocks):
        gap = (b.ticks - a.ticks) % (1 << 30)
        assert abs(gap - a.values.shape[0] * 20) <= 20, (a.seq, b.seq, gap)
    assert stats["losses"] > 0 or not any(r.frame.flags & FLAG_HISTORICAL for r in data)

    events = [e for r in gateway.first_copies(EVENT) for e in r.frame.fields["events"]]
    assert len(events) >= 8
    assert {ch for ch, _, _ in events} == {7}  # the door input's channel in the BIRTH table
    assert {v for _, _, v in events} == {0, 1}
    assert all(units[ch] == "level" for ch, _, _ in events)

    health = gateway.of(HEALTH)
    assert len(health) >= 3
    h = health[-1].frame.fields
    assert h["irq_overruns"] == 0 and h["dropped_frames"] == 0
    assert h["free_heap"] > 0 and h["rssi"] == -55
    assert h["uptime_s"] >= 2
    assert h["jitter_us"] >= 0
    # worst handler latency is per HEALTH interval (reset at each one): an interval while
    # sampling reports a positive figure; one in the final drain, with no samples, reports 0
    assert max(r.frame.fields["worst_latency_us"] for r in health) > 0

    # every frame of the run carries this boot and the sequence numbers 0..seq-1 once each
    seqs = sorted(r.frame.seq for r in gateway.first_copies(BIRTH, DATA, EVENT, HEALTH))
    assert seqs == list(range(stats["seq"]))
    assert all(r.frame.boot == stats["boot"] for r in gateway.frames)
    assert stats["queue_depth"] == 0  # everything ACKed by the gateway
