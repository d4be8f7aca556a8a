"""The per-device OTA key (tools/flash/ota_key.py): made 0600 in the device's 0700 private
folder, reused, refused when it is not a key or others can read it; provisioning writes it
to the board as ota.key (never shown) and a deploy drops the A/B loader's ota.json so the
code just deployed is what runs."""

from __future__ import annotations

import stat
import textwrap
from pathlib import Path

import pytest

from tools.flash import ota_key
from tools.flash.cli import main
from tools.flash.errors import FlashError
from tools.vboard import VirtualBoard


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_made_private_then_reused(tmp_path: Path) -> None:
    folder = tmp_path / "ca" / "devices" / "pump-01"
    key = ota_key.obtain(folder)
    assert len(key) == ota_key.KEY_BYTES
    assert mode(folder) == 0o700 and mode(folder.parent) == 0o700
    assert mode(folder / "ota.key") == 0o600
    assert ota_key.obtain(folder) == key
    assert ota_key.obtain(tmp_path / "ca" / "devices" / "pump-02") != key


def test_a_file_that_is_no_key_or_is_readable_by_others_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "devices" / "d1"
    ota_key.obtain(folder)
    (folder / "ota.key").chmod(0o644)
    with pytest.raises(FlashError, match=r"readable by other users: chmod 600 .*ota\.key"):
        ota_key.obtain(folder)
    (folder / "ota.key").write_bytes(b"short")
    with pytest.raises(FlashError, match="holds 5 bytes, not 32: it is not an OTA key"):
        ota_key.obtain(folder)


def test_provision_writes_ota_key_and_drops_ota_json(
    tmp_path: Path, board: VirtualBoard, capfd: pytest.CaptureFixture[str]
) -> None:
    ca_dir = tmp_path / "ca"
    devices = tmp_path / "devices.toml"
    devices.write_text(
        textwrap.dedent(f"""
        [ca]
        dir = "{ca_dir}"

        [devices.vb1]
        arch = "native"
        [devices.vb1.config]
        site = "lab"
        broker = {{ host = "127.0.0.1", port = 1883 }}
        sample = {{ rate_hz = 20, batch = 8 }}
        sensors = [{{ type = "analog", name = "temp", pin = 34 }}]
        health_s = 5
        """)
    )
    flash = board.flash_dir
    (flash / "ota.json").write_text('{"active": "a", "trial": "", "starts": 0}')  # an earlier OTA
    args = ["provision", "--device", "vb1", "--config", str(devices), "--port", board.port, "--no-reset"]
    assert main([*args, "--build-dir", str(tmp_path / "build")]) == 0
    out, err = capfd.readouterr()
    saved = ca_dir / "devices" / "vb1" / "ota.key"
    assert mode(saved) == 0o600
    key = saved.read_bytes()
    assert (flash / "ota.key").read_bytes() == key
    assert key.hex() not in out + err
    assert "ota.key: written (32 B, key not shown)" in out
    assert not (flash / "ota.json").exists() and "ota.json: removed" in out
    # again: the same key, nothing written
    assert main([*args, "--build-dir", str(tmp_path / "build")]) == 0
    assert "ota.key: unchanged" in capfd.readouterr().out
    assert saved.read_bytes() == key
