"""Home Assistant MQTT discovery (gateway/hadiscovery.py): every payload validated by Home
Assistant's own schemas (a pinned release in .venv-ha, tools/setup_ha_env.sh, through
tests/gateway/ha_schema_check.py), republished on a schema change, cleared on removal; the
switch turned into CMD_SET_OUTPUT only for the outputs [[rules]] name; and on a real broker."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import from_dict
from gateway.pipeline import Gateway
from gateway.runner import Runner
from shared_protocol import CMD, CMD_SET_OUTPUT, ST_INT16
from shared_protocol.decode import decode
from shared_protocol.gw_topics import output_command_topic
from tests.gateway.doubles import RMSModel
from tests.gateway.mqtt_util import Client
from tests.gateway.test_localstate import Retained, rx
from tests.support.runner_thread import runner_thread
from tests.support.simdevice import SimDevice
from tests.support.upy import ROOT

T0 = float(int(time.time()))
HA_PYTHON = ROOT / ".venv-ha" / "bin" / "python"
CHECK = Path(__file__).with_name("ha_schema_check.py")
RULE = {"name": "valve", "on_alert_from": "pump-*", "device": "valve-1", "output": 0, "value": 1}


def make(tmp_path: Path, now: list[float]) -> tuple[Gateway, Retained]:
    data: dict[str, Any] = {
        "gateway": {"id": "gw1", "site": "s1", "data_dir": str(tmp_path / "data")},
        "pipelines": [{"name": "vib", "model": "unused.json", "devices": ["pump-*"]}],
        "rules": [RULE],
        "homeassistant": {"enabled": True},
    }
    pub = Retained()
    gw = Gateway(from_dict(data, base_dir=tmp_path), pub, models={"vib": RMSModel()}, clock=lambda: now[0])
    return gw, pub


def latest(pub: Retained) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for t, p, r in pub:
        if r:
            out[t] = p
    return out


def configs(pub: Retained) -> dict[str, dict[str, Any]]:
    return {t: json.loads(p) for t, p in latest(pub).items() if t.startswith("homeassistant/") and p}


def ha_check(cfgs: dict[str, Any], payloads: dict[str, bytes]) -> dict[str, Any]:
    """Home Assistant's verdict on each discovery message (its own code, in .venv-ha)."""
    assert HA_PYTHON.exists(), "run tools/setup_ha_env.sh (tools/setup.sh --test does)"
    req = {
        "discovery_prefix": "homeassistant",
        "configs": {t: json.dumps(p) for t, p in cfgs.items()},
        "payloads": {t: p.decode() for t, p in payloads.items()},
    }
    out = subprocess.run(
        [str(HA_PYTHON), str(CHECK)], input=json.dumps(req), capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def fleet(gw: Gateway, now: list[float]) -> tuple[SimDevice, SimDevice]:
    pump, valve = SimDevice("pump-1"), SimDevice("valve-1", channels=[("level", "", 1.0, 0.0, ST_INT16, 1.0)])
    gw.process(
        rx(pump, "birth", pump.birth(), now[0])
        + rx(pump, "health", pump.health(rssi=-67, free_heap=81234, queue_depth=3), now[0])
        + rx(pump, "data", pump.data(), now[0])
        + rx(valve, "birth", valve.birth(), now[0])
    )
    gw.tick()
    return pump, valve


def test_every_entity_type_validates_with_home_assistant(tmp_path: Path) -> None:
    now = [T0]
    gw, pub = make(tmp_path, now)
    fleet(gw, now)
    cfgs = configs(pub)
    kinds = {(t.split("/")[1], t.split("/")[3]) for t in cfgs}
    assert {
        ("sensor", "ch_ax"),
        ("sensor", "ch_temp"),
        ("sensor", "diag_rssi"),
        ("sensor", "diag_free_heap"),
        ("sensor", "diag_queue_depth"),
        ("binary_sensor", "alert_vib"),
        ("switch", "output_0"),
        ("binary_sensor", "connectivity"),
        ("sensor", "ch_level"),
    } <= kinds
    assert not any(t.endswith("alert_vib/config") and "valve-1" in t for t in cfgs)  # vib scores pump-* only
    ax = cfgs["homeassistant/sensor/edgeline_s1_pump-1/ch_ax/config"]
    assert ax["unique_id"] == "edgeline_s1_pump-1_ch_ax" and ax["unit_of_measurement"] == "g"
    assert ax["state_class"] == "measurement" and ax["availability_mode"] == "all"
    assert ax["device"] == {
        "identifiers": ["edgeline_s1_pump-1"],
        "name": "pump-1",
        "manufacturer": "edgeline",
        "model": "edgeline sensor",
        "via_device": "edgeline_s1_gateway_gw1",
        "sw_version": "1.2.3",
    }
    rssi = cfgs["homeassistant/sensor/edgeline_s1_pump-1/diag_rssi/config"]
    assert (rssi["device_class"], rssi["unit_of_measurement"], rssi["entity_category"]) == (
        "signal_strength",
        "dBm",
        "diagnostic",
    )

    payloads = latest(pub) | {"el/s1/_gateway/status": b'{"online":true}'}
    verdict = ha_check(cfgs, payloads)
    assert set(verdict) == set(cfgs)
    for topic, v in verdict.items():
        assert v["error"] is None, (topic, v["error"])
        assert [k for k in v["dropped"] if k != "platform"] == [], (topic, v["dropped"])  # no key HA ignores
        if "availability.0" in v["rendered"]:
            assert v["rendered"]["availability.0"] == "online"
    rendered = {
        t.split("/")[2] + "/" + t.split("/")[3]: v["rendered"].get("value_template") for t, v in verdict.items()
    }
    state = json.loads(payloads["el/s1/_state/pump-1/state"])
    assert float(rendered["edgeline_s1_pump-1/ch_temp"]) == pytest.approx(state["channels"]["temp"]["value"])
    assert rendered["edgeline_s1_pump-1/diag_rssi"] == "-67"
    assert rendered["edgeline_s1_pump-1/diag_free_heap"] == "81234"
    assert rendered["edgeline_s1_pump-1/diag_queue_depth"] == "3"
    assert rendered["edgeline_s1_pump-1/alert_vib"] == "OFF"
    assert rendered["edgeline_s1_gateway_gw1/connectivity"] == "ON"
    assert rendered["edgeline_s1_valve-1/diag_rssi"] == "None"  # no HEALTH yet: HA's "unknown"
    gw.close()


def test_the_checker_rejects_what_home_assistant_rejects() -> None:
    good = {
        "name": "x",
        "unique_id": "u",
        "state_topic": "a/b",
        "device": {"identifiers": ["d"], "name": "d"},
    }
    verdict = ha_check(
        {
            "homeassistant/sensor/n/ok/config": good,
            "homeassistant/sensor/n/bad_class/config": {**good, "device_class": "no_such_class"},
            "homeassistant/binary_sensor/n/bad_category/config": {**good, "entity_category": "nonsense"},
            "homeassistant/sensor/n/typo/config": {**good, "unit_of_measurment": "g"},
            "homeassistant/sensor/n/bad.id/config": good,
        },
        {},
    )
    assert verdict["homeassistant/sensor/n/ok/config"]["error"] is None
    assert "device_class" in verdict["homeassistant/sensor/n/bad_class/config"]["error"]
    assert verdict["homeassistant/binary_sensor/n/bad_category/config"]["error"] is not None
    assert verdict["homeassistant/sensor/n/typo/config"]["dropped"] == ["platform", "unit_of_measurment"]
    assert verdict["homeassistant/sensor/n/bad.id/config"]["error"] == "illegal discovery topic"


def test_republished_on_schema_change_only_and_cleared_on_removal(tmp_path: Path) -> None:
    now = [T0]
    gw, pub = make(tmp_path, now)
    pump, _ = fleet(gw, now)
    n = len(pub)
    for _ in range(3):  # data and health: no discovery traffic
        now[0] += 1
        gw.process(rx(pump, "data", pump.data(), now[0]))
        gw.tick()
    assert not [t for t, _, _ in pub[n:] if t.startswith("homeassistant/")]
    # A new firmware with another channel table: the old channel's entity goes, the new one comes.
    now[0] += 1
    pump.boot, pump.seq, pump.channels = 2, 0, [("ax", "g", 0.001, 0.0, ST_INT16, 100.0)]
    pump.__post_init__()
    n = len(pub)
    gw.process(rx(pump, "birth", pump.birth(), now[0]))
    gw.tick()
    changed = {t: p for t, p, r in pub[n:] if t.startswith("homeassistant/") and r}
    assert changed == {
        "homeassistant/sensor/edgeline_s1_pump-1/ch_ay/config": b"",
        "homeassistant/sensor/edgeline_s1_pump-1/ch_temp/config": b"",
    }  # what did not change (ax, diagnostics, the alert) is not sent again
    assert gw.ha is not None
    n = len(pub)
    gw.ha.remove("pump-1")
    cleared = [t for t, p, r in pub[n:] if r and p == b""]
    assert sorted(t.split("/")[3] for t in cleared) == [
        "alert_vib",
        "ch_ax",
        "diag_free_heap",
        "diag_queue_depth",
        "diag_rssi",
    ]
    assert all("edgeline_s1_pump-1/" in t for t in cleared)
    gw.close()


def test_switch_commands_only_for_outputs_the_rules_name(tmp_path: Path) -> None:
    now = [T0]
    gw, pub = make(tmp_path, now)
    fleet(gw, now)
    ha = gw.ha
    assert ha is not None
    ha.on_message(output_command_topic("el", "s1", "valve-1", 0), b"ON")
    ha.on_message(output_command_topic("el", "s1", "valve-1", 0), b"OFF")
    ha.on_message(output_command_topic("el", "s1", "valve-1", 1), b"ON")  # no rule drives output 1
    ha.on_message(output_command_topic("el", "s1", "pump-1", 0), b"ON")  # nor any output of pump-1
    ha.on_message(output_command_topic("el", "s1", "valve-1", 0), b"TOGGLE")
    ha.on_message("el/s1/_state/valve-1/output/x/set", b"ON")
    n = len(pub)
    gw.tick()
    cmds = [decode(p) for t, p, _ in pub[n:] if t.endswith("/cmd")]
    assert [(c.type, c.fields["op"]) for c in cmds] == [(CMD, CMD_SET_OUTPUT)] * 2
    assert [(c.fields["output"], c.fields["value"], c.fields["duration_ms"]) for c in cmds] == [(0, 1, 0), (0, 0, 0)]
    assert all(t == "el/s1/valve-1/cmd" for t, _, _ in pub[n:] if t.endswith("/cmd"))
    assert ha.commands == 2 and ha.refused == {"not_configured": 2, "payload": 1, "topic": 1}
    assert gw.status()["homeassistant"] == {"commands": 2, "refused": {"not_configured": 2, "payload": 1, "topic": 1}}
    gw.close()


# ---------------------------------------------------------------------- real Mosquitto


@pytest.fixture
def running(tmp_path: Path, mosquitto: Any) -> Iterator[Runner]:
    cfg = {
        "gateway": {"id": "gw1", "site": "s1", "data_dir": str(tmp_path / "data"), "status_interval_s": 0.2},
        "mqtt": {"host": mosquitto.host, "port": mosquitto.port},
        "pipelines": [{"name": "vib", "model": "unused.json", "devices": ["pump-*"]}],
        "rules": [RULE],
        "homeassistant": {"enabled": True},
    }
    with runner_thread(cfg, models={"vib": RMSModel()}) as runner:
        yield runner


def test_discovery_and_switch_on_a_real_broker(running: Runner, mosquitto: Any) -> None:
    ha = Client(mosquitto.host, mosquitto.port, client_id="homeassistant")
    ha.subscribe("homeassistant/#")
    pump, valve = SimDevice("pump-1"), SimDevice("valve-1")
    board = Client(mosquitto.host, mosquitto.port, client_id="valve-1")
    board.subscribe(valve.topic("cmd"))
    board.publish(valve.topic("birth"), valve.birth(), retain=True)
    sensor = Client(mosquitto.host, mosquitto.port, client_id="pump-1")
    sensor.publish(pump.topic("birth"), pump.birth(), retain=True)
    sensor.publish(pump.topic("data"), pump.data())
    want = "homeassistant/sensor/edgeline_s1_pump-1/ch_ax/config"
    _t, payload, _ = ha.wait_for(lambda t, p: t == want)
    assert json.loads(payload)["state_topic"] == "el/s1/_state/pump-1/state"
    _t, payload, _ = ha.wait_for(lambda t, p: t == "homeassistant/switch/edgeline_s1_valve-1/output_0/config")
    switch = json.loads(payload)
    ha.publish(switch["command_topic"], switch["payload_on"].encode())
    _t, cmd, _ = board.wait_for(lambda t, p: True)
    f = decode(cmd)
    assert (f.fields["op"], f.fields["output"], f.fields["value"], f.fields["duration_ms"]) == (CMD_SET_OUTPUT, 0, 1, 0)
    for c in (ha, board, sensor):
        c.close()
