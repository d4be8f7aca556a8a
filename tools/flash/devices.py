"""devices.toml: per-device settings, secrets kept in separate files, and config.json.

Format (docs/flashing.md has the full description, devices.example.toml an example)::

    [defaults]                  # merged under every device (tables merge key by key)
    arch = "xtensawin"
    [defaults.config]           # keys of the firmware's config.json (docs/firmware.md)
    site = "plant1"

    [devices.esp32-01]
    port = "/dev/ttyUSB0"
    [devices.esp32-01.config]
    wifi = { ssid = "factory", password_file = "secrets/wifi.txt" }

``broker.tls = true`` (or a table ``{ server_name = "gateway.plant1" }``) makes the device use
mutual TLS: provisioning puts a certificate from the site CA on the board and config.json gets
the ``broker.tls`` block naming those files (tools/flash/device_certs.py). Where the CA lives::

    [ca]
    dir = "ca"                  # relative to devices.toml (edgeline-flash ca init --dir ca)
    device_days = 90            # lifetime of device certificates

Any config key ending in ``_file`` is a secret read from that file (relative to
devices.toml, trailing newline removed) and written under the key without the suffix. A
secret-looking key (``password``, ``secret``, ``token``, ``psk``) given inline is refused:
devices.toml tends to be committed, secrets must not be. Secret values are never printed:
every message built from a device's config goes through ``Secrets.redact``.
"""

from __future__ import annotations

import importlib
import json
import re
import stat
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.flash.build import ARCHES, ROOT
from tools.flash.device_certs import tls_config
from tools.flash.errors import FlashError
from tools.flash.pki import CA_DAYS, DEVICE_DAYS

DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")  # shared_protocol/topics.py ids
SECRET_KEY = re.compile(r"(password|passwd|secret|token|psk)$", re.IGNORECASE)
FILE_SUFFIX = "_file"
DEVICE_KEYS = frozenset({"port", "arch", "config"})
TOP_TABLES = frozenset({"defaults", "devices", "ca"})
CA_KEYS = frozenset({"dir", "device_days"})
CONFIG_NAME = "config.json"
#: config.json key that carries the device id (docs/firmware.md)
DEVICE_ID_KEY = "device_id"


class DeviceConfigError(FlashError):
    """A device's settings are wrong: ``device`` names it, ``where`` the key or file."""

    def __init__(self, device: str, where: str, problem: str) -> None:
        self.device = device
        self.where = where
        self.problem = problem
        super().__init__(f"device {device}: {where}: {problem}")


@dataclass
class Secrets:
    """The secret values of one device, to keep them out of every message."""

    values: list[str] = field(default_factory=list)

    def add(self, value: str) -> None:
        if value and value not in self.values:
            self.values.append(value)
            self.values.sort(key=len, reverse=True)  # longest first: no partial leaks

    def redact(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, "***")
        return text


@dataclass(frozen=True)
class CASettings:
    """``[ca]`` of devices.toml: the fleet CA's directory and the device certificates' lifetime."""

    dir: Path | None = None
    device_days: int = DEVICE_DAYS


@dataclass(frozen=True)
class Device:
    """One device of devices.toml, secrets resolved."""

    id: str
    port: str | None
    arch: str | None
    config: dict[str, Any]
    secrets: Secrets
    source: Path
    #: broker.tls: the server name the broker's certificate must carry; None: plain TCP
    tls_server_name: str | None = None
    ca: CASettings = field(default_factory=CASettings)


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_secret(device: str, where: str, path_text: object, base: Path, secrets: Secrets) -> str:
    if not isinstance(path_text, str) or not path_text:
        raise DeviceConfigError(device, where, "must be the path of a file holding the secret")
    path = Path(path_text).expanduser()
    if not path.is_absolute():
        path = base / path
    try:
        mode = path.stat().st_mode
        value = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DeviceConfigError(
            device, where, f"secret file {path} does not exist: create it (one line, the secret)"
        ) from None
    except (OSError, UnicodeError) as exc:
        raise DeviceConfigError(device, where, f"cannot read secret file {path}: {exc}") from None
    value = value.rstrip("\r\n")
    if not value:
        raise DeviceConfigError(device, where, f"secret file {path} is empty")
    if "\n" in value:
        raise DeviceConfigError(device, where, f"secret file {path} has more than one line")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(
            f"edgeline-flash: warning: secret file {path} is readable by other users (chmod 600 {path})",
            file=sys.stderr,
        )
    secrets.add(value)
    return value


