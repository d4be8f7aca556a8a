"""CircuitPython specifics end to end: who may write CIRCUITPY (boot.py), settings.toml
errors that name the key, deep sleep with alarm.sleep_memory, commands from the gateway."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from shared_protocol import BIRTH, CMD_REBOOT, CMD_SET_OUTPUT, CMD_SET_RATE, DATA, HEALTH
from tests.circuitpython.cpdevice import CPDevice, cp_config
from tests.firmware.gateway_stub import GatewayStub
from tests.firmware.simdevice import EXIT_DEEPSLEEP, EXIT_RESET
from tools.mosquitto import Mosquitto


def test_the_drive_is_the_firmwares_unless_the_usb_write_pin_is_held(
    mosquitto: Mosquitto, flash: Callable[[str], Path]
) -> None:
    # boot.py's key (circuitpython.usb_write_pin): a button on GP22
    dev = CPDevice(flash("cp1"), cp_config(mosquitto.port, circuitpython={"usb_write_pin": 22}))
    assert "EDGELINE_USB_WRITE_PIN = 22" in (dev.flash / "settings.toml").read_text()
    # No boot.py yet (a drive fresh from the computer): read-only to code, nothing written.
    assert dev.run(timeout=30, EDGELINE_SIM_DURATION_S=1) == 0
    assert "DRIVE ERROR: CIRCUITPY is read-only to this code" in dev.text()
    assert not (dev.flash / "queue").exists() and not (dev.flash / "seq.dat").exists()
    # Pin held at reset: the computer keeps write access; the firmware still refuses.
    assert "stays writable from the computer" in dev.power_on(EDGELINE_SIM_HELD_PINS="22")
    dev.output = b""
    assert dev.run(timeout=30, EDGELINE_SIM_DURATION_S=1) == 0
    assert "DRIVE ERROR" in dev.text()
    # usb_write on the drive (made from the REPL): the same, until it is deleted.
    (dev.flash / "usb_write").write_text("")
    assert "stays writable from the computer" in dev.power_on()
    (dev.flash / "usb_write").unlink()
    # A plain reset: boot.py gives the code the drive and the firmware runs.
    assert "writable by the firmware" in dev.power_on()
    dev.output = b""
    assert dev.run(timeout=30, EDGELINE_SIM_DURATION_S=1) == 0, dev.text()
    assert "DRIVE ERROR" not in dev.text() and (dev.flash / "seq.dat").exists()


def test_settings_errors_name_the_settings_toml_key(flash: Callable[[str], Path]) -> None:
    fl = flash("cp1")
    dev = CPDevice(fl, None)
    dev.power_on()
    cases = {
        'EDGELINE_SITE = "s1"\n': "EDGELINE_DEVICE_ID",  # missing
        'EDGELINE_DEVICE_ID = "cp1"\nEDGELINE_SITE = "s1"\nEDGELINE_BROKER_HOST = "h"\n'
        'EDGELINE_SENSOR0_TYPE = "analog"\nEDGELINE_SENSOR0_PIN = 26\nEDGELINE_SAMPLE_RATE_HZ = "fast"\n': (
            "EDGELINE_SAMPLE_RATE_HZ"
        ),
        'EDGELINE_DEVICE_ID = "cp1"\nEDGELINE_SITE = "s1"\nEDGELINE_BROKER_HOST = "h"\n'
        'EDGELINE_SENSOR0_TYPE = "analog"\nEDGELINE_SENSOR0_PIN = 24\n': "EDGELINE_SENSOR0_PIN",  # CYW43 pin
        'EDGELINE_DEVICE_ID = "cp1"\nEDGELINE_SITE = "s1"\nEDGELINE_BROKER_HOST = "h"\n'
        'EDGELINE_SENSOR0_TYPE = "thermo"\n': "EDGELINE_SENSOR0_TYPE",
        'EDGELINE_DEVICE_ID = "cp1"\nEDGELINE_SITE = "s1"\nEDGELINE_BROKER_HOST = "h"\n'
        'EDGELINE_SENSOR0_TYPE = "analog"\nEDGELINE_SENSOR0_PIN = 26\nEDGELINE_WIFI_CONNECT_TIMEOUT_MS = 15000\n': (
            "EDGELINE_WIFI_CONNECT_TIMEOUT_MS = 15000 is too long for EDGELINE_WATCHDOG_MS = 8000"
        ),
        'EDGELINE_DEVICE_ID = "cp1"\nEDGELINE_SITE = "s1"\nEDGELINE_BROKER_HOST = "h"\n'
        'EDGELINE_SENSOR0_TYPE = "analog"\nEDGELINE_SENSOR0_PIN = 26\nEDGELINE_SAMPLE_DELTA = "maybe"\n': (
            "EDGELINE_SAMPLE_DELTA"
        ),
    }
    for text, key in cases.items():
        (fl / "settings.toml").write_text(text)
        dev.output = b""
        assert dev.run(timeout=30, EDGELINE_SIM_DURATION_S=1) == 0
        out = dev.text()
        assert "CONFIG ERROR: settings.toml:" in out and key in out, (key, out)
        assert "config.json" not in out and "'" + "sample.rate_hz" not in out


def test_deep_sleep_keeps_boot_and_sequence_in_sleep_memory(
    mosquitto: Mosquitto, gateway: GatewayStub, flash: Callable[[str], Path]
) -> None:
    cfg = cp_config(
        mosquitto.port,
        sample={"rate_hz": 50, "batch": 10},
        sleep={"enabled": True, "awake_samples": 30, "sleep_ms": 50, "ack_wait_ms": 5000},
    )
    fl = flash("cp1")
    dev = CPDevice(fl, cfg)
    dev.power_on()
    ends = []
    for _ in range(3):  # wake, capture, publish, deep sleep (= exit 3; the next run is the wake)
        rc = dev.run(timeout=60)
        assert rc == EXIT_DEEPSLEEP, dev.text()
        assert (fl / ".cpsim-wake").exists() and (fl / ".cpsim-sleep_memory").exists()
        st = dev.stats()
        ends.append((st["boot"], st["seq"]))
    assert {b for b, _ in ends} == {1}, ends
    frames = [r.frame for r in gateway.frames]
    seqs = sorted({f.seq for f in frames if f.type in (BIRTH, DATA, HEALTH)})
    assert seqs == list(range(len(seqs))) and seqs[-1] + 1 == ends[-1][1], seqs
    assert len([f for f in frames if f.type == BIRTH]) == 3
    # power-on (no wake alarm): a new boot, numbering from 0
    (fl / ".cpsim-wake").unlink()
    dev.output = b""
    CPDevice(fl, cp_config(mosquitto.port)).run(timeout=60, EDGELINE_SIM_DURATION_S=1)
    assert dev.stats()["boot"] == 2


def test_commands_set_rate_and_output_and_reboot(
    mosquitto: Mosquitto, gateway: GatewayStub, flash: Callable[[str], Path]
) -> None:
    cfg = cp_config(mosquitto.port, outputs=[{"name": "led", "pin": "LED"}, {"name": "relay", "pin": 12}])
    fl = flash("cp1")
    dev = CPDevice(fl, cfg, EDGELINE_SIM_STOP_FILE=str(fl / "stop"))
    dev.power_on()
    dev.start()
    try:
        gateway.wait_for(lambda g: len(g.of(DATA)) >= 2, what="DATA")
        gateway.send_cmd("cp1", CMD_SET_RATE, 25000)  # mHz
        gateway.wait_for(lambda g: any(r.frame.fields["period_us"] == 40000 for r in g.of(DATA)), what="25 Hz")
        n = len(gateway.of(HEALTH))
        gateway.send_cmd("cp1", CMD_SET_OUTPUT, 1, 1, 300)
        # two HEALTH frames later (health_s = 2) the 300 ms pulse has run out on the device
        gateway.wait_for(lambda g: len(g.of(HEALTH)) >= n + 2, what="two HEALTH frames after the command")
        (fl / "stop").write_text("")
        assert dev.wait(timeout=30) == 0, dev.text()
    finally:
        dev.kill()
    st = dev.stats()
    relay = next(o for o in st["outputs"] if o[0] == 12)
    levels = [lvl for _t, lvl in relay[2]]
    assert levels == [0, 1, 0], relay  # off at start, on, off again after 300 ms
    on, off = relay[2][1][0], relay[2][2][0]
    assert 250 <= (off - on) % (1 << 29) <= 600
    # reboot: microcontroller.reset()
    dev2 = CPDevice(fl, None).start()
    try:
        gateway.wait_for(lambda g: len([r for r in g.of(BIRTH) if r.frame.boot == 2]) >= 1, what="boot 2")
        gateway.send_cmd("cp1", CMD_REBOOT)
        assert dev2.wait(timeout=30) == EXIT_RESET, dev2.text()
    finally:
        dev2.kill()


def test_the_watchdog_resets_a_hung_board_and_the_next_boot_goes_on(
    mosquitto: Mosquitto, gateway: GatewayStub, flash: Callable[[str], Path]
) -> None:
    cfg = cp_config(mosquitto.port, watchdog_ms=3000, broker={"timeout_ms": 1000}, wifi={"connect_timeout_ms": 2000})
    fl = flash("cp1")
    dev = CPDevice(fl, cfg)
    dev.power_on()
    rc = dev.run(timeout=60, EDGELINE_SIM_HANG_AT_S=2)
    assert rc in (-9, 137), dev.text()  # microcontroller.watchdog reset the board
    assert "main loop hangs" in dev.text() and "watchdog expired" in dev.text()
    dev.output = b""
    assert dev.run(timeout=60, EDGELINE_SIM_DURATION_S=2, EDGELINE_SIM_DRAIN_S=10) == 0, dev.text()
    assert dev.stats()["boot"] == 2
    gateway.wait_for(lambda g: any(r.frame.boot == 2 for r in g.of(DATA)), what="DATA of boot 2")
