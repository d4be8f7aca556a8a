"""A remote configuration change on the CircuitPython firmware (unix port, cpsim, the real
MiniMQTT and Mosquitto): checked, written into settings.toml atomically, applied without a
reboot, acknowledged, and in force again after a reset."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from shared_protocol import BIRTH, CMD_CONFIG, DATA, EVENT
from shared_protocol.config_change import read_ack
from tests.circuitpython.cpdevice import CPDevice, cp_config
from tests.firmware.gateway_stub import GatewayStub
from tools.mosquitto import Mosquitto


def test_a_change_goes_into_settings_toml_and_is_acknowledged(
    mosquitto: Mosquitto, gateway: GatewayStub, flash: Callable[[str], Path]
) -> None:
    fl = flash("cp1")
    dev = CPDevice(fl, cp_config(mosquitto.port), EDGELINE_SIM_STOP_FILE=str(fl / "stop"))
    dev.power_on()
    dev.start()
    try:
        gateway.wait_for(lambda g: len(g.of(DATA)) >= 2, what="DATA at 50 Hz")
        change = {"set": {"sample_rate_hz": 25, "batch": 5, "health_interval_s": 4}, "id": 31}
        gateway.send_cmd("cp1", CMD_CONFIG, json.dumps(change))
        gateway.wait_for(
            lambda g: any((read_ack(r.frame.fields["events"]) or {}).get("id") == 31 for r in g.of(EVENT)),
            what="the acknowledgement",
        )
        ack = next(a for r in gateway.of(EVENT) if (a := read_ack(r.frame.fields["events"])) and a["id"] == 31)
        assert ack["result"] == "applied", dev.text()
        assert ack["config"] == {"sample_rate_hz": 25.0, "batch": 5, "health_interval_s": 4}
        gateway.wait_for(
            lambda g: any(r.frame.fields["period_us"] == 40000 and r.frame.fields["nsamples"] == 5 for r in g.of(DATA)),
            what="DATA at 25 Hz in frames of 5",
        )
        (fl / "stop").write_text("")
        assert dev.wait(30) == 0, dev.text()
    finally:
        dev.kill()
    text = (fl / "settings.toml").read_text()
    assert 'EDGELINE_SAMPLE_RATE_HZ = "25.0"' in text and "EDGELINE_SAMPLE_BATCH = 5" in text
    assert "EDGELINE_HEALTH_S = 4" in text and 'EDGELINE_DEVICE_ID = "cp1"' in text
    assert not (fl / "settings.toml.tmp").exists()
    # after a reset the board runs with what settings.toml now says
    n = len(gateway.of(BIRTH))
    dev2 = CPDevice(fl, None)
    assert dev2.run(timeout=60, EDGELINE_SIM_DURATION_S=1.5) == 0, dev2.text()
    gateway.wait_for(lambda g: len(g.of(BIRTH)) > n, what="the BIRTH of boot 2")
    assert gateway.of(BIRTH)[-1].frame.fields["channels"][0][5] == 25.0
