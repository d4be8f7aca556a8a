"""A bad config.json gives one message naming the key and the board stays up
(main returns to the REPL) instead of crash-looping; the password is never printed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.firmware.simdevice import SimDevice, base_config


def _boot(flash: Path, text: str | None, **env: str) -> tuple[int, str]:
    if text is not None:
        (flash / "config.json").write_text(text)
    dev = SimDevice(flash, None)
    rc = dev.run(timeout=30, EDGELINE_SIM_DURATION_S=1, **env)
    return rc, dev.text()


def test_bad_port_named_no_crash_loop(flash: Callable[[str], Path]) -> None:
    cfg = base_config(1883)
    cfg["broker"]["port"] = "abc"
    cfg["broker"]["password"] = "s3cret-pw"
    rc, out = _boot(flash("a"), json.dumps(cfg))
    assert rc == 0, out  # main() returned: REPL reachable, no reset, no traceback
    assert "CONFIG ERROR" in out and "'broker.port'" in out and "integer 1..65535" in out
    assert "Traceback" not in out and "[sensorfw] boot" not in out
    assert "s3cret-pw" not in out
    assert out.count("CONFIG ERROR") == 1


def test_missing_and_unparsable_config(flash: Callable[[str], Path]) -> None:
    rc, out = _boot(flash("b"), None)
    assert rc == 0 and "CONFIG ERROR" in out and "config.json" in out and "cannot read" in out, out
    rc, out = _boot(flash("c"), '{"device_id": "x",')
    assert rc == 0 and "not valid JSON" in out, out
    cfg = base_config(1883)
    del cfg["sensors"]
    rc, out = _boot(flash("d"), json.dumps(cfg))
    assert rc == 0 and "'sensors'" in out, out


def test_absent_sensor_reported_not_crashed(flash: Callable[[str], Path]) -> None:
    # an MPU-6050 configured at 0x69 where none answers: one START ERROR, no traceback
    cfg = base_config(1883, sensors=[{"type": "mpu6050", "addr": 0x69}])
    rc, out = _boot(flash("e"), json.dumps(cfg))
    assert rc == 0, out
    assert "START ERROR" in out and "0x69" in out and "Traceback" not in out


def test_cross_key_rules_refused_at_boot(flash: Callable[[str], Path]) -> None:
    # rules that hold on every board, the simulation included: one message, no crash loop
    cases = [
        (
            base_config(1883, watchdog_ms=2000),  # broker.timeout_ms 1000: needs 3000
            "'watchdog_ms' = 2000 is too short for 'broker.timeout_ms' = 1000",
        ),
        (
            base_config(1883, sample={"rate_hz": 400, "batch": 16}),  # the MPU-6050 paces
            "'sample.rate_hz' (for 'sensors[0]'): MPU-6050 sample rate 400 Hz",
        ),
        (
            base_config(1883, outputs=[{"name": "a", "pin": 12}, {"name": "b", "pin": 12}]),
            "'outputs[1].pin' = 12 is already used by 'outputs[0].pin'",
        ),
    ]
    for i, (cfg, message) in enumerate(cases):
        rc, out = _boot(flash(f"x{i}"), json.dumps(cfg))
        assert rc == 0, out
        assert out.count("CONFIG ERROR") == 1 and message in out, out
        assert "Traceback" not in out and "[sensorfw] boot" not in out


@pytest.mark.parametrize("board", ["esp32_devkit", "pico_w"])
def test_simulation_applies_the_boards_rules(flash: Callable[[str], Path], board: str) -> None:
    # the simulation of a board validates with that board's profile: a buffer total
    # above its HEAP_BUDGET (the flash index alone: 4096 x 17 B) is refused at boot with
    # the message a board prints, and the process stays up (the REPL, on a board)
    cfg = base_config(1883, queue={"flash_frames": 4096})
    rc, out = _boot(flash("y"), json.dumps(cfg), EDGELINE_SIM_BOARD=board)
    assert rc == 0, out
    assert "CONFIG ERROR" in out and "HEAP_BUDGET" in out and board in out, out
    assert "Traceback" not in out and "[sensorfw] boot" not in out
