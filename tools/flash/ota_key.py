"""A device's OTA key: 32 random bytes the board checks firmware transfers with (HMAC-SHA256,
shared_protocol/ota.py), written to the board as ``ota.key`` at the flash root.

On this computer the key lives in the device's private folder beside its TLS files
(``<ca dir>/devices/<id>/ota.key``, the folder 0700, the key 0600 from creation); the
gateway reads the same folder through ``[updates.firmware] device_keys_dir``
(``<ca dir>/devices``). Provisioning again reuses the key, so a board re-flashed keeps
taking its gateway's updates.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from tools.flash.errors import FlashError
from tools.flash.pki import private_dir, write_file

BOARD_PATH = "ota.key"  # at the board's flash root (the A/B loader's folder, not a slot)
OTA_STATE = "ota.json"  # the A/B loader's state (firmware/main.py); none: the code at the root runs
KEY_NAME = "ota.key"
KEY_BYTES = 32


def obtain(folder: Path) -> bytes:
    """The key in the device's private folder, made (0600 from creation) if it has none."""
    path = folder / KEY_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        private_dir(folder)
        data = secrets.token_bytes(KEY_BYTES)
        write_file(path, data, mode=0o600)
        return data
    if len(data) != KEY_BYTES:
        raise FlashError(
            f"{path} holds {len(data)} bytes, not {KEY_BYTES}: it is not an OTA key; move it away and"
            " provision again (the board then needs the new key before it takes updates)"
        )
    if os.stat(path).st_mode & 0o077:
        raise FlashError(f"{path} is readable by other users: chmod 600 {path}")
    return data
