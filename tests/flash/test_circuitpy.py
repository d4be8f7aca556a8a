"""``circuitpy``: edgeline onto a CIRCUITPY drive (a tmp directory with a boot_out.txt here).

The sources are a copy of the repository's (firmware/cp/code.py and boot.py get stand-ins
in the copy if the repository has none yet); the pinned libraries come from the real
archive cache, the settings.toml rule and the validator from the real firmware.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import shutil
import subprocess
import textwrap
import time
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

from tools.fetch_upy_deps import CP_PINS, DEFAULT_ARCHIVES, DEFAULT_CP_CACHE
from tools.flash.build import ROOT, board_sources
from tools.flash.cli import main
from tools.flash.commands import State
from tools.flash.cpsettings import quote
from tools.flash.devices import config_data, firmware_on_path, firmware_validator, load_device

WIFI_SECRET = "wifi-Secret-9b1e"
BROKER_SECRET = "broker-Secret-77ac"
BOOT_OUT = "Adafruit CircuitPython 9.2.1 on 2024-11-20; Raspberry Pi Pico W with rp2040\nBoard ID:raspberry_pi_pico_w\n"
SSID = 'shop "floor" \\ 2'
DEVICES = """
[defaults]
arch = "armv6m"
[defaults.config]
site = "plant1"
wifi = { ssid = SSID, password_file = "secrets/wifi.txt" }
broker = { host = "192.168.1.10", port = 1883, user = "cp-01", password_file = "secrets/broker.txt" }

