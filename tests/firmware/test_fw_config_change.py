"""Remote configuration on the real firmware (MicroPython unix port, sim board, real
Mosquitto): a CMD_CONFIG change is checked with the shared table and the whole-config
validation, saved atomically, applied without a reboot (or with one when the buffers must
grow) and acknowledged with an EVENT; a reset in the middle of the save keeps the old file."""

from __future__ import annotations

import json
import os
import select
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared_protocol import BIRTH, CMD_CONFIG, DATA, EVENT, HEALTH
from shared_protocol.config_change import SETTINGS, check_value, read_ack
from tests.firmware.gateway_stub import GatewayStub
from tests.firmware.simdevice import EXIT_RESET, SimDevice, base_config
from tests.support.upy import ROOT, run_micropython, spawn_micropython
from tools.mosquitto import Mosquitto


def acks(gw: GatewayStub) -> dict[int, dict[str, Any]]:
    """Config acknowledgements received, by change id."""
    out = {}
    for r in gw.of(EVENT):
        ack = read_ack(r.frame.fields["events"])
        if ack is not None:
            out[ack["id"]] = ack
    return out


def send_change(gw: GatewayStub, device: str, cid: int, changes: dict[str, Any]) -> None:
    gw.send_cmd(device, CMD_CONFIG, json.dumps({"set": changes, "id": cid}))


def wait_ack(gw: GatewayStub, cid: int) -> dict[str, Any]:
    gw.wait_for(lambda g: cid in acks(g), what=f"the acknowledgement of change {cid}")
    return acks(gw)[cid]


def test_a_change_is_saved_applied_live_and_acknowledged(
    mosquitto: Mosquitto, gateway: GatewayStub, flash: Callable[[str], Path]
) -> None:
    fl = flash("dev1")
    cfg = base_config(mosquitto.port, broker={"user": "dev1", "password": "s3cret-pw"})
    dev = SimDevice(fl, cfg, EDGELINE_SIM_STOP_FILE=str(fl / "stop")).start()
    try:
        gateway.wait_for(lambda g: len(g.of(DATA)) >= 2, what="DATA at 50 Hz")
        send_change(gateway, "dev1", 11, {"sample_rate_hz": 25, "batch": 10, "health_interval_s": 3})
        ack = wait_ack(gateway, 11)
        assert ack["result"] == "applied", (ack, dev.text())
        assert ack["config"] == {"sample_rate_hz": 25.0, "batch": 10, "health_interval_s": 3}
        # in force without a reboot: 40 ms between samples, 10 per frame, the same boot
        gateway.wait_for(
            lambda g: any(
                r.frame.fields["period_us"] == 40000 and r.frame.fields["nsamples"] == 10 for r in g.of(DATA)
            ),
            what="DATA at 25 Hz in frames of 10",
        )
        assert {r.frame.boot for r in gateway.of(DATA)} == {1}
        assert gateway.of(BIRTH)[-1].frame.fields["channels"][0][5] == 25.0  # the new rate, announced
        saved = json.loads((fl / "config.json").read_text())
        assert saved["sample"] == {"rate_hz": 25, "batch": 10} and saved["health_s"] == 3
        assert saved["broker"] == cfg["broker"]  # the rest as it was, the secret included
        assert not (fl / "config.json.tmp").exists()

        # refused by the board, each with its reason; nothing saved, nothing changed
        send_change(gateway, "dev1", 12, {"batch": 5000})
        send_change(gateway, "dev1", 13, {"colour": "red"})
        send_change(gateway, "dev1", 14, {"sample_rate_hz": 70})  # the MPU-6050 makes 1000/n Hz only
        assert wait_ack(gateway, 12)["result"] == "out_of_range"
        assert wait_ack(gateway, 13)["result"] == "unknown_key"
        refused = wait_ack(gateway, 14)
        assert refused["result"] == "invalid" and refused["config"]["sample_rate_hz"] == 25.0
        assert json.loads((fl / "config.json").read_text()) == saved
        text = dev.text()
        assert "config change 14 refused (invalid)" in text and "sample.rate_hz" in text
        assert "s3cret-pw" not in text
        n_health = len(gateway.of(HEALTH))
        gateway.wait_for(lambda g: len(g.of(HEALTH)) >= n_health + 1, what="a HEALTH at the new interval")
        (fl / "stop").write_text("")
        assert dev.wait(30) == 0, dev.text()
    finally:
        dev.kill()
    st = dev.stats()
    assert (st["rate_hz"], st["batch"], st["health_s"], st["config_changes"]) == (25, 10, 3, 4)

    # the next boot starts from the saved file
    dev2 = SimDevice(fl, None, EDGELINE_SIM_DURATION_S=1.5)
    assert dev2.run(60) == 0, dev2.text()
    assert "at 25 Hz" in dev2.text() or "at 25.0 Hz" in dev2.text()
    gateway.wait_for(
        lambda g: any(r.frame.boot == 2 and r.frame.fields["period_us"] == 40000 for r in g.of(DATA)),
        what="boot 2 at 25 Hz",
    )


