"""The CircuitPython firmware end to end: code.py with the real board layer over the
CircuitPython simulation, the pinned MiniMQTT, a real Mosquitto and the gateway's decoders."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from shared_protocol import BIRTH, DATA, EVENT, FLAG_HISTORICAL, HEALTH
from shared_protocol.np_decode import decode_data
from tests.circuitpython.cpdevice import CPDevice, cp_config
from tests.firmware.gateway_stub import GatewayStub
from tests.support.waiting import wait_until
from tools.mosquitto import Mosquitto

SENSORS = [
    {"type": "mpu6050", "name": "imu", "accel_range_g": 4},
    {"type": "analog", "name": "temp", "pin": 26, "unit": "degC", "scale": 0.01, "offset": -40.0},
    {"type": "pulse", "name": "door", "pin": 15, "mode": "event", "debounce_ms": 5, "sim_hz": 4},
    {"type": "pulse", "name": "flow", "pin": 14, "mode": "count", "sim_hz": 20},
]


def test_frames_decode_with_values_and_units(
    mosquitto: Mosquitto, gateway: GatewayStub, flash: Callable[[str], Path]
) -> None:
    cfg = cp_config(mosquitto.port, sensors=SENSORS, sample={"rate_hz": 50, "batch": 25}, health_s=1)
    dev = CPDevice(flash("cp1"), cfg)
    assert "writable by the firmware" in dev.power_on()
    rc = dev.run(timeout=60, EDGELINE_SIM_DURATION_S=4, EDGELINE_SIM_DRAIN_S=5)
    assert rc == 0, dev.text()
    st = dev.stats()
    assert st["runtime"] == "circuitpython" and st["board"] == "cp_pico_w"
    births = gateway.first_copies(BIRTH)
    assert len(births) == st["births"] >= 1
    if st["losses"] == 0:  # else (a stall past the 1 s broker timeout) a new session, its BIRTH, and frames again
        assert len(births) == 1 and gateway.copies_again() == 0
    channels = births[0].frame.fields["channels"]
    assert [c[0] for c in channels] == [
        "imu_ax",
        "imu_ay",
        "imu_az",
        "imu_gx",
        "imu_gy",
        "imu_gz",
        "temp",
        "door",
        "flow",
    ]
    assert [c[1] for c in channels][6:] == ["degC", "level", "pulses"]
    data = gateway.first_copies(DATA)
    assert len(data) == st["frames"] >= 6 and st["queue_depth"] == 0 and st["dropped"] == 0
    blocks = [decode_data(r.raw, gateway.schemas["cp1"]) for r in data]
    values = np.concatenate([b.values for b in blocks])
    assert values.shape[0] == st["samples"]
    assert 0.9 < values[:, 2].mean() < 1.1  # upright: az ~ +1 g
    assert values[:, 6].std() > 0
    assert set(np.unique(values[:, 7])) <= {0.0, 1.0}
    assert 0.2 < values[:, 8].mean() < 0.6  # countio: ~20 pulses/s at 50 Hz
    assert seqs_of(gateway) == list(range(st["seq"]))
    events = [e for r in gateway.first_copies(EVENT) for e in r.frame.fields["events"]]
    assert len(events) >= 8 and {ch for ch, _, _ in events} == {7} and {v for _, _, v in events} == {0, 1}
    assert st["losses"] > 0 or not any(r.frame.flags & FLAG_HISTORICAL for r in data)
    assert gateway.of(HEALTH)[-1].frame.fields["dropped_frames"] == 0


def seqs_of(gateway: GatewayStub) -> list[int]:
    return sorted(r.frame.seq for r in gateway.first_copies(BIRTH, DATA, EVENT, HEALTH))


def test_wifi_outage_loses_nothing_and_replays_flagged_historical(
    mosquitto: Mosquitto, gateway: GatewayStub, flash: Callable[[str], Path]
) -> None:
    # While the network is away the frames go to the offline queue on CIRCUITPY. A join
    # blocks the loop (CircuitPython's wifi.radio.connect) but the MPU-6050's FIFO keeps
    # sampling: a 1 s join, then at least 1 s of backoff, stays within its 1.7 s at 50 Hz.
    cfg = cp_config(
        mosquitto.port,
        wifi={"connect_timeout_ms": 1000},
        queue={"ram_frames": 4},
        backoff={"min_ms": 1000, "max_ms": 1000},
    )
    dev = CPDevice(flash("cp1"), cfg)
    dev.power_on()
    rc = dev.run(timeout=90, EDGELINE_SIM_DURATION_S=7, EDGELINE_SIM_DRAIN_S=20, EDGELINE_SIM_LINK_DOWN="1.5-4.5")
    assert rc == 0, dev.text()
    st = dev.stats()
    assert st["queue_depth"] == 0 and st["dropped"] == 0, st
    assert st["spilled"] > 0 and st["connects"] >= 2, st  # frames went to flash; a second session
    seqs = seqs_of(gateway)
    assert seqs == list(range(st["seq"])), seqs
    data = gateway.first_copies(DATA)
    assert len(data) == st["frames"]
    assert any(r.frame.flags & FLAG_HISTORICAL for r in data)  # replayed after the outage
    assert st["fifo_overflows"] == 0, st
    samples = sum(r.frame.fields["nsamples"] for r in data)
    assert samples == st["samples"]


def test_power_cut_with_frames_on_flash_replays_them_after_the_reset(
    mosquitto: Mosquitto, gateway: GatewayStub, flash: Callable[[str], Path]
) -> None:
    cfg = cp_config(mosquitto.port, wifi={"connect_timeout_ms": 1000}, queue={"ram_frames": 4})
    fl = flash("cp1")
    dev = CPDevice(fl, cfg)
    dev.power_on()
    dev.start(EDGELINE_SIM_LINK_DOWN="1-1000")
    try:
        gateway.wait_for(lambda g: len(g.of(DATA)) >= 2, what="DATA before the outage")
        wait_until(dev.segments, what="frames spilled to the queue on CIRCUITPY")
    finally:
        dev.kill()  # the power goes: RAM is lost, CIRCUITPY keeps the queue
    dev2 = CPDevice(fl, None)
    cut_at = time.monotonic()
    dev2.power_on()
    rc = dev2.run(timeout=90, EDGELINE_SIM_DURATION_S=2, EDGELINE_SIM_DRAIN_S=20)
    assert rc == 0, dev2.text()
    st = dev2.stats()
    assert st["boot"] == 2 and st["loaded"] > 0 and st["queue_depth"] == 0, st
    # everything boot 2 loaded from the queue on CIRCUITPY went out again, flagged historical
    # (boot 1 itself may have sent frames again, after a session lost before the outage)
    replayed = [r for r in gateway.frames if r.frame.boot == 1 and r.at > cut_at]
    assert replayed, "nothing of boot 1 replayed from flash"
    assert all(r.frame.flags & FLAG_HISTORICAL for r in replayed)
    assert len({r.frame.seq for r in replayed}) == st["loaded"], (sorted(r.frame.seq for r in replayed), st)
