"""``[forward]`` table of the gateway TOML, read into a frozen dataclass.

Every error names the key (``forward.<key>``) and says what is expected, so a user can fix the
file without reading this code.  Unknown keys are errors too: a typo must not silently fall back
to a default (e.g. a misspelt ``disk_budget_mb`` would otherwise give a 256 MB queue on a 1 GB card).
"""

from __future__ import annotations

import importlib.util
import os
import stat
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from gateway.forward.errors import ForwardConfigError
from gateway.forward.queue import LANES

PAYLOAD_FORMATS = ("json", "sparkplug")


@dataclass(frozen=True)
class TLSConfig:
    """TLS toward the cloud broker.  ``ca_file`` verifies the server; cert/key give mutual TLS.

    With ``tpm_tcti`` the key file is a TSS2 PRIVATE KEY whose private half is in that TPM
    (``edgeline-gateway tpm-key``; gateway/tpm.py) and every signature is made there."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    verify: bool = True
    tpm_tcti: str | None = None


@dataclass(frozen=True)
class ForwardConfig:
    """Store-and-forward settings (the ``[forward]`` table).  Build with :meth:`from_dict`."""

    host: str
    port: int = 1883
    tls: TLSConfig | None = None
    username: str | None = None
    password_file: Path | None = None
    client_id: str | None = None
    topic_prefix: str = "edgeline"
    qos: int = 1
    keepalive_s: int = 30
    persistent_session: bool = True
    db_path: Path | None = None
    disk_budget_mb: float = 256.0
    max_inflight: int = 64
    bandwidth_limit_bytes_per_s: int | None = None
    drain_limit_messages_per_s: float | None = None
    payload_format: str = "json"
    sparkplug_group: str = "edgeline"
    backoff_min_s: float = 0.5
    backoff_max_s: float = 60.0
    commit_interval_ms: float = 5.0
    commit_max_delay_ms: float = 1000.0
    urgent_lanes: tuple[str, ...] = ("alert",)
    delete_interval_ms: float = 50.0
    memory_buffer_max: int = 100_000
    compaction_factor: int = 4
    compaction_max_level: int = 4

    @property
    def disk_budget_bytes(self) -> int:
        return int(self.disk_budget_mb * 1024 * 1024)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ForwardConfig:
        """Validate the ``[forward]`` table; raise :class:`ForwardConfigError` naming the bad key."""
        if not isinstance(d, dict):
            raise ForwardConfigError(f"[forward] must be a table, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ForwardConfigError(f"forward.{unknown[0]}: unknown key; expected one of: {', '.join(sorted(known))}")
        if "host" not in d:
            raise ForwardConfigError(
                'forward.host: missing; expected the cloud broker host name, e.g. host = "mqtt.example.com"'
            )
        host = _str(d, "host")
        if not host:
            raise ForwardConfigError("forward.host: expected a non-empty host name")
        tls = _tls(d["tls"]) if "tls" in d else None
        port = _int(d, "port", 8883 if tls is not None else 1883, lo=1, hi=65535)
        qos = _int(d, "qos", 1, lo=1, hi=1)
        payload_format = _str(d, "payload_format", "json")
        if payload_format not in PAYLOAD_FORMATS:
            raise ForwardConfigError(
                f"forward.payload_format: expected one of {', '.join(PAYLOAD_FORMATS)}, got {payload_format!r}"
            )
        if payload_format == "sparkplug" and importlib.util.find_spec("pysparkplug") is None:
            raise ForwardConfigError(
                'forward.payload_format: "sparkplug" needs the pysparkplug package (pip install pysparkplug==0.3.0)'
            )
        sparkplug_group = _str(d, "sparkplug_group", "edgeline")
        if not sparkplug_group or any(c in sparkplug_group for c in "/+#"):
            raise ForwardConfigError(
                f"forward.sparkplug_group: expected a Sparkplug group id without '/', '+' or '#', got {sparkplug_group!r}"
            )
        topic_prefix = _str(d, "topic_prefix", "edgeline")
        if not topic_prefix or any(c in topic_prefix for c in "+#") or topic_prefix.endswith("/"):
            raise ForwardConfigError(
                f"forward.topic_prefix: expected a prefix without '+', '#' or a trailing '/', got {topic_prefix!r}"
            )
        backoff_min = _float(d, "backoff_min_s", 0.5, lo=0.001)
        backoff_max = _float(d, "backoff_max_s", 60.0, lo=0.001)
        if backoff_max < backoff_min:
            raise ForwardConfigError(
                f"forward.backoff_max_s: expected >= backoff_min_s ({backoff_min}), got {backoff_max}"
            )
        bandwidth = d.get("bandwidth_limit_bytes_per_s")
        if bandwidth is not None:
            bandwidth = _int(d, "bandwidth_limit_bytes_per_s", 0, lo=1)
        drain = d.get("drain_limit_messages_per_s")
        if drain is not None:
            drain = _float(d, "drain_limit_messages_per_s", 0.0, lo=0.001)
        username = _opt_str(d, "username")
        password_file = _opt_path(d, "password_file")
        if password_file is not None and username is None:
            raise ForwardConfigError("forward.password_file: set forward.username too (a password needs a user name)")
        client_id = _opt_str(d, "client_id")
        commit_interval = _float(d, "commit_interval_ms", 5.0, lo=0.0, hi=10_000.0)
        # Default: 1 s, or the interval when that is set longer (a config written for fixed intervals).
        commit_max_delay = _float(d, "commit_max_delay_ms", max(1000.0, commit_interval), lo=0.0, hi=60_000.0)
        if commit_max_delay < commit_interval:
            raise ForwardConfigError(
                f"forward.commit_max_delay_ms: expected >= commit_interval_ms ({commit_interval}), got {commit_max_delay}"
            )
        return cls(
            host=host,
            port=port,
            tls=tls,
            username=username,
            password_file=password_file,
            client_id=client_id,
            topic_prefix=topic_prefix,
            qos=qos,
            keepalive_s=_int(d, "keepalive_s", 30, lo=5, hi=65535),
            persistent_session=_bool(d, "persistent_session", True),
            db_path=_opt_path(d, "db_path"),
            disk_budget_mb=_float(d, "disk_budget_mb", 256.0, lo=0.25),
            max_inflight=_int(d, "max_inflight", 64, lo=1, hi=65535),
            bandwidth_limit_bytes_per_s=bandwidth,
            drain_limit_messages_per_s=drain,
            payload_format=payload_format,
            sparkplug_group=sparkplug_group,
            backoff_min_s=backoff_min,
            backoff_max_s=backoff_max,
            commit_interval_ms=commit_interval,
            commit_max_delay_ms=commit_max_delay,
            urgent_lanes=_lanes(d, "urgent_lanes", ("alert",)),
            delete_interval_ms=_float(d, "delete_interval_ms", 50.0, lo=0.0, hi=60_000.0),
            memory_buffer_max=_int(d, "memory_buffer_max", 100_000, lo=1),
            compaction_factor=_int(d, "compaction_factor", 4, lo=2, hi=1024),
            compaction_max_level=_int(d, "compaction_max_level", 4, lo=0, hi=32),
        )


def check_private_files(config: ForwardConfig) -> None:
    """Refuse secrets that others can read: ``forward.password_file`` and ``forward.tls.key_file``
    must be readable by their owner only (like ssh does for private keys).

    Raises :class:`ForwardConfigError` naming the key, the file and the fix (``chmod 600``); also
    when the key file was made by a TPM but ``forward.tls.tpm_tcti`` is not set, or the other way round.
    """
    secrets = [("forward.password_file", config.password_file)]
    if config.tls is not None:
        secrets.append(("forward.tls.key_file", config.tls.key_file))
    for key, path in secrets:
        if path is None:
            continue
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise ForwardConfigError(f"{key}: cannot read {path} ({exc.strerror})") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ForwardConfigError(
                f"{key}: {path} is accessible by group or others (mode {stat.S_IMODE(mode):04o}); it holds a"
                f" secret: make it private with `chmod 600 {path}` (owned by the user the gateway runs as)"
            )
    if config.tls is not None and config.tls.key_file is not None:
        _check_tpm_key(config.tls.key_file, config.tls.tpm_tcti)


TSS2_PEM_BEGIN = b"-----BEGIN TSS2 PRIVATE KEY-----"


def _check_tpm_key(key_file: Path, tpm_tcti: str | None) -> None:
    """A key made in a TPM is used only through that TPM (``tpm_tcti``), and ``tpm_tcti`` only with one."""
    try:
        with open(key_file, "rb") as f:
            tpm_key = TSS2_PEM_BEGIN in f.read(4096)
    except OSError as exc:
        raise ForwardConfigError(f"forward.tls.key_file: cannot read {key_file} ({exc.strerror})") from exc
    if tpm_key and tpm_tcti is None:
        raise ForwardConfigError(
            f"forward.tls.key_file: {key_file} is a TPM key (TSS2 PRIVATE KEY): set forward.tls.tpm_tcti to the"
            ' TPM that made it, e.g. tpm_tcti = "device:/dev/tpmrm0"'
        )
    if not tpm_key and tpm_tcti is not None:
        raise ForwardConfigError(
            f"forward.tls.tpm_tcti: {key_file} is not a TPM key (no TSS2 PRIVATE KEY in it): drop tpm_tcti for a key"
            " file, or make a TPM key with `edgeline-gateway tpm-key`"
        )


def _tls(value: Any) -> TLSConfig:
    if not isinstance(value, dict):
        raise ForwardConfigError(
            f"forward.tls: expected a table (ca_file, cert_file, key_file, verify, tpm_tcti), got {type(value).__name__}"
        )
    known = {"ca_file", "cert_file", "key_file", "verify", "tpm_tcti"}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ForwardConfigError(f"forward.tls.{unknown[0]}: unknown key; expected one of: {', '.join(sorted(known))}")
    cert = _opt_path(value, "cert_file", "forward.tls.")
    key = _opt_path(value, "key_file", "forward.tls.")
    if (cert is None) != (key is None):
        raise ForwardConfigError("forward.tls.cert_file / forward.tls.key_file: set both (mutual TLS) or neither")
    verify = _bool(value, "verify", True, "forward.tls.")
    ca = _opt_path(value, "ca_file", "forward.tls.")
    tpm_tcti = _opt_str(value, "tpm_tcti", "forward.tls.")
    if tpm_tcti is not None and (not tpm_tcti or key is None):
        raise ForwardConfigError(
            'forward.tls.tpm_tcti: names the TPM that holds forward.tls.key_file, e.g. "device:/dev/tpmrm0";'
            " set key_file and cert_file too (edgeline-gateway tpm-key makes the key)"
        )
    return TLSConfig(ca_file=ca, cert_file=cert, key_file=key, verify=verify, tpm_tcti=tpm_tcti)


def _lanes(d: dict[str, Any], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = d.get(key, list(default))
    if not isinstance(value, list) or not all(isinstance(v, str) and v in LANES for v in value):
        raise ForwardConfigError(
            f"forward.{key}: expected a list of lane names out of {', '.join(LANES)}, got {value!r}"
        )
    return tuple(dict.fromkeys(value))


def _str(d: dict[str, Any], key: str, default: str | None = None, where: str = "forward.") -> str:
    value = d.get(key, default)
    if not isinstance(value, str):
        raise ForwardConfigError(f"{where}{key}: expected a string, got {type(value).__name__} {value!r}")
    return value


def _opt_str(d: dict[str, Any], key: str, where: str = "forward.") -> str | None:
    if d.get(key) is None:
        return None
    return _str(d, key, None, where)


def _opt_path(d: dict[str, Any], key: str, where: str = "forward.") -> Path | None:
    value = _opt_str(d, key, where)
    if value is None:
        return None
    if not value:
        raise ForwardConfigError(f"{where}{key}: expected a file path, got an empty string")
    return Path(value)


def _bool(d: dict[str, Any], key: str, default: bool, where: str = "forward.") -> bool:
    value = d.get(key, default)
    if not isinstance(value, bool):
        raise ForwardConfigError(f"{where}{key}: expected true or false, got {value!r}")
    return value


def _int(d: dict[str, Any], key: str, default: int, *, lo: int | None = None, hi: int | None = None) -> int:
    value = d.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ForwardConfigError(f"forward.{key}: expected an integer, got {value!r}")
    _range(key, value, lo, hi)
    return value


def _float(d: dict[str, Any], key: str, default: float, *, lo: float | None = None, hi: float | None = None) -> float:
    value = d.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ForwardConfigError(f"forward.{key}: expected a number, got {value!r}")
    _range(key, value, lo, hi)
    return float(value)


def _range(key: str, value: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and hi is not None and lo == hi and value != lo:
        raise ForwardConfigError(f"forward.{key}: only {lo} is supported, got {value}")
    if lo is not None and value < lo:
        raise ForwardConfigError(f"forward.{key}: expected >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise ForwardConfigError(f"forward.{key}: expected <= {hi}, got {value}")
