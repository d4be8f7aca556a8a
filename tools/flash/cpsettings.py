"""settings.toml for a CircuitPython board, from the device's config in devices.toml.

CircuitPython boards are configured in ``/settings.toml``, read with ``os.getenv``. Its
parser takes one ``KEY = value`` per line, where a value is an integer or a double-quoted
string, nothing else. The key of every config path is the firmware's own rule,
``key_of`` of firmware/sensorfw/cpport/settings.py, imported here (never restated):
``broker.host`` -> ``EDGELINE_BROKER_HOST``, ``sensors[1].i2c.scl`` ->
``EDGELINE_SENSOR1_I2C_SCL``, ``wifi.ssid`` -> ``CIRCUITPY_WIFI_SSID``. Integers are
written bare; strings quoted; numbers with a fraction (``FLOATS``) as strings (``"12.5"``)
and true/false (``BOOLS``) as ``"true"`` / ``"false"``, which the firmware converts back.

The config is the one that becomes config.json on MicroPython (devices.py, secrets
resolved), validated first by the firmware's validator. The rendered file is then parsed
back and loaded through the firmware's own ``read``; it must give the same validated
configuration, so what lands on the drive is what the board's loader reads. Other keys of
an existing settings.toml (``CIRCUITPY_WEB_API_PASSWORD``, ...) are kept.
"""

from __future__ import annotations

import importlib
import json
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.flash.build import ROOT
from tools.flash.devices import Device, DeviceConfigError, Secrets, config_data, firmware_on_path
from tools.flash.errors import FlashError

SETTINGS_NAME = "settings.toml"
RULE_MODULE = "sensorfw.cpport.settings"
RULE_FILE = "firmware/sensorfw/cpport/settings.py"
RULE_NAMES = ("key_of", "TOP", "LISTS", "BOOLS", "FLOATS", "MAX_ITEMS", "read")
#: a key CircuitPython's parser can find: bare, no quotes, no dots
BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ITEM = re.compile(r"^(?P<list>\w+)\[(?P<index>\d+)\]\.(?P<field>.+)$")
#: TOML basic-string escapes, all of which CircuitPython's parser reads too; other control
#: characters are written as \u00XX
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}

Getenv = Callable[[str], object]
#: a config as the board parses it -> the complete configuration (devices.config_checker)
Check = Callable[[dict[str, Any]], object]


@dataclass(frozen=True)
class SettingsRule:
    """The firmware's settings.toml rule (firmware/sensorfw/cpport/settings.py)."""

    key_of: Callable[[str], str]
    top: tuple[str, ...]
    lists: tuple[tuple[str, str, tuple[str, ...]], ...]  # (config list, key prefix, item fields)
    bools: frozenset[str]
    floats: frozenset[str]
    max_items: int
    read: Callable[[Getenv], dict[str, Any]]

    def paths(self) -> Iterator[tuple[str, str]]:
        """(config path, field) of every key, in the rule's order; the field is what BOOLS
        and FLOATS name: the path itself at the top, ``scale`` for ``sensors[1].scale``."""
        for path in self.top:
            yield path, path
        for name, _prefix, fields in self.lists:
            for index in range(self.max_items):
                for field in fields:
                    yield f"{name}[{index}].{field}", field

    def keys(self) -> frozenset[str]:
        """Every key the rule gives: rewritten from devices.toml on every run. Other keys of
        a drive's settings.toml are kept (the web workflow's CIRCUITPY_WEB_API_PASSWORD, ...)."""
        return frozenset(self.key_of(path) for path, _ in self.paths())


@dataclass(frozen=True)
class Settings:
    """A rendered settings.toml: its bytes and what went into it (key names only)."""

    data: bytes
    keys: tuple[str, ...]  # edgeline's keys, from the config
    kept: tuple[str, ...]  # other keys of the drive's settings.toml, kept
    dropped: tuple[str, ...]  # other keys that CircuitPython cannot read, left out


