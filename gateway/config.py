"""Gateway configuration: one TOML file read into frozen dataclasses.

Every error names the offending key and what was expected, so a user can fix
the file without reading this code. ``[forward]`` is validated here too, by
``ForwardConfig.from_dict`` (gateway/forward/config.py): a bad ``[forward]`` is a
``ConfigError`` naming the key, from ``check-config`` and ``run`` alike.

About 800 lines on purpose (15 sections): every section's dataclass stands beside the checks of its keys,
so the rule for a key lives in one place (docs/gateway.md "Configuration" mirrors it).
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from gateway.atrest import SEALERS, EncryptionSettings

# Re-exported: ``from gateway.config import ConfigError`` keeps working.
from gateway.errors import ConfigError as ConfigError  # noqa: PLC0414 (explicit re-export, mypy strict)
from gateway.forward.config import ForwardConfig
from gateway.thresholds import resolvable
from gateway.updates.settings import ConfigTrialSettings, FirmwareSettings, ShadowSettings, UpdatesSettings
from shared_protocol.gw_topics import valid_discovery_prefix

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


@dataclass(frozen=True)
class GatewaySection:
    id: str
    site: str
    data_dir: Path
    prefix: str = "el"
    status_interval_s: float = 5.0
    status_detail_devices: int = 1000  # per-device sections in status.json up to this fleet size


@dataclass(frozen=True)
class MQTTSection:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password_file: Path | None = None
    client_id: str | None = None
    keepalive_s: int = 30

    def read_password(self) -> str | None:
        """Password from ``password_file`` (first line), never from the TOML itself."""
        if self.password_file is None:
            return None
        return read_secret_file("mqtt.password_file", self.password_file)


def check_secret_file(key: str, path: Path) -> None:
    """Refuse a secret file that is missing or that other users may access.

    The one check behind every secret file the gateway reads: ``check-config`` and ``run``
    both refuse with the same message (the key, the file, its mode and the fix).
    """
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path} ({exc.strerror})") from exc
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{key}: {path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise ConfigError(f"{key}: {path} has mode {mode:04o}, open to other users; run `chmod 600 {path}`")


def read_secret_file(key: str, path: Path) -> str:
    """The first line of a secret file checked by ``check_secret_file``; never echoed in errors."""
    check_secret_file(key, path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path} ({exc.strerror})") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {path} is not UTF-8 text") from None
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise ConfigError(f"{key}: {path} is empty (its first line must hold the password)")
    return secret


@dataclass(frozen=True)
class BrokerTLS:
    """``[broker.tls]``: mutual TLS on the device listener, files from ``edgeline-flash ca``
    (server-cert): the site CA, the broker's certificate and key, and the CRL."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    crl_file: Path


@dataclass(frozen=True)
class BrokerSection:
    """The local Mosquitto as ``edgeline-gateway broker-config`` generates it (gateway/brokerconf.py).

    Devices connect to a listener bound to ``device_address`` or to the addresses of
    ``device_interface`` (one of the two); the gateway and local tools to 127.0.0.1.
    With ``tls`` devices authenticate with certificates (port 8883 by default), else with
    passwords over plain TCP (1883).
    """

    device_address: str | None = None
    device_interface: str | None = None
    device_port: int = 1883
    password_file: Path = Path("/etc/mosquitto/edgeline.passwd")
    acl_file: Path = Path("/etc/mosquitto/edgeline.acl")
    monitor_users: tuple[str, ...] = ("monitor",)
    max_queued_messages: int = 20000
    tls: BrokerTLS | None = None


@dataclass(frozen=True)
class IngestSection:
    queue_size: int = 20000
    batch_max: int = 2000
    block_timeout_ms: float = 200.0
    data_qos: int = 0
    commit_interval_ms: float = 20.0  # batches grouped into one commit (and ACK) over this long
    ack_interval_ms: float = 1000.0  # at most one ACK per device per interval (the first at once)


@dataclass(frozen=True)
class RawLogSection:
    max_bytes: int = 256 * 1024 * 1024
    max_age_s: float = 7 * 24 * 3600.0


