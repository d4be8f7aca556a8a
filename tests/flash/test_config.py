"""devices.toml -> config.json: secrets from files, the firmware's own validator, no leaks."""

from __future__ import annotations

import json
import logging
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tools.flash.build import ARCHES, ROOT
from tools.flash.cli import main
from tools.flash.devices import ARCH_BOARDS, DeviceConfigError, firmware_validator, load_device, render_config
from tools.flash.errors import FlashError

WIFI_SECRET = "wifi-Secret-7f3a9"
BROKER_SECRET = "broker-Secret-c41d2"


def write_secrets(base: Path, **secrets: str) -> None:
    (base / "secrets").mkdir(exist_ok=True)
    for name, value in secrets.items():
        path = base / "secrets" / name
        path.write_text(value + "\n")
        path.chmod(0o600)


def devices_toml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "devices.toml"
    path.write_text(textwrap.dedent(body))
    write_secrets(tmp_path, **{"wifi.txt": WIFI_SECRET, "broker.txt": BROKER_SECRET})
    return path


GOOD = """
[defaults]
arch = "xtensawin"
[defaults.config]
site = "plant1"
wifi = { ssid = "factory", password_file = "secrets/wifi.txt" }
broker = { host = "192.168.1.10", port = 1883 }

[devices.dev1]
port = "/dev/ttyUSB0"
[devices.dev1.config]
broker = { user = "dev1", password_file = "secrets/broker.txt" }
sensors = [{ type = "analog", name = "temp", pin = 34 }]
"""


def test_example_devices_file_renders_valid_configs(tmp_path: Path) -> None:
    shutil.copy(ROOT / "devices.example.toml", tmp_path / "devices.toml")
    write_secrets(tmp_path, **{"wifi.txt": WIFI_SECRET})
    validate = firmware_validator()
    for device_id in ("pump-01", "tank-03"):
        device = load_device(tmp_path / "devices.toml", device_id)
        assert device.ca.dir == tmp_path / "ca"
        config = json.loads(render_config(device))
        assert config["device_id"] == device_id
        assert config["wifi"]["password"] == WIFI_SECRET
        assert "password_file" not in config["wifi"]
        # mutual TLS: the device's certificate files, the broker certificate's name, no password
        assert config["broker"]["tls"] == {
            "ca": "certs/ca.der",
            "cert": "certs/device.der",
            "key": "certs/device.key",
            "server_name": "gateway.plant1",
        }
        assert "password" not in config["broker"] and "user" not in config["broker"]
        full = validate(config, True)  # what the board will compute at boot
        assert isinstance(full, dict)
        assert full["broker"]["host"] == "192.168.4.1"  # broker.device_address of gateway.example.toml
        assert full["broker"]["port"] == 8883  # broker.device_port with [broker.tls]


def test_defaults_merge_under_device_tables(tmp_path: Path) -> None:
    device = load_device(devices_toml(tmp_path, GOOD), "dev1")
    assert device.port == "/dev/ttyUSB0"
    assert device.arch == "xtensawin"
    assert device.config["broker"] == {"host": "192.168.1.10", "port": 1883, "user": "dev1", "password": BROKER_SECRET}
    data = render_config(device)
    assert json.loads(data) == device.config
    assert data == render_config(device)  # deterministic bytes