def test_a_batch_beyond_the_buffers_is_saved_and_applied_by_a_reboot(
    mosquitto: Mosquitto, gateway: GatewayStub, flash: Callable[[str], Path]
) -> None:
    fl = flash("dev1")
    dev = SimDevice(fl, base_config(mosquitto.port, sample={"rate_hz": 50, "batch": 16})).start()
    try:
        gateway.wait_for(lambda g: len(g.of(DATA)) >= 1, what="DATA")
        send_change(gateway, "dev1", 21, {"batch": 32})  # max_batch follows batch: larger buffers
        assert dev.wait(30) == EXIT_RESET, dev.text()
    finally:
        dev.kill()
    assert "config change 21 applied, rebooting" in dev.text()
    assert json.loads((fl / "config.json").read_text())["sample"]["batch"] == 32
    # the acknowledgement was kept on flash through the reset and is sent by the next boot
    dev2 = SimDevice(fl, None, EDGELINE_SIM_DURATION_S=2)
    assert dev2.run(60) == 0, dev2.text()
    ack = wait_ack(gateway, 21)
    assert ack["result"] == "rebooting" and ack["config"]["batch"] == 32
    gateway.wait_for(
        lambda g: any(r.frame.boot == 2 and r.frame.fields["nsamples"] == 32 for r in g.of(DATA)),
        what="boot 2 in frames of 32",
    )


def _replace_script(path: Path, text_len: int) -> str:
    return (
        "from sensorfw.core.config_store import replace\n"
        f"replace({str(path)!r}, '{{\"pad\": \"' + 'x' * {text_len} + '\"}}')\n"
        "print('replaced')\n"
    )


def test_a_reset_in_the_middle_of_the_save_keeps_the_old_file(
    mosquitto: Mosquitto, flash: Callable[[str], Path]
) -> None:
    fl = flash("dev1")
    cfg = base_config(mosquitto.port)
    old = json.dumps(cfg)
    (fl / "config.json").write_text(old)
    # The temp file is a pipe: the writer blocks in the middle of its text until it is
    # read, so the reset (SIGKILL) falls while the new file is half written.
    os.mkfifo(fl / "config.json.tmp")
    script = fl / "save.py"
    script.write_text(_replace_script(fl / "config.json", 200_000))
    proc = spawn_micropython([str(script)], env={}, cwd=fl, micropypath=(ROOT / "firmware",))
    pipe = os.open(fl / "config.json.tmp", os.O_RDONLY | os.O_NONBLOCK)  # never waits for the writer
    try:
        ready, _, _ = select.select([pipe], [], [], 30)
        assert ready, "the save never began"
        assert os.read(pipe, 4096).startswith(b'{"pad": "xxx')  # begun, and blocked mid-text
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        os.close(pipe)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert (fl / "config.json").read_text() == old
    # the next boot drops the unfinished file and runs on the old one
    dev = SimDevice(fl, None, EDGELINE_SIM_DURATION_S=0.5)
    assert dev.run(60) == 0, dev.text()
    assert "interrupted change" in dev.text() and "kept" in dev.text()
    assert "at 50 Hz" in dev.text()
    assert not (fl / "config.json.tmp").exists()


def test_a_reset_inside_a_remove_then_rename_boots_the_new_file(
    mosquitto: Mosquitto, flash: Callable[[str], Path]
) -> None:
    # FAT without a replacing rename: the old file was removed, the whole new one not yet renamed
    fl = flash("dev1")
    (fl / "config.json.tmp").write_text(json.dumps(base_config(mosquitto.port, sample={"rate_hz": 25, "batch": 16})))
    dev = SimDevice(fl, None, EDGELINE_SIM_DURATION_S=0.5)
    assert dev.run(60) == 0, dev.text()
    assert "restored" in dev.text() and "at 25" in dev.text()
    assert json.loads((fl / "config.json").read_text())["sample"]["rate_hz"] == 25


@pytest.mark.parametrize(("key", "path", "integer", "lo", "hi", "_factor"), SETTINGS)
def test_the_boot_validation_has_the_ranges_of_the_shared_table(
    key: str, path: str, integer: bool, lo: float, hi: float, _factor: int
) -> None:
    # config.json's validation (core/config.py) and remote changes must agree on each range
    def validate(value: float) -> str:
        cfg = base_config(1883, sensors=[{"type": "analog", "pin": 34}], sample={"max_batch": 1024})
        section, _, leaf = path.rpartition(".")
        (cfg[section] if section else cfg)[leaf] = value
        code = (
            "import json\nfrom sensorfw.core.config import validate, ConfigError\n"
            f"try:\n validate(json.loads({json.dumps(json.dumps(cfg))}))\n print('ok')\n"
            "except ConfigError as e:\n print('refused', e)\n"
        )
        res = run_micropython(["-c", code])
        return (res.stdout + res.stderr).decode().strip()

    step = 1 if integer else 0.001
    assert validate(lo) == "ok" and validate(hi) == "ok"
    assert validate(lo - step).startswith("refused") and validate(hi + step).startswith("refused")
    assert check_value(key, lo) is None and check_value(key, hi) is None
    assert check_value(key, lo - step) is not None and check_value(key, hi + step) is not None