@dataclass(frozen=True)
class RegistrySection:
    """Known devices, and who may become one (admission: docs/gateway.md).

    max_devices: devices the gateway keeps state for; a new id beyond it is quarantined.
    devices_file: when set, only ids listed there (a Mosquitto password file, or one id
    per line) or already in the registry are admitted; it is re-read when it changes.
    quarantine_size: distinct unknown ids whose frames are counted (the oldest is forgotten).
    """

    offline_after_s: float = 120.0
    rebirth_interval_s: float = 5.0
    pending_per_device: int = 256
    max_devices: int = 2000
    devices_file: Path | None = None
    quarantine_size: int = 256


@dataclass(frozen=True)
class SequenceSection:
    """Sequence sanity and end-to-end gap repair (docs/gateway.md, "Nothing lost").

    A frame more than max_jump numbers above the highest seen is suspect until
    jump_confirm frames in a row continue it. A missing range is asked for with
    CMD_RESEND once it has been missing resend_after_s, again every resend_interval_s
    while the device is online; after resend_attempts requests without progress the
    gateway gives up and counts the frames lost (unanswered).
    """

    max_jump: int = 100_000
    jump_confirm: int = 3
    resend_after_s: float = 5.0
    resend_interval_s: float = 10.0
    resend_attempts: int = 6


@dataclass(frozen=True)
class CalibrateSection:
    """``[[pipelines]] calibrate = {...}``: per-device calibration (gateway/calibration.py).

    windows: windows of each phase (input normalisation, then threshold); false_alarm_rate:
    the fraction of a device's normal windows allowed over its threshold; normalise: learn the
    device's own feature mean and std first (else only its threshold)."""

    windows: int = 2000
    false_alarm_rate: float = 0.001
    normalise: bool = True


@dataclass(frozen=True)
class PipelineSection:
    """One model applied to a group of channels of matching devices.

    channels: the device channel names fed to the model, one per model channel in
    the model's order (default: the model's own names), e.g. a device's
    "imu_ax" ... "imu_gz" for a model trained on "ax" ... "gz".
    """

    name: str
    model: Path
    devices: tuple[str, ...] = ("*",)
    channels: tuple[str, ...] | None = None
    threshold: float | None = None
    calibrate: CalibrateSection | None = None  # None: the model's threshold for every device


@dataclass(frozen=True)
class RuleSection:
    """On an alert from ``on_alert_from`` (glob), drive an output of ``device``."""

    name: str
    on_alert_from: str
    device: str
    output: int
    value: int = 1
    duration_s: float = 5.0
    cooldown_s: float = 0.0
    pipeline: str | None = None
    clear_value: int | None = None  # when the alert clears, set the output to this (and hold)


@dataclass(frozen=True)
class AlertsSection:
    """Alert episodes (gateway/alertstate.py): raise, hysteresis and hold-off before clearing."""

    raise_after: int = 1
    clear_below: float = 0.8
    clear_after: int = 5
    update_interval_s: float = 10.0


@dataclass(frozen=True)
class SummarySection:
    interval_s: float = 60.0


@dataclass(frozen=True)
class RawSection:
    """Raw windows sent to the cloud (forwarder lane "raw"): around alerts, and on request."""

    alert_before_s: float = 10.0
    alert_after_s: float = 2.0
    alert_holdoff_s: float = 60.0
    alerts: bool = True
    max_samples: int = 20_000


@dataclass(frozen=True)
class WebSection:
    """The status page and /metrics (gateway/web/): read-only, on localhost unless configured.

    port 0 picks a free port (the one chosen is in status.json, "web"). A password (HTTP Basic
    authentication, any user name) is required when ``address`` is not a loopback address.
    """

    enabled: bool = True
    address: str = "127.0.0.1"
    port: int = 8080
    password_file: Path | None = None

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.address).is_loopback

    def read_password(self) -> str | None:
        """Password from ``password_file`` (first line; the file must be private, as for MQTT)."""
        if self.password_file is None:
            return None
        return read_secret_file("web.password_file", self.password_file)


