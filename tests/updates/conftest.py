"""Fixtures shared by the tests of signed updates: a release key pair and ``make_bundle``.

def test_x(make_bundle, release_key, tmp_path):
    path = make_bundle(kind="model", name="vibration", counter=2, files={"m.json": b"{}"}, entry="m.json")
    bundle = verify_bundle(path, keys=release_key.trusted, site="plant1", gateway_id="gw1",
                           counters=Counters(tmp_path / "c.json"), now=time.time(), max_bytes=1 << 20)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.updates.bundle import TrustedKeys, load_trusted_keys
from tools.release.keys import keygen, load_private_key
from tools.release.pack import build_bundle, firmware_metadata


@dataclass(frozen=True)
class ReleaseKey:
    private: Ed25519PrivateKey
    key_path: Path  # NAME.key, 0600
    pub_path: Path  # NAME.pub: what [updates] trusted_keys names
    key_id: str

    @property
    def trusted(self) -> TrustedKeys:
        return load_trusted_keys([self.pub_path])


def make_release_key(directory: Path, name: str = "release") -> ReleaseKey:
    key_path, pub_path, kid = keygen(directory / name)
    return ReleaseKey(load_private_key(key_path), key_path, pub_path, kid)


@pytest.fixture
def release_key(tmp_path: Path) -> ReleaseKey:
    return make_release_key(tmp_path / "keys")


#: payload and entry per kind when a test gives none
DEFAULT_FILES: dict[str, tuple[dict[str, bytes], str]] = {
    "model": ({"model.json": b'{"format": "edgeline-model"}', "model.tflite": b"TFL3" + bytes(60)}, "model.json"),
    "config": ({"gateway.toml": b'[gateway]\nsite = "plant1"\n'}, "gateway.toml"),
    "firmware": ({"sensorfw/app.mpy": b"M\x06" + bytes(30), "shared_protocol/__init__.mpy": b"M\x06"}, ""),
}


@pytest.fixture
def make_bundle(tmp_path: Path, release_key: ReleaseKey) -> Callable[..., Path]:
    """``make_bundle(kind=, name=, version=, counter=, files=, entry=, key=, sites=, gateways=,
    created=, expires=, firmware=, out=)`` -> the path of a signed bundle (defaults: a small model
    "pipe" 1.0, counter 1, any target, expires in a day, signed with ``release_key``)."""
    made = [0]

    def make(
        *,
        kind: str = "model",
        name: str | None = None,
        version: str = "1.0",
        counter: int = 1,
        files: Mapping[str, bytes] | None = None,
        entry: str | None = None,
        key: Ed25519PrivateKey | None = None,
        sites: tuple[str, ...] = (),
        gateways: tuple[str, ...] = (),
        created: float | None = None,
        expires: float | None = None,
        firmware: dict[str, Any] | None = None,
        out: Path | None = None,
    ) -> Path:
        default_files, default_entry = DEFAULT_FILES[kind]
        if name is None:
            name = {"model": "pipe", "config": "gateway", "firmware": "sensorfw-native"}[kind]
        if firmware is None and kind == "firmware":
            firmware = firmware_metadata(
                arch="native", fw_version=version, devices=["*"], canary=[], wave=1, max_failure_rate=0.5
            )
        created = time.time() if created is None else created
        made[0] += 1
        if out is None:
            out = tmp_path / "bundles" / f"{made[0]}-{name}-{version}.bundle"
            out.parent.mkdir(exist_ok=True)
        return build_bundle(
            out,
            key=key or release_key.private,
            files=dict(default_files if files is None else files),
            kind=kind,
            name=name,
            version=version,
            counter=counter,
            entry=default_entry if entry is None else entry,
            sites=sites,
            gateways=gateways,
            created=created,
            expires=created + 86400 if expires is None else expires,
            firmware=firmware,
        )

    return make