def load_rule(root: Path = ROOT) -> SettingsRule:
    """The naming rule, imported from the firmware (as devices.firmware_validator does)."""
    with firmware_on_path(root) as firmware:
        try:
            module = importlib.import_module(RULE_MODULE)
        except ImportError as exc:
            raise FlashError(f"cannot load the settings.toml rule from {firmware}: {exc}") from None
    missing = [name for name in RULE_NAMES if not hasattr(module, name)]
    if missing:
        raise FlashError(f"{RULE_FILE} has no {', '.join(missing)}: the flash tool needs {', '.join(RULE_NAMES)}")
    return SettingsRule(
        key_of=module.key_of,
        top=tuple(module.TOP),
        lists=tuple((name, prefix, tuple(fields)) for name, prefix, fields in module.LISTS),
        bools=frozenset(module.BOOLS),
        floats=frozenset(module.FLOATS),
        max_items=int(module.MAX_ITEMS),
        read=module.read,
    )


def quote(text: str) -> str:
    """``text`` as a double-quoted string that TOML and CircuitPython read back the same."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def scalars(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(config path, value) of every value of a config that is not a table or list:
    ``broker.host``, ``sensors[1].i2c.scl``. None (JSON null) is no value."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from scalars(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from scalars(value, f"{path}[{index}]")
    elif node is not None:
        yield path, node


def encode(value: object, field: str, rule: SettingsRule) -> str | None:
    """The TOML text of a config value, or None when settings.toml cannot hold it there."""
    if isinstance(value, bool):
        return quote("true" if value else "false") if field in rule.bools else None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return quote(repr(value)) if field in rule.floats else None
    if isinstance(value, str):
        return quote(value)
    return None


def _uncovered(path: str, rule: SettingsRule) -> str:
    item = _ITEM.match(path)
    known = {name: fields for name, _prefix, fields in rule.lists}
    if item and item["field"] in known.get(item["list"], ()) and int(item["index"]) >= rule.max_items:
        return f"config.{path} (settings.toml holds at most {rule.max_items} {item['list']})"
    return f"config.{path}"


def entries(device: Device, config: dict[str, Any], rule: SettingsRule) -> list[tuple[str, str]]:
    """(key, TOML value) of every config value, in the rule's order. A value the rule has no
    key for is refused: the board would never see it."""
    values = dict(scalars(config))
    fields = dict(rule.paths())
    uncovered = [_uncovered(path, rule) for path in values if path not in fields]
    if uncovered:
        raise DeviceConfigError(
            device.id,
            ", ".join(uncovered),
            f"no settings.toml key for it on CircuitPython ({RULE_FILE} names every key): "
            "remove it from this device's config",
        )
    out = []
    for path, field in fields.items():
        if path not in values:
            continue
        text = encode(values[path], field, rule)
        if text is None:
            kind = type(values[path]).__name__
            raise DeviceConfigError(device.id, f"config.{path}", f"a {kind} cannot go in settings.toml here")
        out.append((rule.key_of(path), text))
    keys = [key for key, _ in out]
    if len(set(keys)) != len(keys):
        raise FlashError(f"{RULE_FILE}: two config paths share a settings.toml key; fix key_of")
    return out


def parse(data: bytes, where: str) -> dict[str, Any]:
    """A settings.toml's keys (TOML; CircuitPython reads a subset of it)."""
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise FlashError(
            f"{where} is not valid TOML ({exc}): fix or delete it "
            "(edgeline-flash rewrites it: the configuration's keys from devices.toml, the other keys kept)"
        ) from None


def kept_settings(existing: dict[str, Any], rule: SettingsRule) -> tuple[list[tuple[str, str]], list[str]]:
    """(key, TOML value) of the other keys of the drive's settings.toml that CircuitPython
    can read (integers, strings, true/false), and the names of those it cannot."""
    kept: list[tuple[str, str]] = []
    dropped: list[str] = []
    owned = rule.keys()
    for key, value in existing.items():
        if key in owned:
            continue
        if not BARE_KEY.match(key) or not isinstance(value, (str, int)):
            dropped.append(key)
        elif isinstance(value, bool):
            kept.append((key, "true" if value else "false"))
        else:
            kept.append((key, quote(value) if isinstance(value, str) else str(value)))
    return kept, dropped