@dataclass(frozen=True)
class StateSection:
    """The local state topics (gateway/localstate.py): a device's JSON state is published on
    change at most every ``interval_s`` (availability and alert states at once)."""

    interval_s: float = 5.0
    max_rate: float = 1000.0  # local state publishes a second at most (a fleet's BIRTHs at start-up)


@dataclass(frozen=True)
class HomeAssistantSection:
    """Home Assistant MQTT discovery (gateway/hadiscovery.py), off unless ``enabled``.

    username: the broker user Home Assistant connects as; ``broker-config`` gives it read access
    to the local state topics and discovery, and write access to the output command topics only.
    """

    enabled: bool = False
    discovery_prefix: str = "homeassistant"
    username: str = "homeassistant"


@dataclass(frozen=True)
class Config:
    gateway: GatewaySection
    mqtt: MQTTSection = field(default_factory=MQTTSection)
    broker: BrokerSection = field(default_factory=BrokerSection)
    ingest: IngestSection = field(default_factory=IngestSection)
    rawlog: RawLogSection = field(default_factory=RawLogSection)
    registry: RegistrySection = field(default_factory=RegistrySection)
    sequence: SequenceSection = field(default_factory=SequenceSection)
    pipelines: tuple[PipelineSection, ...] = ()
    rules: tuple[RuleSection, ...] = ()
    summary: SummarySection = field(default_factory=SummarySection)
    raw: RawSection = field(default_factory=RawSection)
    alerts: AlertsSection = field(default_factory=AlertsSection)
    forward: ForwardConfig | None = None  # validated [forward], None without one
    web: WebSection = field(default_factory=WebSection)
    state: StateSection = field(default_factory=StateSection)
    homeassistant: HomeAssistantSection = field(default_factory=HomeAssistantSection)
    encryption: EncryptionSettings | None = None  # [encryption] when enabled = true (gateway/atrest.py)
    updates: UpdatesSettings | None = None  # [updates] when enabled = true (gateway/updates/, docs/updates.md)
    source: Path | None = None


# --------------------------------------------------------------------------- helpers


