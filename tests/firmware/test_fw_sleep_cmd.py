"""Deep-sleep cycles keep boot counter and sequence numbers continuous; commands
from the gateway change the device's behaviour."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shared_protocol import (
    BIRTH,
    CMD_RAW_BURST,
    CMD_REBIRTH,
    CMD_REBOOT,
    CMD_SET_BATCH,
    CMD_SET_OUTPUT,
    CMD_SET_RATE,
    DATA,
    HEALTH,
)
from tests.firmware.gateway_stub import GatewayStub
from tests.firmware.simdevice import EXIT_DEEPSLEEP, EXIT_RESET, SimDevice, base_config
from tools.mosquitto import Mosquitto


@pytest.mark.parametrize("board", ["esp32_devkit", "pico_w"])
def test_deep_sleep_keeps_boot_and_sequence(
    mosquitto: Mosquitto, gateway: GatewayStub, flash: Callable[[str], Path], board: str
) -> None:
    # ESP32 keeps boot/seq in RTC memory across deep sleep and wakes with DEEPSLEEP_RESET;
    # the Pico W has neither: its record is on flash, and its "deep sleep" ends in a reset
    rtc = board == "esp32_devkit"
    cfg = base_config(
        mosquitto.port,
        sample={"rate_hz": 50, "batch": 10},
        sleep={"enabled": True, "awake_samples": 30, "sleep_ms": 50, "ack_wait_ms": 5000},
    )
    fl = flash("dev1")
    dev = SimDevice(fl, cfg, EDGELINE_SIM_BOARD=board)
    ends = []
    captured: list[int] = []
    for _ in range(3):  # wake, capture, publish, sleep (= process exit + restart)
        rc = dev.run(timeout=60)
        assert rc == (EXIT_DEEPSLEEP if rtc else EXIT_RESET), dev.text()
        assert (fl / "wake.flag").exists() == rtc
        assert (fl / ("rtc.bin" if rtc else "sleep.dat")).exists()
        st = dev.stats()
        ends.append((st["boot"], st["seq"], st["queue_depth"]))
        captured.append(st["samples"])
    assert {b for b, _, _ in ends} == {1}, ends  # one boot across three sleeps
    frames = [r.frame for r in gateway.frames]
    assert {f.boot for f in frames} == {1}
    # (a frame whose ACK came too late for the sleep is replayed after the wake-up:
    # the same (boot, seq) twice is a duplicate the gateway drops, never a reuse)
    seqs = sorted({f.seq for f in frames if f.type in (BIRTH, DATA, HEALTH)})
    assert seqs == list(range(len(seqs))), seqs  # continuous, no gap
    assert seqs[-1] + 1 == ends[-1][1]
    # each wake captures its 30 samples (and what the sensor's FIFO holds at the stop)
    assert min(captured) >= 30, captured
    data = {f.seq: f.fields["nsamples"] for f in frames if f.type == DATA}
    assert sum(data.values()) == sum(captured), (data, captured)
    births = [f.seq for f in frames if f.type == BIRTH]
    assert len(births) == 3 and births == sorted(births)
    # a power-on reset (no wake record) is a new boot with sequence from 0
    (fl / ("wake.flag" if rtc else "sleep.dat")).unlink()
    cfg_off = base_config(mosquitto.port, sample={"rate_hz": 50, "batch": 10})
    rc = SimDevice(fl, cfg_off).run(timeout=60, EDGELINE_SIM_DURATION_S=1, EDGELINE_SIM_BOARD=board)
    assert rc == 0
    st = SimDevice(fl, None).stats()
    assert st["boot"] == 2


def test_commands_change_rate_batch_output_and_reboot(
    mosquitto: Mosquitto, gateway: GatewayStub, flash: Callable[[str], Path]
) -> None:
    cfg = base_config(
        mosquitto.port,
        sample={"rate_hz": 50, "batch": 10, "max_batch": 20, "burst_rate_hz": 100},
        outputs=[{"name": "relay", "pin": 12}],
    )
    fl = flash("dev1")
    dev = SimDevice(fl, cfg, EDGELINE_SIM_VERBOSE=1).start()
    try:
        gateway.wait_for(lambda g: len(g.of(DATA)) >= 2, what="DATA")
        gateway.send_cmd("dev1", CMD_REBIRTH)
        gateway.wait_for(lambda g: len(g.of(BIRTH)) >= 2, what="second BIRTH")
        gateway.send_cmd("dev1", CMD_SET_BATCH, 5)
        gateway.wait_for(lambda g: any(r.frame.fields["nsamples"] == 5 for r in g.of(DATA)), what="batch 5")
        gateway.send_cmd("dev1", CMD_SET_RATE, 25000)  # mHz
        gateway.wait_for(lambda g: any(r.frame.fields["period_us"] == 40000 for r in g.of(DATA)), what="25 Hz")
        assert gateway.of(BIRTH)[-1].frame.fields["channels"][0][5] == 25
        gateway.send_cmd("dev1", CMD_SET_OUTPUT, 0, 1, 300)
        gateway.send_cmd("dev1", CMD_RAW_BURST, 1)
        gateway.wait_for(lambda g: any(r.frame.fields["period_us"] == 10000 for r in g.of(DATA)), what="burst")
        gateway.wait_for(
            lambda g: g.of(DATA)[-1].frame.fields["period_us"] == 40000 and len(g.of(BIRTH)) >= 5,
            what="back to 25 Hz after the burst",
        )
        time.sleep(0.5)
        gateway.send_cmd("dev1", CMD_REBOOT)
        rc = dev.wait(timeout=30)
    finally:
        dev.kill()
    assert rc == EXIT_RESET, dev.text()
    out = dev.text()
    assert "command 6 op 3" in out
    st = dev.stats() if (fl / "stats.json").exists() else None
    assert st is None or st["commands"] >= 6
    # the relay went on and, 300 ms later, off again
    assert "[sim] pin 12 -> 1" in out and out.index("[sim] pin 12 -> 1") < out.rindex("[sim] pin 12 -> 0")