def _resolve(
    device: str, node: Any, where: str, base: Path, secrets: Secrets
) -> Any:  # JSON-like value in, JSON-like value out
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            here = f"{where}.{key}"
            if key.endswith(FILE_SUFFIX) and SECRET_KEY.search(key[: -len(FILE_SUFFIX)]):
                name = key[: -len(FILE_SUFFIX)]
                if name in node:
                    raise DeviceConfigError(device, here, f"give either {name} or {key}, not both")
                out[name] = _read_secret(device, here, value, base, secrets)
            elif SECRET_KEY.search(key) and value not in ("", None):
                raise DeviceConfigError(
                    device,
                    here,
                    f"secrets may not be written in devices.toml; put it in a file "
                    f'(chmod 600) and write {key}{FILE_SUFFIX} = "path/to/file"',
                )
            else:
                out[key] = _resolve(device, value, here, base, secrets)
        return out
    if isinstance(node, list):
        return [_resolve(device, v, f"{where}[{i}]", base, secrets) for i, v in enumerate(node)]
    if isinstance(node, (str, int, float, bool)):
        return node
    raise DeviceConfigError(device, where, f"{type(node).__name__} values cannot go in JSON")


def load_devices_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            doc = tomllib.load(handle)
    except FileNotFoundError:
        raise FlashError(f"{path} not found: copy devices.example.toml to {path.name} and edit it") from None
    except tomllib.TOMLDecodeError as exc:
        raise FlashError(f"{path} is not valid TOML: {exc}") from None
    devices = doc.get("devices")
    if not isinstance(devices, dict) or not devices:
        raise FlashError(f"{path} has no [devices.<id>] table")
    unknown = set(doc) - TOP_TABLES
    if unknown:
        raise FlashError(f"{path}: unknown top-level table(s) {sorted(unknown)}")
    return doc


def ca_settings(path: Path, doc: Mapping[str, Any]) -> CASettings:
    """``[ca]`` of the devices.toml at ``path`` (parsed as ``doc``)."""
    table = doc.get("ca", {})
    if not isinstance(table, dict):
        raise FlashError(f"{path}: [ca] must be a table")
    unknown = set(table) - CA_KEYS
    if unknown:
        raise FlashError(f"{path}: [ca]: unknown key(s) {sorted(unknown)}; allowed: {sorted(CA_KEYS)}")
    directory = table.get("dir")
    if directory is not None and (not isinstance(directory, str) or not directory):
        raise FlashError(f'{path}: [ca] dir must be the path of the CA directory, e.g. dir = "ca"')
    days = table.get("device_days", DEVICE_DAYS)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= CA_DAYS:
        raise FlashError(f"{path}: [ca] device_days must be a whole number of days, 1..{CA_DAYS} (got {days!r})")
    where = None if directory is None else path.parent / Path(directory).expanduser()
    return CASettings(where, days)


def _tls(device_id: str, config: dict[str, Any]) -> str | None:
    """Turn devices.toml's ``broker.tls`` (true, or a table with server_name) into config.json's
    block; the server name, or None for plain TCP."""
    broker = config.get("broker")
    if not isinstance(broker, dict) or broker.get("tls") in (None, False):
        if isinstance(broker, dict):
            broker.pop("tls", None)
        return None
    value = broker["tls"]
    if value is True:
        value = {}
    if not isinstance(value, dict) or set(value) - {"server_name"}:
        raise DeviceConfigError(
            device_id,
            "config.broker.tls",
            'must be true, false or a table { server_name = "..." } (the certificate files are set by the tool)',
        )
    given = [key for key in ("user", "password") if key in broker]
    if given:
        names = " and ".join("password_file" if key == "password" else key for key in given)
        raise DeviceConfigError(
            device_id,
            "config.broker",
            f"remove {names}: with tls the broker takes the username from the device's certificate "
            "(its CN is the device id) and uses no password",
        )
    name = value.get("server_name", broker.get("host"))
    if not isinstance(name, str) or not name:
        raise DeviceConfigError(
            device_id, "config.broker.tls.server_name", "give the broker certificate's name (or broker.host)"
        )
    broker["tls"] = tls_config(name)
    return name


def load_device(path: Path, device_id: str) -> Device:
    """Read ``device_id`` from devices.toml at ``path``, merging [defaults], reading secrets."""
    doc = load_devices_file(path)
    devices: dict[str, Any] = doc["devices"]
    if device_id not in devices:
        known = ", ".join(sorted(devices)) or "none"
        raise FlashError(f"device {device_id!r} is not in {path} (devices: {known})")
    if not DEVICE_ID.match(device_id):
        raise DeviceConfigError(
            device_id, "id", "must be 1-32 characters of A-Z a-z 0-9 _ - (it is an MQTT topic level)"
        )
    defaults = doc.get("defaults", {})
    entry = devices[device_id]
    if not isinstance(entry, dict) or not isinstance(defaults, dict):
        raise DeviceConfigError(device_id, str(path), "[defaults] and [devices.<id>] must be tables")
    merged = _merge(defaults, entry)
    unknown = set(merged) - DEVICE_KEYS
    if unknown:
        raise DeviceConfigError(
            device_id, ", ".join(sorted(unknown)), f"unknown key(s); allowed: {sorted(DEVICE_KEYS)}"
        )
    port = merged.get("port")
    arch = merged.get("arch")
    if port is not None and not isinstance(port, str):
        raise DeviceConfigError(device_id, "port", "must be a string such as /dev/ttyUSB0")
    if arch is not None and arch not in ARCHES:
        raise DeviceConfigError(device_id, "arch", f"must be one of {', '.join(ARCHES)}")
    secrets = Secrets()
    raw_config = merged.get("config", {})
    if not isinstance(raw_config, dict):
        raise DeviceConfigError(device_id, "config", "must be a table")
    config = _resolve(device_id, raw_config, "config", path.parent, secrets)
    if config.get(DEVICE_ID_KEY, device_id) != device_id:
        raise DeviceConfigError(device_id, f"config.{DEVICE_ID_KEY}", "leave it out: the table name is the device id")
    config[DEVICE_ID_KEY] = device_id
    server_name = _tls(device_id, config)
    return Device(device_id, port, arch, config, secrets, path, server_name, ca_settings(path, doc))