class _Table:
    """Typed accessors over one TOML table that report the full key on error."""

    def __init__(self, data: dict[str, Any], where: str, known: set[str]) -> None:
        self.data = data
        self.where = where
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{self._key(unknown[0])}: unknown key (expected one of {', '.join(sorted(known))})")

    def _key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def has(self, name: str) -> bool:
        return name in self.data

    def get_str(self, name: str, default: str | None = None, *, ident: bool = False) -> str:
        if name not in self.data:
            if default is None:
                raise ConfigError(f"{self._key(name)}: missing (expected a string)")
            return default
        value = self.data[name]
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{self._key(name)}: expected a non-empty string, got {value!r}")
        if ident and not _ID_RE.match(value):
            raise ConfigError(f"{self._key(name)}: {value!r} is not a valid id (1-32 characters from A-Z a-z 0-9 _ -)")
        return value

    def opt_str(self, name: str) -> str | None:
        return self.get_str(name) if name in self.data else None

    def get_int(self, name: str, default: int, *, lo: int, hi: int) -> int:
        value = self.data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self._key(name)}: expected an integer, got {value!r}")
        if not lo <= value <= hi:
            raise ConfigError(f"{self._key(name)}: expected {lo}..{hi}, got {value}")
        return value

    def get_float(self, name: str, default: float, *, lo: float, hi: float) -> float:
        value = self.data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{self._key(name)}: expected a number, got {value!r}")
        if not lo <= float(value) <= hi:
            raise ConfigError(f"{self._key(name)}: expected {lo:g}..{hi:g}, got {value}")
        return float(value)

    def opt_float(self, name: str, *, lo: float, hi: float) -> float | None:
        return self.get_float(name, 0.0, lo=lo, hi=hi) if name in self.data else None

    def str_list(self, name: str, default: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if name not in self.data:
            return default
        value = self.data[name]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{self._key(name)}: expected a non-empty list of strings, got {value!r}")
        return tuple(value)

    def table(self, name: str) -> dict[str, Any]:
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{self._key(name)}: expected a table [{name}]")
        return value


def _path(base: Path, value: str) -> Path:
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else (base / p)


# --------------------------------------------------------------------------- parsing


def from_dict(data: dict[str, Any], *, base_dir: Path | None = None) -> Config:
    """Build a Config from parsed TOML; relative paths resolve against ``base_dir``."""
    base = base_dir or Path.cwd()
    top = _Table(
        data,
        "",
        {
            "gateway",
            "mqtt",
            "broker",
            "ingest",
            "rawlog",
            "registry",
            "sequence",
            "pipelines",
            "rules",
            "summary",
            "raw",
            "alerts",
            "forward",
            "web",
            "state",
            "homeassistant",
            "encryption",
            "updates",
        },
    )
    if "gateway" not in data:
        raise ConfigError("gateway: missing table [gateway] (needs id, site, data_dir)")

    g = _Table(
        top.table("gateway"),
        "gateway",
        {"id", "site", "data_dir", "prefix", "status_interval_s", "status_detail_devices"},
    )
    gateway = GatewaySection(
        id=g.get_str("id", ident=True),
        site=g.get_str("site", ident=True),
        data_dir=_path(base, g.get_str("data_dir")),
        prefix=g.get_str("prefix", "el", ident=True),
        status_interval_s=g.get_float("status_interval_s", 5.0, lo=0.1, hi=3600),
        status_detail_devices=g.get_int("status_detail_devices", 1000, lo=0, hi=1_000_000),
    )

    m = _Table(
        top.table("mqtt"),
        "mqtt",
        {"host", "port", "username", "password_file", "client_id", "keepalive_s", "password"},
    )
    if m.has("password"):
        raise ConfigError(
            "mqtt.password: passwords are not accepted in the TOML file; "
            "put it in a file readable only by the gateway (chmod 600) and set mqtt.password_file"
        )
    pw_file = m.opt_str("password_file")
    mqtt = MQTTSection(
        host=m.get_str("host", "127.0.0.1"),
        port=m.get_int("port", 1883, lo=1, hi=65535),
        username=m.opt_str("username"),
        password_file=_path(base, pw_file) if pw_file else None,
        client_id=m.opt_str("client_id"),
        keepalive_s=m.get_int("keepalive_s", 30, lo=5, hi=3600),
    )

    broker = _broker(_Table(top.table("broker"), "broker", {f.name for f in fields(BrokerSection)}), base)

    i = _Table(top.table("ingest"), "ingest", {f.name for f in fields(IngestSection)})
    ingest = IngestSection(
        queue_size=i.get_int("queue_size", 20000, lo=16, hi=10_000_000),
        batch_max=i.get_int("batch_max", 2000, lo=1, hi=1_000_000),
        block_timeout_ms=i.get_float("block_timeout_ms", 200.0, lo=0, hi=60_000),
        data_qos=i.get_int("data_qos", 0, lo=0, hi=1),
        commit_interval_ms=i.get_float("commit_interval_ms", 20.0, lo=0, hi=5_000),
        ack_interval_ms=i.get_float("ack_interval_ms", 1000.0, lo=0, hi=60_000),
    )

    r = _Table(top.table("rawlog"), "rawlog", {"max_bytes", "max_age_s"})
    rawlog = RawLogSection(
        max_bytes=r.get_int("max_bytes", 256 * 1024 * 1024, lo=4096, hi=1 << 44),
        max_age_s=r.get_float("max_age_s", 7 * 24 * 3600.0, lo=1, hi=10 * 365 * 86400),
    )

    rg = _Table(
        top.table("registry"),
        "registry",
        {f.name for f in fields(RegistrySection)},
    )
    devices_file = rg.opt_str("devices_file")
    registry = RegistrySection(
        offline_after_s=rg.get_float("offline_after_s", 120.0, lo=1, hi=86400 * 30),
        rebirth_interval_s=rg.get_float("rebirth_interval_s", 5.0, lo=0, hi=3600),
        pending_per_device=rg.get_int("pending_per_device", 256, lo=0, hi=100_000),
        max_devices=rg.get_int("max_devices", 2000, lo=1, hi=1_000_000),
        devices_file=_path(base, devices_file) if devices_file else None,
        quarantine_size=rg.get_int("quarantine_size", 256, lo=1, hi=1_000_000),
    )
    sq = _Table(top.table("sequence"), "sequence", {f.name for f in fields(SequenceSection)})
    sequence = SequenceSection(
        max_jump=sq.get_int("max_jump", 100_000, lo=1, hi=1 << 32),
        jump_confirm=sq.get_int("jump_confirm", 3, lo=1, hi=1000),
        resend_after_s=sq.get_float("resend_after_s", 5.0, lo=0, hi=86400),
        resend_interval_s=sq.get_float("resend_interval_s", 10.0, lo=0.1, hi=86400),
        resend_attempts=sq.get_int("resend_attempts", 6, lo=1, hi=10_000),
    )

    s = _Table(top.table("summary"), "summary", {"interval_s"})
    summary = SummarySection(interval_s=s.get_float("interval_s", 60.0, lo=0.05, hi=86400))

    rw = _Table(
        top.table("raw"), "raw", {"alert_before_s", "alert_after_s", "alert_holdoff_s", "alerts", "max_samples"}
    )
    alerts_flag = rw.data.get("alerts", True)
    if not isinstance(alerts_flag, bool):
        raise ConfigError(f"raw.alerts: expected true or false, got {alerts_flag!r}")
    raw = RawSection(
        alert_before_s=rw.get_float("alert_before_s", 10.0, lo=0, hi=3600),
        alert_after_s=rw.get_float("alert_after_s", 2.0, lo=0, hi=3600),
        alert_holdoff_s=rw.get_float("alert_holdoff_s", 60.0, lo=0, hi=86400),
        alerts=alerts_flag,
        max_samples=rw.get_int("max_samples", 20_000, lo=1, hi=10_000_000),
    )

    al = _Table(top.table("alerts"), "alerts", {f.name for f in fields(AlertsSection)})
    alerts = AlertsSection(
        raise_after=al.get_int("raise_after", 1, lo=1, hi=1000),
        clear_below=al.get_float("clear_below", 0.8, lo=0.0, hi=1.0),
        clear_after=al.get_int("clear_after", 5, lo=1, hi=100_000),
        update_interval_s=al.get_float("update_interval_s", 10.0, lo=0.0, hi=86400),
    )

    pipelines = tuple(_pipelines(data.get("pipelines", []), base))
    names = [p.name for p in pipelines]
    rules = tuple(_rules(data.get("rules", []), set(names)))

    fwd = data.get("forward")
    if fwd is not None and not isinstance(fwd, dict):
        raise ConfigError("forward: expected a table [forward]")
    # Raises ForwardConfigError, a ConfigError naming the key (forward.<key>).
    forward = ForwardConfig.from_dict(fwd) if fwd is not None else None

    return Config(
        gateway=gateway,
        mqtt=mqtt,
        broker=broker,
        ingest=ingest,
        rawlog=rawlog,
        registry=registry,
        sequence=sequence,
        pipelines=pipelines,
        rules=rules,
        summary=summary,
        raw=raw,
        alerts=alerts,
        forward=forward,
        web=_web(_Table(top.table("web"), "web", {f.name for f in fields(WebSection)}), base),
        state=_state(_Table(top.table("state"), "state", {f.name for f in fields(StateSection)})),
        homeassistant=_homeassistant(
            _Table(top.table("homeassistant"), "homeassistant", {f.name for f in fields(HomeAssistantSection)})
        ),
        encryption=_encryption(
            _Table(top.table("encryption"), "encryption", {"enabled", "key_dir", "sealer", "tpm_tcti"}),
            base,
            gateway.data_dir,
        ),
        updates=_updates(_Table(top.table("updates"), "updates", _UPDATES_KEYS), base, gateway.data_dir),
    )


def _encryption(t: _Table, base: Path, data_dir: Path) -> EncryptionSettings | None:
    """Every key is checked, also with ``enabled = false`` (a typo must not pass unnoticed)."""
    enabled = t.data.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigError(f"encryption.enabled: expected true or false, got {enabled!r}")
    sealer = t.get_str("sealer", "file")
    if sealer not in SEALERS:
        raise ConfigError(f"encryption.sealer: expected one of {', '.join(SEALERS)}, got {sealer!r}")
    if t.has("tpm_tcti") and sealer != "tpm":
        raise ConfigError('encryption.tpm_tcti: used only with sealer = "tpm"; set that or drop tpm_tcti')
    key_dir = _path(base, t.get_str("key_dir")) if t.has("key_dir") else data_dir / "keys"
    if not enabled:
        return None
    return EncryptionSettings(key_dir=key_dir, sealer=sealer, tpm_tcti=t.get_str("tpm_tcti", "device:/dev/tpmrm0"))


_UPDATES_KEYS = {"enabled", "trusted_keys", "state_dir", "max_bundle_bytes", "shadow", "config", "firmware"}


def _updates(t: _Table, base: Path, data_dir: Path) -> UpdatesSettings | None:
    """Every key is checked, also with ``enabled = false``."""
    enabled = t.data.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigError(f"updates.enabled: expected true or false, got {enabled!r}")
    keys = t.str_list("trusted_keys", ())
    trusted = tuple(_path(base, k) for k in keys or ())
    state_dir = _path(base, t.get_str("state_dir")) if t.has("state_dir") else data_dir / "updates"
    max_bytes = t.get_int("max_bundle_bytes", 16 * 1024 * 1024, lo=1024, hi=1 << 31)
    sh = _Table(t.table("shadow"), "updates.shadow", {f.name for f in fields(ShadowSettings)})
    shadow = ShadowSettings(
        windows=sh.get_int("windows", 200, lo=1, hi=10_000_000),
        max_alert_rate=sh.get_float("max_alert_rate", 0.05, lo=0.0, hi=1.0),
        min_agreement=sh.get_float("min_agreement", 0.90, lo=0.0, hi=1.0),
        max_errors=sh.get_int("max_errors", 0, lo=0, hi=1_000_000),
        timeout_s=sh.get_float("timeout_s", 86400.0, lo=1.0, hi=365 * 86400.0),
    )
    ct = _Table(t.table("config"), "updates.config", {f.name for f in fields(ConfigTrialSettings)})
    trial = ConfigTrialSettings(
        health_timeout_s=ct.get_float("health_timeout_s", 60.0, lo=1.0, hi=3600.0),
        max_starts=ct.get_int("max_starts", 2, lo=1, hi=10),
    )
    fw = _Table(t.table("firmware"), "updates.firmware", {f.name for f in fields(FirmwareSettings)})
    firmware = FirmwareSettings(
        device_keys_dir=_path(base, fw.get_str("device_keys_dir")) if fw.has("device_keys_dir") else None,
        chunk_bytes=fw.get_int("chunk_bytes", 512, lo=64, hi=4000),  # its CMD frame fits the outbox's 4096-byte buffer
        window=fw.get_int("window", 4, lo=1, hi=64),
        chunk_timeout_s=fw.get_float("chunk_timeout_s", 15.0, lo=0.1, hi=3600.0),
        max_retries=fw.get_int("max_retries", 5, lo=0, hi=1000),
        confirm_timeout_s=fw.get_float("confirm_timeout_s", 600.0, lo=1.0, hi=7 * 86400.0),
    )
    if not enabled:
        return None
    if not trusted:
        raise ConfigError(
            "updates.trusted_keys: missing: name at least one release public key (edgeline-release keygen)"
        )
    return UpdatesSettings(
        trusted_keys=trusted,
        state_dir=state_dir,
        max_bundle_bytes=max_bytes,
        shadow=shadow,
        config=trial,
        firmware=firmware,
    )


def _homeassistant(t: _Table) -> HomeAssistantSection:
    enabled = t.data.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigError(f"homeassistant.enabled: expected true or false, got {enabled!r}")
    prefix = t.get_str("discovery_prefix", "homeassistant")
    if not valid_discovery_prefix(prefix):
        raise ConfigError(
            f"homeassistant.discovery_prefix: {prefix!r} must be topic levels of A-Z a-z 0-9 _ - "
            '(Home Assistant\'s default is "homeassistant")'
        )
    return HomeAssistantSection(
        enabled=enabled, discovery_prefix=prefix, username=t.get_str("username", "homeassistant", ident=True)
    )


def _web(w: _Table, base: Path) -> WebSection:
    enabled = w.data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"web.enabled: expected true or false, got {enabled!r}")
    address = w.get_str("address", "127.0.0.1")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ConfigError(
            f"web.address: expected an IP address (127.0.0.1 for this machine only, or the address of "
            f"the network to serve), got {address!r}"
        ) from None
    pw_file = w.opt_str("password_file")
    if enabled and not ip.is_loopback and pw_file is None:
        raise ConfigError(
            f"web.password_file: required when web.address is {address} (not a loopback address): the status "
            "page and /metrics would be open to the network; put a password in a file readable only by the "
            "gateway (chmod 600) and set web.password_file, or keep web.address = 127.0.0.1"
        )
    return WebSection(
        enabled=enabled,
        address=address,
        port=w.get_int("port", 8080, lo=0, hi=65535),
        password_file=_path(base, pw_file) if pw_file else None,
    )


