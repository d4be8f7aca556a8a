"""The ``[updates]`` section of gateway.toml, as frozen dataclasses (parsed and checked in
gateway/config.py ``_updates``, so every key's rule lives beside the others)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ShadowSettings:
    """``[updates.shadow]``: when a new model may replace the current one."""

    windows: int = 200  # windows the candidate scores beside the current model before a verdict
    max_alert_rate: float = 0.05  # most windows (fraction) the candidate may flag as alerts
    min_agreement: float = 0.90  # least fraction of windows with the same decision as the current model
    max_errors: int = 0  # inference errors the candidate may have (any more: not promoted)
    timeout_s: float = 86400.0  # no verdict after this long (too few windows): not promoted


@dataclass(frozen=True)
class ConfigTrialSettings:
    """``[updates.config]``: how a new gateway.toml proves itself after the restart into it."""

    health_timeout_s: float = 60.0  # healthy (local broker subscribed, cloud link up) within this
    max_starts: int = 2  # starts into the new config without becoming healthy before rollback


@dataclass(frozen=True)
class FirmwareSettings:
    """``[updates.firmware]``: firmware over the air to the boards."""

    device_keys_dir: Path | None = (
        None  # per-device OTA keys, <dir>/<device>/ota.key (32 bytes, 0600), from the flash tool
    )
    chunk_bytes: int = 512  # data bytes per OTA chunk (CMD_OTA), 64..4000
    window: int = 4  # chunks in flight per device
    chunk_timeout_s: float = 15.0  # no progress for this long: resend from the device's offset
    max_retries: int = 5  # resends without progress before the device's transfer fails
    confirm_timeout_s: float = 600.0  # switched but not confirmed within this: failed


@dataclass(frozen=True)
class UpdatesSettings:
    """``[updates]``: present (and ``enabled = true``) to take signed bundles at all."""

    trusted_keys: tuple[Path, ...]  # Ed25519 public keys (PEM) whose signatures are accepted
    state_dir: Path  # staging, counters, installed bundles; default data_dir/updates
    max_bundle_bytes: int = 16 * 1024 * 1024
    shadow: ShadowSettings = field(default_factory=ShadowSettings)
    config: ConfigTrialSettings = field(default_factory=ConfigTrialSettings)
    firmware: FirmwareSettings = field(default_factory=FirmwareSettings)