# ----------------------------------------------------------------------------- validation

#: (config as the board parses it, whether the board needs Wi-Fi) -> anything; raises ValueError
Validator = Callable[[dict[str, Any], bool], object]
#: boards that reach the broker over Wi-Fi (the unix port / virtual board uses the host's network)
WIFI_ARCHES = frozenset({"armv6m", "xtensawin"})
#: board profile (firmware/sensorfw/boards/<name>.py) whose pin roles, watchdog maximum and
#: heap budget apply to a config.json built for an arch; native: the virtual board on the unix
#: port emulates an ESP32 DevKit (boards/sim.py, unless EDGELINE_SIM_BOARD says otherwise)
ARCH_BOARDS: dict[str, str | None] = {"xtensawin": "esp32_devkit", "armv6m": "pico_w", "native": "esp32_devkit"}
#: the same for a CircuitPython board (boards/cp_*.py), as firmware/cp/code.py picks it from
#: the board id: the Pico W (armv6m) or an ESP32-S3 (xtensawin); native: the CircuitPython
#: simulation board on the unix port, which uses the Pico W profile (boards/cp_sim.py)
CP_ARCH_BOARDS: dict[str, str] = {"xtensawin": "cp_esp32s3", "armv6m": "cp_pico_w", "native": "cp_pico_w"}


@contextmanager
def firmware_on_path(root: Path = ROOT) -> Iterator[Path]:
    """``root``/firmware on sys.path for the block: board code imported under CPython."""
    firmware = root / "firmware"
    added = str(firmware) not in sys.path
    if added:
        sys.path.insert(0, str(firmware))
    try:
        yield firmware
    finally:
        if added:
            sys.path.remove(str(firmware))


def firmware_validator(root: Path = ROOT, arch: str | None = None, *, board: str | None = None) -> Validator:
    """The firmware's own check (``validate`` of firmware/sensorfw/core/config.py) run under
    CPython, so the tool never writes a config.json that the board would refuse. With
    ``arch`` the board profile of that arch (``ARCH_BOARDS``) is checked too, as the board
    does at boot; ``board`` names another profile (boards/<board>.py) instead."""
    if board is None and arch is not None:
        board = ARCH_BOARDS.get(arch)
    with firmware_on_path(root) as firmware:
        try:
            from sensorfw.core import config as fw_config  # type: ignore[import-not-found]

            profile = importlib.import_module(f"sensorfw.boards.{board}") if board else None
        except ImportError as exc:
            raise FlashError(f"cannot load the firmware's config validator from {firmware}: {exc}") from None

    def check(config: dict[str, Any], needs_wifi: bool) -> object:
        return fw_config.validate(config, ".", needs_wifi, profile)

    return check


def config_data(device: Device) -> bytes:
    """The device's config as config.json holds it (compact, sorted keys), not yet validated."""
    return json.dumps(device.config, sort_keys=True, separators=(",", ":")).encode("utf-8")


def config_checker(
    device: Device, validator: Validator | None = None, *, arch: str | None = None, board: str | None = None
) -> Callable[[dict[str, Any]], object]:
    """The check ``render_config`` applies: a config as the board parses it -> the complete
    configuration the board computes; a rejected one raises DeviceConfigError (redacted).

    ``arch`` (default: the device's) decides whether Wi-Fi settings are required and, for the
    firmware's own validator, which board's pin roles, watchdog maximum and heap budget apply
    (``board``: another board profile than the arch's MicroPython one, see CP_ARCH_BOARDS).
    """
    target = arch or device.arch
    check = validator if validator is not None else firmware_validator(arch=target, board=board)
    needs_wifi = target is None or target in WIFI_ARCHES

    def run(config: dict[str, Any]) -> object:
        try:
            return check(config, needs_wifi)
        except ValueError as exc:  # the firmware's ConfigError is a ValueError
            raise DeviceConfigError(
                device.id, "config", device.secrets.redact(f"rejected by the firmware: {exc}")
            ) from None

    return run


def render_config(device: Device, validator: Validator | None = None, *, arch: str | None = None) -> bytes:
    """Validate the device's config and return config.json's bytes (compact, sorted keys).
    ``arch``: as for ``config_checker``."""
    data = config_data(device)
    config_checker(device, validator, arch=arch)(json.loads(data))  # exactly what the board will parse
    return data