_IFACE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
_PATH_RE = re.compile(r"^[^\s#]+$")  # one token on a Mosquitto configuration line


def _broker(b: _Table, base: Path) -> BrokerSection:
    address = b.opt_str("device_address")
    interface = b.opt_str("device_interface")
    if address is not None and interface is not None:
        raise ConfigError("broker.device_interface: set broker.device_address or broker.device_interface, not both")
    if address is not None:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(
                f"broker.device_address: expected the IP address of the device network, got {address!r}"
            ) from None
        if ip.is_unspecified:
            raise ConfigError(
                f"broker.device_address: {address} would listen on every interface; "
                "give the address of the device network (e.g. 192.168.4.1)"
            )
    if interface is not None and not _IFACE_RE.match(interface):
        raise ConfigError(
            f"broker.device_interface: expected a network interface name such as wlan0, got {interface!r}"
        )
    paths: dict[str, Path] = {}
    for key in ("password_file", "acl_file"):
        value = b.get_str(key, str(getattr(BrokerSection, key)))
        if not _PATH_RE.match(value):
            raise ConfigError(f"broker.{key}: {value!r} must not contain spaces or '#' (Mosquitto reads one token)")
        paths[key] = _path(base, value)
    monitors = b.str_list("monitor_users", ("monitor",)) or ("monitor",)
    for name in monitors:
        if not _ID_RE.match(name):
            raise ConfigError(
                f"broker.monitor_users: {name!r} is not a valid user (1-32 characters from A-Z a-z 0-9 _ -)"
            )
    tls = (
        _broker_tls(_Table(b.table("tls"), "broker.tls", {f.name for f in fields(BrokerTLS)}), base)
        if b.has("tls")
        else None
    )
    return BrokerSection(
        device_address=address,
        device_interface=interface,
        device_port=b.get_int("device_port", 1883 if tls is None else 8883, lo=1, hi=65535),
        password_file=paths["password_file"],
        acl_file=paths["acl_file"],
        monitor_users=monitors,
        max_queued_messages=b.get_int("max_queued_messages", 20000, lo=1, hi=10_000_000),
        tls=tls,
    )


