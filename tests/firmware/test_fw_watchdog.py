"""machine.WDT is fed by the main loop: a hung loop ends the process (the sim
board's watchdog kills it, as the hardware resets the chip); a healthy one runs on."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from tests.firmware.simdevice import SimDevice, base_config


def test_hung_main_loop_is_reset_by_watchdog(flash: Callable[[str], Path]) -> None:
    cfg = base_config(1, watchdog_ms=3000)  # port 1: no broker, the link keeps retrying
    dev = SimDevice(flash("dev1"), cfg)
    rc = dev.run(timeout=30, EDGELINE_SIM_HANG_AT_S=1, EDGELINE_SIM_DURATION_S=20)
    out = dev.text()
    assert rc == -signal.SIGKILL, (rc, out)
    assert "main loop hangs" in out and "watchdog expired" in out


def test_fed_watchdog_lets_the_run_finish(flash: Callable[[str], Path]) -> None:
    cfg = base_config(1, watchdog_ms=3000)
    dev = SimDevice(flash("dev1"), cfg)
    rc = dev.run(timeout=30, EDGELINE_SIM_DURATION_S=3)
    assert rc == 0, dev.text()
    assert "watchdog expired" not in dev.text()
    assert dev.stats()["samples"] >= 100