def _text(device: Device, own: list[tuple[str, str]], kept: list[tuple[str, str]]) -> str:
    lines = [
        f"# settings.toml of edgeline device {device.id}, written by edgeline-flash from devices.toml",
        "# (docs/flashing.md). The configuration's keys are rewritten on every run: change devices.toml",
        "# instead. Other keys below are kept. CircuitPython reads integers and double-quoted strings only.",
        *(f"{key} = {value}" for key, value in own),
    ]
    if kept:
        lines += ["", "# other settings, kept as they were", *(f"{key} = {value}" for key, value in kept)]
    return "\n".join(lines) + "\n"


def _mismatch(parsed: dict[str, Any], own: list[str], asked: set[str], loaded: object, expected: object) -> str | None:
    """What is wrong with a settings.toml the loader read (key names only), or None."""
    wrong_type = [k for k in own if isinstance(parsed.get(k), bool) or not isinstance(parsed.get(k), (int, str))]
    unread = sorted(set(own) - asked)
    if not wrong_type and not unread and loaded == expected:
        return None
    differ: list[str] = []
    if isinstance(loaded, dict) and isinstance(expected, dict):
        differ = sorted(k for k in expected.keys() | loaded.keys() if loaded.get(k) != expected.get(k))
    return f"does not load back the same (not an int or string: {wrong_type}, unread: {unread}, different: {differ})"


def verify(data: bytes, own: list[str], device: Device, *, rule: SettingsRule, check: Check, expected: object) -> None:
    """Load ``data`` as the board does (``read`` over getenv, then validation) and require
    the configuration ``expected``, every written key read, every value an int or a string."""
    parsed = parse(data, SETTINGS_NAME)
    problem = None
    # os.getenv gives integers as int on CircuitPython 8 and 9, every value as str later on
    for as_text in (False, True):
        asked: set[str] = set()

        def getenv(key: str, as_text: bool = as_text, asked: set[str] = asked) -> object:
            asked.add(key)
            v = parsed.get(key)
            return str(v) if as_text and v is not None else v

        try:
            problem = _mismatch(parsed, own, asked, check(rule.read(getenv)), expected)
        except (ValueError, DeviceConfigError) as exc:  # the loader's SettingsError, the validator's refusal
            problem = device.secrets.redact(f"is refused by the board's loader: {exc}")
        if problem is not None:
            break
    if problem is not None:
        raise FlashError(
            f"device {device.id}: the settings.toml rendered {problem}; nothing was written. "
            f"This is a bug in edgeline-flash or {RULE_FILE}: please report it"
        )


def render_settings(
    device: Device, rule: SettingsRule, check: Check, existing: dict[str, Any] | None = None
) -> Settings:
    """Validate the device's config, render settings.toml (keeping the other readable keys of
    ``existing``, the drive's current file parsed) and prove that the board's loader reads it back."""
    config = json.loads(config_data(device))  # exactly what becomes config.json on MicroPython
    expected = check(config)  # refuses a bad config, naming the key (secrets redacted)
    own = entries(device, config, rule)
    kept, dropped = kept_settings(existing or {}, rule)
    data = _text(device, own, kept).encode("utf-8")
    verify(data, [key for key, _ in own], device, rule=rule, check=check, expected=expected)
    return Settings(data, tuple(key for key, _ in own), tuple(key for key, _ in kept), tuple(dropped))


def settings_toml(config: dict[str, Any], root: Path = ROOT) -> str:
    """The settings.toml text of a plain config (no devices.toml, no secret files, not
    validated here: the board validates it): the demo's and the tests' virtual boards."""
    device = Device(
        id=str(config.get("device_id", "?")),
        port=None,
        arch=None,
        config=config,
        secrets=Secrets(),
        source=Path("<config>"),
    )
    return _text(device, entries(device, config, load_rule(root)), [])