def _broker_tls(t: _Table, base: Path) -> BrokerTLS:
    paths: dict[str, Path] = {}
    for f in fields(BrokerTLS):
        if not t.has(f.name):
            raise ConfigError(
                f"broker.tls.{f.name}: missing; [broker.tls] needs ca_file, cert_file, key_file and crl_file "
                "(written by `edgeline-flash ca server-cert`, docs/gateway.md)"
            )
        value = t.get_str(f.name)
        if not _PATH_RE.match(value):
            raise ConfigError(
                f"broker.tls.{f.name}: {value!r} must not contain spaces or '#' (Mosquitto reads one token)"
            )
        paths[f.name] = _path(base, value)
    return BrokerTLS(**paths)


def _array_of_tables(value: object, name: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{name}: expected an array of tables [[{name}]]")
    return value


def _pipelines(value: object, base: Path) -> list[PipelineSection]:
    out: list[PipelineSection] = []
    seen: set[str] = set()
    for n, item in enumerate(_array_of_tables(value, "pipelines")):
        t = _Table(item, f"pipelines[{n}]", {"name", "model", "devices", "channels", "threshold", "calibrate"})
        name = t.get_str("name", ident=True)
        if name in seen:
            raise ConfigError(f"pipelines[{n}].name: {name!r} used twice (names must be unique)")
        seen.add(name)
        devices = t.str_list("devices", ("*",)) or ("*",)
        out.append(
            PipelineSection(
                name=name,
                model=_path(base, t.get_str("model")),
                devices=devices,
                channels=t.str_list("channels", None),
                threshold=t.opt_float("threshold", lo=-1e30, hi=1e30),
                calibrate=_calibrate(t, f"pipelines[{n}].calibrate"),
            )
        )
    return out


def _calibrate(pipeline: _Table, where: str) -> CalibrateSection | None:
    """``calibrate = { windows = 2000, false_alarm_rate = 0.001, normalise = true }`` (or a
    [pipelines.calibrate] table after its [[pipelines]]); absent: no calibration."""
    if not pipeline.has("calibrate"):
        return None
    value = pipeline.data["calibrate"]
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where}: expected a table, e.g. calibrate = {{ windows = 2000, false_alarm_rate = 0.001 }}, got {value!r}"
        )
    t = _Table(value, where, {f.name for f in fields(CalibrateSection)})
    windows = t.get_int("windows", CalibrateSection.windows, lo=10, hi=10_000_000)
    far = t.get_float("false_alarm_rate", CalibrateSection.false_alarm_rate, lo=0.0, hi=1.0)
    if not 0.0 < far < 0.5:
        raise ConfigError(f"{where}.false_alarm_rate: expected a fraction above 0 and below 0.5, got {far:g}")
    if not resolvable(windows, far):
        raise ConfigError(
            f"{where}.false_alarm_rate: {far:g} of {windows} windows is less than one window, so the threshold "
            f"could not tell it from zero: raise windows to at least {math.ceil(1.0 / far)} or the rate"
        )
    normalise = value.get("normalise", CalibrateSection.normalise)
    if not isinstance(normalise, bool):
        raise ConfigError(f"{where}.normalise: expected true or false, got {normalise!r}")
    return CalibrateSection(windows=windows, false_alarm_rate=far, normalise=normalise)