[devices.cp-01.config]
sample = { rate_hz = 12.5, batch = 16, delta = true }
sensors = [
  { type = "analog", name = "level", pin = 26, scale = 5.035e-5 },
  { type = "mpu6050", name = "imu", i2c = { id = 0, scl = 5, sda = 4 } },
]
outputs = [{ name = "valve", pin = 16, active_high = false }]
queue = { flash_frames = 64 }
"""
SETTINGS = "settings.toml"
STAND_IN = {"code.py": "import sensorfw\n", "boot.py": "import storage\n"}


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """The board sources in a tree of the test's own."""
    root = tmp_path / "repo"
    for name in ("firmware", "shared_protocol"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    cp = root / "firmware" / "cp"
    cp.mkdir(exist_ok=True)
    for name, text in STAND_IN.items():
        if not (cp / name).exists():  # firmware/cp is being written: a stand-in here only
            (cp / name).write_text(text)
    return root


@pytest.fixture
def drive(tmp_path: Path) -> Path:
    path = tmp_path / "CIRCUITPY"
    path.mkdir()
    (path / "boot_out.txt").write_text(BOOT_OUT)
    return path


@pytest.fixture
def devices(tmp_path: Path) -> Path:
    (tmp_path / "secrets").mkdir()
    for name, value in (("wifi.txt", WIFI_SECRET), ("broker.txt", BROKER_SECRET)):
        (tmp_path / "secrets" / name).write_text(value + "\n")
        (tmp_path / "secrets" / name).chmod(0o600)
    path = tmp_path / "devices.toml"
    path.write_text(textwrap.dedent(DEVICES).replace("SSID", json.dumps(SSID)))
    return path


def flash(
    src: Path, devices: Path, drive: Path, capsys: pytest.CaptureFixture[str], *extra: str, archives: Path | None = None
) -> tuple[int, str]:
    """Run the command; (exit code, everything it printed)."""
    out = io.StringIO()
    args = ["circuitpy", "--device", "cp-01", "--config", str(devices), "--drive", str(drive), *extra]
    state = State(root=src, out=out, archives=archives or DEFAULT_ARCHIVES)
    code = main(args, state=state)
    captured = capsys.readouterr()
    return code, out.getvalue() + captured.out + captured.err


def drive_files(drive: Path) -> dict[str, bytes]:
    return {p.relative_to(drive).as_posix(): p.read_bytes() for p in drive.rglob("*") if p.is_file()}


def written(text: str) -> list[str]:
    return [line.split()[1] for line in text.splitlines() if line.strip().startswith("write ")]


def settings(drive: Path) -> dict[str, Any]:
    return tomllib.loads((drive / SETTINGS).read_text(encoding="utf-8"))


def test_drive_gets_entry_points_packages_libraries_and_settings(
    src: Path, devices: Path, drive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = flash(src, devices, drive, capsys)
    assert code == 0, text
    files = drive_files(drive)
    for name in ("code.py", "boot.py"):
        assert files[name] == (src / "firmware" / "cp" / name).read_bytes()

    sensorfw = src / "firmware" / "sensorfw"
    expected = {
        f"lib/sensorfw/{rel}": (sensorfw / rel).read_bytes()
        for rel in (p.relative_to(sensorfw).as_posix() for p in sensorfw.rglob("*.py"))
        if not rel.startswith("port/") and not fnmatch(rel, "boards/sim*.py") and not fnmatch(rel, "boards/cp_sim*.py")
    }
    assert {p: d for p, d in files.items() if p.startswith("lib/sensorfw/")} == expected
    assert "lib/sensorfw/cpport/settings.py" in files
    assert "lib/sensorfw/boards/pico_w.py" in files
    assert "lib/sensorfw/boards/esp32_devkit.py" in files
    assert not any(p.startswith("lib/sensorfw/port/") for p in files)
    assert "lib/sensorfw/boards/sim.py" not in files

    protocol = {p for p in files if p.startswith("lib/shared_protocol/")}
    assert "lib/shared_protocol/crc.py" in protocol
    assert all(p.endswith(".py") for p in protocol)  # no .pyi, no py.typed
    assert "lib/shared_protocol/np_decode.py" not in protocol  # CPython + numpy only
    for path in protocol:
        assert files[path] == (src / path.removeprefix("lib/")).read_bytes()

    for pin in CP_PINS:  # byte for byte what the unix-port tests run
        for member in pin.members:
            assert files[f"lib/{member}"] == (DEFAULT_CP_CACHE / member).read_bytes(), member
        assert f"{pin.project} {pin.version} (pinned, sha256 {pin.sha256})" in text

    top = {p.split("/")[0] for p in files}
    assert top == {"boot_out.txt", "code.py", "boot.py", "otaslots.py", SETTINGS, "lib"}
    assert files["otaslots.py"] == (src / "firmware" / "otaslots.py").read_bytes()  # the A/B loader's logic
    assert "ota.key" not in files and "the board refuses firmware updates over the air" in text  # no [ca] dir
    assert not any(".edgeline-part" in p for p in files)
    assert written(text)[-3:] == ["boot.py", "otaslots.py", "code.py"]  # code.py last: auto-reload runs the new set
    assert f"{len(files) - 1} written, 0 unchanged, 0 removed" in text
    assert "board profile cp_pico_w" in text


def test_settings_toml_holds_ints_bare_and_the_rest_as_strings(
    src: Path, devices: Path, drive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = flash(src, devices, drive, capsys)
    assert code == 0, text
    raw = (drive / SETTINGS).read_text(encoding="utf-8")
    assert "\nEDGELINE_BROKER_PORT = 1883\n" in raw
    assert '\nEDGELINE_SAMPLE_RATE_HZ = "12.5"\n' in raw
    values = settings(drive)
    assert values["EDGELINE_DEVICE_ID"] == "cp-01"
    assert values["EDGELINE_BROKER_HOST"] == "192.168.1.10"
    assert values["EDGELINE_SAMPLE_BATCH"] == 16
    assert values["EDGELINE_SAMPLE_DELTA"] == "true"
    assert values["EDGELINE_OUTPUT0_ACTIVE_HIGH"] == "false"
    assert values["EDGELINE_SENSOR0_SCALE"] == "5.035e-05"
    assert values["EDGELINE_SENSOR1_I2C_SCL"] == 5
    assert values["CIRCUITPY_WIFI_SSID"] == SSID  # quotes and backslash escaped
    assert values["CIRCUITPY_WIFI_PASSWORD"] == WIFI_SECRET  # read from its _file
    assert values["EDGELINE_BROKER_PASSWORD"] == BROKER_SECRET
    assert "EDGELINE_SENSOR1_DLPF" not in values  # absent stays absent
    assert all(type(v) in (int, str) for v in values.values())  # all CircuitPython reads
    assert (drive / SETTINGS).stat().st_mode & 0o777 == 0o600
    assert WIFI_SECRET not in text
    assert BROKER_SECRET not in text


def test_settings_toml_loads_through_the_firmware_into_the_same_config(
    src: Path, devices: Path, drive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = flash(src, devices, drive, capsys)
    assert code == 0, text
    values = settings(drive)
    with firmware_on_path():
        cp_settings = importlib.import_module("sensorfw.cpport.settings")
        profile = importlib.import_module("sensorfw.boards.cp_pico_w")
        core = importlib.import_module("sensorfw.core.config")
    loaded = cp_settings.load(values.get, ".", True, profile)  # what code.py does, os.getenv -> the file
    device = load_device(devices, "cp-01")
    config = json.loads(config_data(device))  # what would be config.json on MicroPython
    assert loaded == core.validate(config, ".", True, profile)
    assert loaded == firmware_validator(board="cp_pico_w")(config, True)
    assert loaded["sample"]["rate_hz"] == 12.5
    assert loaded["outputs"][0]["active_high"] is False


def test_second_run_writes_nothing(src: Path, devices: Path, drive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert flash(src, devices, drive, capsys)[0] == 0
    before = drive_files(drive)
    code, text = flash(src, devices, drive, capsys)
    assert code == 0, text
    assert written(text) == []
    assert f"0 written, {len(before) - 1} unchanged, 0 removed" in text
    assert drive_files(drive) == before


def test_changed_config_rewrites_only_settings_toml(
    src: Path, devices: Path, drive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert flash(src, devices, drive, capsys)[0] == 0
    devices.write_text(devices.read_text().replace("port = 1883", "port = 8883"))
    code, text = flash(src, devices, drive, capsys)
    assert code == 0, text
    assert written(text) == [SETTINGS]
    assert "1 written" in text
    assert settings(drive)["EDGELINE_BROKER_PORT"] == 8883


def test_stale_modules_go_and_everything_else_stays(
    src: Path, devices: Path, drive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert flash(src, devices, drive, capsys)[0] == 0
    stale = [
        "lib/sensorfw/old_module.py",
        "lib/sensorfw/gone/__init__.py",
        "lib/sensorfw/gone/deeper/module.py",
        "lib/sensorfw/port/board.mpy",  # from a MicroPython build
        "lib/shared_protocol/np_decode.py",
        "lib/sensorfw/core/.app.py.edgeline-part",  # a copy cut off by a pulled cable
    ]
    others = ["lib/adafruit_display_text/label.py", "lib/neopixel.mpy", "data/log.csv", "queue/seg0.bin"]
    for path in stale + others:
        (drive / path).parent.mkdir(parents=True, exist_ok=True)
        (drive / path).write_text("x = 1\n")
    code, text = flash(src, devices, drive, capsys)
    assert code == 0, text
    for path in stale:
        assert not (drive / path).exists(), path
        assert f"remove  {path}" in text
    assert not (drive / "lib/sensorfw/gone").exists()  # emptied folders go too
    assert not (drive / "lib/sensorfw/port").exists()
    for path in others:
        assert (drive / path).read_text() == "x = 1\n", path
    assert f"0 written, {len(drive_files(drive)) - 1 - len(others)} unchanged, {len(stale)} removed" in text


def test_other_keys_of_the_drive_settings_are_kept(
    src: Path, devices: Path, drive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (drive / SETTINGS).write_text(
        'CIRCUITPY_WEB_API_PASSWORD = "web-Secret-1"\n'
        "MY_APP_LEVEL = 15\n"
        "EDGELINE_USB_WRITE_PIN = 15\n"  # boot.py's key: now from devices.toml (circuitpython.usb_write_pin)
        "EDGELINE_SENSOR5_PIN = 3\n"  # a sensor devices.toml no longer has
        'CIRCUITPY_WIFI_SSID = "old"\n'
        "RATIO = 0.5\n"  # CircuitPython cannot read a float
    )
    code, text = flash(src, devices, drive, capsys)
    assert code == 0, text
    values = settings(drive)
    assert values["CIRCUITPY_WEB_API_PASSWORD"] == "web-Secret-1"
    assert values["MY_APP_LEVEL"] == 15
    assert "EDGELINE_USB_WRITE_PIN" not in values  # the rule's key: devices.toml has none
    assert "EDGELINE_SENSOR5_PIN" not in values
    assert values["CIRCUITPY_WIFI_SSID"] == SSID
    assert "RATIO" not in values
    assert "kept the drive's other keys: CIRCUITPY_WEB_API_PASSWORD, MY_APP_LEVEL" in text
    assert "left out RATIO" in text
    assert "web-Secret-1" not in text


def test_a_config_key_without_a_settings_key_is_named(
    src: Path, devices: Path, drive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    devices.write_text(devices.read_text().replace('user = "cp-01"', 'user = "cp-01", client_id = "x"'))
    code, text = flash(src, devices, drive, capsys)
    assert code == 1
    assert "device cp-01: config.broker.client_id: no settings.toml key for it on CircuitPython" in text
    assert set(drive_files(drive)) == {"boot_out.txt"}  # nothing written


def test_more_sensors_than_settings_toml_numbers_are_named(
    src: Path, devices: Path, drive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pulses = ", ".join(f'{{ type = "pulse", name = "p{i}", pin = {i} }}' for i in range(6, 15))
    body = devices.read_text()
    start = body.index("sensors = [")
    end = body.index("]\n", body.index("i2c = {", start)) + 2
    devices.write_text(body[:start] + f"sensors = [{pulses}]\n" + body[end:])
    code, text = flash(src, devices, drive, capsys)
    assert code == 1, text
    assert "config.sensors[8].type" in text
    assert "settings.toml holds at most 8 sensors" in text


@pytest.mark.parametrize(
    "case",
    [
        ("nope", "does not exist: plug the board in"),
        ("boot_out.txt", "is not a directory"),
        ("sub", "has no boot_out.txt, which CircuitPython writes at every start"),
    ],
)
def test_what_is_not_a_circuitpy_drive_is_refused(
    src: Path, devices: Path, drive: Path, capsys: pytest.CaptureFixture[str], case: tuple[str, str]
) -> None:
    name, message = case
    (drive / "sub").mkdir()
    code, text = flash(src, devices, drive / name, capsys)
    assert code == 1
    assert message in text
    assert set(drive_files(drive)) == {"boot_out.txt"}


def test_force_writes_to_a_drive_without_boot_out(
    src: Path, devices: Path, drive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (drive / "boot_out.txt").unlink()
    code, text = flash(src, devices, drive, capsys, "--force")
    assert code == 0, text
    assert (drive / "code.py").is_file()


@contextlib.contextmanager
def read_only(drive: Path) -> Iterator[None]:
    """The drive read-only to this computer, as a CIRCUITPY whose boot.py gave it to the
    firmware: a directory without write permission, or for root (who writes there anyway)
    a read-only tmpfs mounted over it."""
    if os.geteuid() != 0:
        drive.chmod(0o555)
        try:
            yield
        finally:
            drive.chmod(0o755)
        return
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(drive)], check=True)
    try:
        (drive / "boot_out.txt").write_text("Adafruit CircuitPython 9.2.1 on 2024-11-20; Raspberry Pi Pico W\n")
        subprocess.run(["mount", "-o", "remount,ro", str(drive)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(drive)], check=True)


def test_a_read_only_drive_is_refused(
    src: Path, devices: Path, drive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with read_only(drive):
        code, text = flash(src, devices, drive, capsys)
    assert code == 1
    assert "is not writable" in text
    assert "USB-write pin" in text


def test_a_missing_pinned_archive_names_the_fix(
    src: Path, devices: Path, drive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = flash(src, devices, drive, capsys, archives=tmp_path / "no-archives")
    assert code == 1
    assert "adafruit-circuitpython-minimqtt 8.1.0 (pinned)" in text
    assert "tools/fetch_upy_deps.py" in text
    assert set(drive_files(drive)) == {"boot_out.txt"}


def test_a_missing_entry_point_is_named(
    src: Path, devices: Path, drive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (src / "firmware" / "cp" / "code.py").unlink()
    code, text = flash(src, devices, drive, capsys)
    assert code == 1
    assert "firmware/cp/code.py is missing" in text
    assert set(drive_files(drive)) == {"boot_out.txt"}


@pytest.mark.parametrize(
    "text", ["plain", 'a "quoted" one', "back\\slash", "tab\tnew\nline\r\f\b", "\x00\x1f\x7f", "œuvre ☃"]
)
def test_quoted_strings_read_back_the_same(text: str) -> None:
    quoted = quote(text)
    assert tomllib.loads(f"KEY = {quoted}\n")["KEY"] == text
    assert all(ch >= " " and ch != "\x7f" for ch in quoted)  # one line, no raw control characters


def test_micropython_builds_leave_circuitpython_code_out(src: Path) -> None:
    paths = [board_path for _, board_path in board_sources(src)]
    assert "sensorfw/core/app.py" in paths
    assert not any(p.startswith(("cp/", "sensorfw/cpport/", "sensorfw/boards/cp_")) for p in paths)


TLS_DEVICES = """
[ca]
dir = "ca"

[devices.cp-tls]
arch = "xtensawin"
[devices.cp-tls.config]
site = "plant1"
wifi = { ssid = "shop", password_file = "secrets/wifi.txt" }
broker = { host = "192.168.1.10", tls = { server_name = "gateway.plant1" } }
sensors = [{ type = "analog", name = "level", pin = 4 }]
"""


def test_a_tls_device_gets_pem_certificates_and_settings_naming_them(
    src: Path, devices: Path, drive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from tools.flash.pki import FleetCA

    tls_devices = devices.with_name("tls-devices.toml")
    tls_devices.write_text(TLS_DEVICES)
    ca = FleetCA.init(devices.parent / "ca", "plant1")
    out = io.StringIO()
    args = ["circuitpy", "--device", "cp-tls", "--config", str(tls_devices), "--drive", str(drive)]
    assert main(args, state=State(root=src, out=out, archives=DEFAULT_ARCHIVES)) == 0, out.getvalue()
    text = out.getvalue() + capsys.readouterr().out
    assert "certificate issued for cp-tls" in text
    files = drive_files(drive)
    cert = x509.load_pem_x509_certificate(files["certs/device.pem"])
    assert cert.subject.rfc4514_string() == "CN=cp-tls" and ca.verify(cert.public_bytes(serialization.Encoding.DER))
    assert files["certs/ca.pem"] == ca.cert_pem
    key = serialization.load_pem_private_key(files["certs/device-key.pem"], password=None)
    assert key.public_key() == cert.public_key()
    assert (drive / "certs" / "device-key.pem").stat().st_mode & 0o777 == 0o600
    assert files["certs/device-key.pem"].decode().splitlines()[1] not in text  # the key is never shown
    written_order = written(text)
    assert written_order.index("certs/device-key.pem") < written_order.index(SETTINGS)  # files before the settings
    got = settings(drive)
    assert got["EDGELINE_BROKER_TLS_CA"] == "certs/ca.pem"
    assert got["EDGELINE_BROKER_TLS_CERT"] == "certs/device.pem"
    assert got["EDGELINE_BROKER_TLS_KEY"] == "certs/device-key.pem"
    assert got["EDGELINE_BROKER_TLS_SERVER_NAME"] == "gateway.plant1"
    assert "EDGELINE_BROKER_USER" not in got and "EDGELINE_BROKER_PORT" not in got  # 8883 by default with TLS
    # the OTA key from the device's private folder, as provision writes it on MicroPython
    assert files["ota.key"] == (devices.parent / "ca" / "devices" / "cp-tls" / "ota.key").read_bytes()
    assert len(files["ota.key"]) == 32 and (drive / "ota.key").stat().st_mode & 0o777 == 0o600
    assert written_order.index("ota.key") < written_order.index("code.py")
    # a second run reuses the certificate: nothing is written
    out = io.StringIO()
    assert main(args, state=State(root=src, out=out, archives=DEFAULT_ARCHIVES)) == 0
    assert "certificate reused for cp-tls" in out.getvalue() and "0 written" in out.getvalue()


def test_the_drive_runs_the_code_just_copied_not_an_ota_slot(
    src: Path, devices: Path, drive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (drive / "a" / "lib").mkdir(parents=True)
    (drive / "ota.json").write_text('{"active": "a", "trial": ""}')
    (drive / "ota.json.tmp").write_text('{"active": "a"')
    code, text = flash(src, devices, drive, capsys)
    assert code == 0, text
    assert not (drive / "ota.json").exists() and not (drive / "ota.json.tmp").exists()
    assert "remove  ota.json (the board runs the code just copied" in text
    assert (drive / "a" / "lib").is_dir()  # a slot is left alone (the next update replaces it)


def test_circuitpython_build_packs_as_a_firmware_bundle(
    src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.updates.bundle import Counters, load_trusted_keys, verify_bundle
    from tools.release.cli import main as release_main

    out = io.StringIO()
    build_dir = tmp_path / "build" / "circuitpython"
    args = ["build", "--arch", "circuitpython", "--build-dir", str(build_dir)]
    assert main(args, state=State(root=src, out=out, archives=DEFAULT_ARCHIVES)) == 0, out.getvalue()
    assert "build circuitpython:" in out.getvalue()
    manifest = json.loads((build_dir / "manifest.json").read_text())
    assert manifest["arch"] == "circuitpython"
    assert {"code.py", "boot.py", "otaslots.py", "lib/sensorfw/cpport/entry.py"} <= set(manifest["files"])
    assert (build_dir / "lib/sensorfw/core/ota.py").read_bytes() == (src / "firmware/sensorfw/core/ota.py").read_bytes()

    keys = tmp_path / "keys"
    assert release_main(["keygen", "--out", str(keys / "rel")]) == 0
    pack = ["pack", "firmware", "--key", str(keys / "rel.key"), "--counter", "4", "--version", "cp-1.1"]
    pack += ["--out", str(tmp_path)]
    # a MicroPython arch is refused for a CircuitPython build
    assert release_main([*pack, "--build", str(build_dir), "--arch", "armv6m"]) == 1
    assert "is a build for circuitpython, not --arch armv6m" in capsys.readouterr().err
    assert release_main([*pack, "--build", str(build_dir), "--arch", "circuitpython"]) == 0
    bundle = verify_bundle(
        tmp_path / "sensorfw-circuitpython-cp-1.1.bundle",
        keys=load_trusted_keys([keys / "rel.pub"]),
        site="plant1",
        gateway_id="gw1",
        counters=Counters(tmp_path / "counters.json"),
        now=time.time(),
        max_bytes=1 << 24,
    )
    assert bundle.firmware is not None and bundle.firmware["arch"] == "circuitpython"
    paths = {f.path for f in bundle.files}
    assert paths == set(manifest["files"]) - {"code.py", "boot.py", "otaslots.py"}  # the loader files stay