def _run_cli(args: list[str], capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> tuple[int, str]:
    caplog.set_level(logging.DEBUG)
    code = main(args)
    out, err = capfd.readouterr()
    return code, out + err + caplog.text


def test_bad_config_is_rejected_by_name_and_secrets_stay_out_of_the_output(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    bad = GOOD.replace("port = 1883", "port = 70000")
    path = devices_toml(tmp_path, bad)
    with pytest.raises(DeviceConfigError) as caught:
        render_config(load_device(path, "dev1"))
    assert caught.value.device == "dev1"
    assert "broker.port" in str(caught.value)
    code, text = _run_cli(["config", "--device", "dev1", "--config", str(path), "--check"], capfd, caplog)
    assert code == 1
    assert "device dev1: config: rejected by the firmware" in text
    assert "'broker.port' must be an integer 1..65535" in text
    assert WIFI_SECRET not in text
    assert BROKER_SECRET not in text


def test_a_secret_echoed_by_the_validator_is_redacted(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # The broker user equals the broker password and is too long: the firmware's message
    # quotes the user value, which is the secret.
    long_secret = "S" * 70
    path = devices_toml(tmp_path, GOOD.replace('user = "dev1"', f'user = "{long_secret}"'))
    write_secrets(tmp_path, **{"broker.txt": long_secret})
    code, text = _run_cli(["config", "--device", "dev1", "--config", str(path), "--check"], capfd, caplog)
    assert code == 1
    assert "broker.user" in text
    assert long_secret not in text
    assert "***" in text


def test_valid_config_check_prints_keys_not_values(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    path = devices_toml(tmp_path, GOOD)
    code, text = _run_cli(["config", "--device", "dev1", "--config", str(path), "--check"], capfd, caplog)
    assert code == 0, text
    assert "config.json for dev1: valid" in text
    assert "broker" in text
    assert WIFI_SECRET not in text
    assert BROKER_SECRET not in text
    assert "192.168.1.10" not in text


def test_inline_secret_is_refused(tmp_path: Path) -> None:
    path = devices_toml(tmp_path, GOOD.replace('password_file = "secrets/wifi.txt"', 'password = "hunter2"'))
    with pytest.raises(DeviceConfigError) as caught:
        load_device(path, "dev1")
    assert caught.value.where == "config.wifi.password"
    assert "password_file" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_missing_secret_file_is_named(tmp_path: Path) -> None:
    path = devices_toml(tmp_path, GOOD.replace("secrets/broker.txt", "secrets/nope.txt"))
    with pytest.raises(
        DeviceConfigError, match=r"config\.broker\.password_file: secret file .*nope\.txt does not exist"
    ):
        load_device(path, "dev1")


def test_wifi_is_required_for_boards_but_not_for_the_unix_port(tmp_path: Path) -> None:
    body = GOOD.replace('wifi = { ssid = "factory", password_file = "secrets/wifi.txt" }\n', "")
    device = load_device(devices_toml(tmp_path, body), "dev1")
    with pytest.raises(DeviceConfigError, match=r"wifi"):
        render_config(device)  # xtensawin
    assert json.loads(render_config(device, arch="native"))["device_id"] == "dev1"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.replace("[devices.dev1]\n", "[devices.dev1]\nprot = 1\n"), r"prot: unknown key"),
        (lambda s: s.replace('arch = "xtensawin"', 'arch = "esp8266"'), r"arch: must be one of"),
        (lambda s: s + '\n[devices."bad id!"]\n', r"device bad id!: id: must be 1-32 characters of A-Z"),
        (lambda s: s.replace("[devices.dev1.config]\n", '[devices.dev1.config]\ndevice_id = "other"\n'), r"device_id"),
    ],
)
def test_device_table_mistakes_are_named(tmp_path: Path, edit: Callable[[str], str], message: str) -> None:
    path = devices_toml(tmp_path, edit(GOOD))
    device_id = "bad id!" if "bad id!" in message else "dev1"
    with pytest.raises(FlashError, match=message):
        load_device(path, device_id)


def test_unknown_device_lists_known_ones(tmp_path: Path) -> None:
    with pytest.raises(FlashError, match=r"'dev9' is not in .*devices: dev1"):
        load_device(devices_toml(tmp_path, GOOD), "dev9")


def test_every_arch_has_its_board_profile() -> None:
    assert set(ARCH_BOARDS) == set(ARCHES)


def test_pins_are_checked_for_the_board_of_the_arch(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # GPIO 14 is an ADC2 pin on the ESP32 (dead while Wi-Fi runs) and no ADC at all on the
    # Pico W; the virtual board (native) emulates an ESP32 DevKit, with its rules
    path = devices_toml(tmp_path, GOOD.replace("pin = 34", "pin = 14"))
    device = load_device(path, "dev1")
    with pytest.raises(DeviceConfigError) as caught:
        render_config(device)  # the device's arch: xtensawin
    assert "'sensors[0].pin' = 14 is an ADC2 pin on esp32_devkit, unusable while Wi-Fi is on" in str(caught.value)
    assert "use one of 32, 33, 34, 35, 36, 39" in str(caught.value)
    with pytest.raises(DeviceConfigError, match=r"'sensors\[0\]\.pin' = 14 is not an ADC input on pico_w"):
        render_config(device, arch="armv6m")
    with pytest.raises(DeviceConfigError, match="is an ADC2 pin on esp32_devkit"):
        render_config(device, arch="native")
    code, text = _run_cli(["config", "--device", "dev1", "--config", str(path), "--check"], capfd, caplog)
    assert code == 1
    assert "is an ADC2 pin on esp32_devkit" in text
    good = devices_toml(tmp_path, GOOD)
    code, text = _run_cli(
        ["config", "--device", "dev1", "--config", str(good), "--check", "--arch", "native"], capfd, caplog
    )
    assert code == 0, text
    assert "config.json for dev1: valid" in text
    assert WIFI_SECRET not in text


@pytest.mark.parametrize(
    ("arch", "edit", "message"),
    [
        ("armv6m", "watchdog_ms = 9000", "'watchdog_ms' = 9000 is above the pico_w watchdog's maximum of 8388 ms"),
        ("xtensawin", "watchdog_ms = 3000", "set watchdog_ms to at least 5000 or broker.timeout_ms to at most 1000"),
        ("xtensawin", "queue = { flash_frames = 4096 }", "more than the 24576 B budget of esp32_devkit"),
        ("armv6m", "queue = { flash_frames = 4096 }", "more than the 49152 B budget of pico_w"),
    ],
)
def test_board_limits_are_checked_for_the_arch(tmp_path: Path, arch: str, edit: str, message: str) -> None:
    body = GOOD.replace("pin = 34", "pin = 26" if arch == "armv6m" else "pin = 34")
    body = body.replace("[devices.dev1.config]\n", f"[devices.dev1.config]\n{edit}\n")
    device = load_device(devices_toml(tmp_path, body), "dev1")
    with pytest.raises(DeviceConfigError) as caught:
        render_config(device, arch=arch)
    assert message in str(caught.value)
    if arch == "armv6m":  # the virtual board (native) is an ESP32 DevKit, with other pins
        return
    with pytest.raises(DeviceConfigError) as again:
        render_config(device, arch="native")  # the same rules on the virtual board
    assert message in str(again.value)