def _state(t: _Table) -> StateSection:
    return StateSection(
        interval_s=t.get_float("interval_s", 5.0, lo=0.1, hi=3600),
        max_rate=t.get_float("max_rate", 1000.0, lo=10.0, hi=1_000_000.0),
    )


def _rules(value: object, pipeline_names: set[str]) -> list[RuleSection]:
    out: list[RuleSection] = []
    for n, item in enumerate(_array_of_tables(value, "rules")):
        t = _Table(
            item,
            f"rules[{n}]",
            {
                "name",
                "on_alert_from",
                "device",
                "output",
                "value",
                "duration_s",
                "cooldown_s",
                "pipeline",
                "clear_value",
            },
        )
        pipeline = t.opt_str("pipeline")
        if pipeline is not None and pipeline not in pipeline_names:
            raise ConfigError(
                f"rules[{n}].pipeline: {pipeline!r} is not a configured pipeline "
                f"(known: {', '.join(sorted(pipeline_names)) or 'none'})"
            )
        out.append(
            RuleSection(
                name=t.get_str("name", f"rule{n}"),
                on_alert_from=t.get_str("on_alert_from"),
                device=t.get_str("device", ident=True),
                output=t.get_int("output", 0, lo=0, hi=255),
                value=t.get_int("value", 1, lo=0, hi=255),
                duration_s=t.get_float("duration_s", 5.0, lo=0, hi=(2**32 - 1) / 1000),
                cooldown_s=t.get_float("cooldown_s", 0.0, lo=0, hi=86400),
                pipeline=pipeline,
                clear_value=t.get_int("clear_value", 0, lo=0, hi=255) if "clear_value" in item else None,
            )
        )
    return out


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate a gateway TOML file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read configuration ({exc.strerror})") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from exc
    return replace(from_dict(data, base_dir=p.resolve().parent), source=p)
