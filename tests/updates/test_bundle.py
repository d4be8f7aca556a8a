"""Release bundles: a good bundle verifies and extracts; every refusal reason is raised by the
check that owns it, and nothing is written to the destination on refusal."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.updates.bundle import BundleError, Counters, canonical_json, extract, verify_bundle
from tests.updates.conftest import ReleaseKey, make_release_key

SITE, GW = "plant1", "gw1"
Make = Callable[..., Path]


def verify(path: Path, key: ReleaseKey, counters: Counters, *, now: float | None = None, max_bytes: int = 1 << 20):
    return verify_bundle(
        path,
        keys=key.trusted,
        site=SITE,
        gateway_id=GW,
        counters=counters,
        now=time.time() if now is None else now,
        max_bytes=max_bytes,
    )


@pytest.fixture
def counters(tmp_path: Path) -> Counters:
    return Counters(tmp_path / "state" / "counters.json")


def refused(reason: str, path: Path, key: ReleaseKey, counters: Counters, **kw: float) -> str:
    with pytest.raises(BundleError) as info:
        verify(path, key, counters, **kw)
    assert info.value.reason == reason, str(info.value)
    return str(info.value)


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def rewrite(path: Path, content: dict[str, bytes], *, kinds: dict[str, bytes] | None = None) -> Path:
    """The same members (or changed ones) in a new tar; ``kinds`` sets a member's tar type."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in content.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if kinds and name in kinds:
                info.type = kinds[name]
                info.size = 0
                info.linkname = "/etc/passwd"
                tar.addfile(info)
            else:
                tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return path


def resign(path: Path, key: ReleaseKey, change: Callable[[dict], None]) -> Path:
    """A bundle whose metadata was changed and signed again by a trusted key."""
    content = members(path)
    meta = json.loads(content["bundle.json"])
    change(meta)
    content["bundle.json"] = canonical_json(meta)
    content["bundle.sig"] = key.private.sign(content["bundle.json"])
    return rewrite(path, content)


def test_good_bundle_verifies_and_extracts(
    make_bundle: Make, release_key: ReleaseKey, counters: Counters, tmp_path: Path
):
    files = {"model.json": b'{"a": 1}', "sub/model.tflite": bytes(range(256)) * 40}
    path = make_bundle(name="vibration", version="2.1", counter=3, files=files, entry="model.json", sites=(SITE,))
    bundle = verify(path, release_key, counters)
    assert (bundle.kind, bundle.name, bundle.version, bundle.counter) == ("model", "vibration", "2.1", 3)
    assert bundle.key_id == release_key.key_id and bundle.entry == "model.json"
    assert [f.path for f in bundle.files] == ["model.json", "sub/model.tflite"]
    dest = tmp_path / "staged" / bundle.bundle_id
    extract(path, bundle, dest)
    assert {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()} == files
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700


def test_bundle_bytes_are_deterministic(make_bundle: Make):
    a = make_bundle(created=1_800_000_000.0)
    b = make_bundle(created=1_800_000_000.0)
    assert a.read_bytes() == b.read_bytes()


def test_one_flipped_byte_in_metadata_is_a_bad_signature(
    make_bundle: Make, release_key: ReleaseKey, counters: Counters
):
    path = make_bundle(version="1.0")
    content = members(path)
    # inside the version string (still valid JSON) and in a structural byte (no longer JSON)
    for old, new in ((b'"version":"1.0"', b'"version":"1.1"'), (b'{"counter"', b'["counter"')):
        changed = dict(content, **{"bundle.json": content["bundle.json"].replace(old, new)})
        assert changed["bundle.json"] != content["bundle.json"]
        message = refused("bad_signature", rewrite(path, changed), release_key, counters)
        assert "again" in message


def test_key_not_trusted_is_unknown_key(make_bundle: Make, release_key: ReleaseKey, counters: Counters, tmp_path: Path):
    other = make_release_key(tmp_path / "other-keys", "stranger")
    message = refused("unknown_key", make_bundle(key=other.private), release_key, counters)
    assert other.key_id in message and "trusted_keys" in message


def test_signature_by_another_key_under_a_trusted_key_id(
    make_bundle: Make, release_key: ReleaseKey, counters: Counters, tmp_path: Path
):
    other = make_release_key(tmp_path / "other-keys", "stranger")
    path = make_bundle()
    content = members(path)
    content["bundle.sig"] = other.private.sign(content["bundle.json"])
    refused("bad_signature", rewrite(path, content), release_key, counters)


@pytest.mark.parametrize("target", [(("plant2",), (), "plant2"), ((SITE,), ("gw7", "gw8"), "gw7")])
def test_wrong_target(make_bundle: Make, release_key: ReleaseKey, counters: Counters, target):
    sites, gateways, named = target
    message = refused("wrong_target", make_bundle(sites=sites, gateways=gateways), release_key, counters)
    assert named in message


def test_targeted_to_this_site_and_gateway(make_bundle: Make, release_key: ReleaseKey, counters: Counters):
    verify(make_bundle(sites=("plant0", SITE), gateways=(GW,)), release_key, counters)


def test_expired(make_bundle: Make, release_key: ReleaseKey, counters: Counters):
    now = time.time()
    path = make_bundle(created=now - 100, expires=now - 1)
    assert "--expires-days" in refused("expired", path, release_key, counters, now=now)
    verify(path, release_key, counters, now=now - 2)  # the same bundle before its expiry


def test_replayed_counter_also_after_a_restart(make_bundle: Make, release_key: ReleaseKey, counters: Counters):
    first, same, older = make_bundle(counter=5), make_bundle(counter=5, version="1.1"), make_bundle(counter=4)
    bundle = verify(first, release_key, counters)
    counters.accept(bundle.kind, bundle.name, bundle.counter)
    reopened = Counters(counters.path)  # as after a gateway restart
    assert "--counter 6" in refused("replayed", same, release_key, reopened)
    refused("replayed", older, release_key, reopened)
    verify(make_bundle(counter=6), release_key, reopened)
    verify(make_bundle(counter=1, name="other"), release_key, reopened)  # counters are per (kind, name)
    assert stat.S_IMODE(os.stat(counters.path).st_mode) == 0o600


def test_payload_with_another_hash(make_bundle: Make, release_key: ReleaseKey, counters: Counters, tmp_path: Path):
    path = make_bundle()
    content = members(path)
    tflite = content["payload/model.tflite"]
    content["payload/model.tflite"] = bytes([tflite[0] ^ 1]) + tflite[1:]
    rewrite(path, content)
    assert "model.tflite" in refused("bad_hash", path, release_key, counters)
    content["payload/model.tflite"] = tflite + b"x"  # another size: refused before it is read
    refused("bad_hash", rewrite(path, content), release_key, counters)


@pytest.mark.parametrize("where", ["header", "data"])
def test_truncated(make_bundle: Make, release_key: ReleaseKey, counters: Counters, where: str):
    path = make_bundle(files={"model.json": b"{}", "model.tflite": os.urandom(20000)})
    with tarfile.open(path) as tar:
        last = tar.getmembers()[-1]
    cut = last.offset + 100 if where == "header" else last.offset_data + last.size - 1
    path.write_bytes(path.read_bytes()[:cut])
    refused("bad_format", path, release_key, counters)


def test_garbage_and_empty(tmp_path: Path, release_key: ReleaseKey, counters: Counters):
    garbage = tmp_path / "garbage.bundle"
    garbage.write_bytes(os.urandom(5000))
    refused("bad_format", garbage, release_key, counters)
    empty = tmp_path / "empty.bundle"
    empty.write_bytes(b"")
    refused("bad_format", empty, release_key, counters)


def test_too_large_before_reading(make_bundle: Make, release_key: ReleaseKey, counters: Counters):
    path = make_bundle()
    message = refused("too_large", path, release_key, counters, max_bytes=path.stat().st_size - 1)
    assert "max_bundle_bytes" in message


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("payload/extra.bin", None),
        ("payload/../../etc/evil", None),
        ("/etc/evil", None),
        ("payload/model.json.lnk", tarfile.SYMTYPE),
        ("payload/model.json.hard", tarfile.LNKTYPE),
    ],
)
def test_extra_member_or_link_or_escape(make_bundle: Make, release_key: ReleaseKey, counters: Counters, name, kind):
    path = make_bundle()
    content = members(path)
    content[name] = b"x"
    rewrite(path, content, kinds={name: kind} if kind else None)
    refused("bad_format", path, release_key, counters)


def test_duplicate_member(make_bundle: Make, release_key: ReleaseKey, counters: Counters):
    path = make_bundle()
    content = members(path)
    with tarfile.open(path, "a") as tar:  # a second model.json after the first
        info = tarfile.TarInfo("payload/model.json")
        info.size = len(content["payload/model.json"])
        tar.addfile(info, io.BytesIO(content["payload/model.json"]))
    assert "twice" in refused("bad_format", path, release_key, counters)


@pytest.mark.parametrize("bad_path", ["../escape", "a/../../b", "/abs", "a//b", "./a"])
def test_path_escape_in_signed_metadata(make_bundle: Make, release_key: ReleaseKey, counters: Counters, bad_path: str):
    """Even a trusted key cannot name a path outside the destination."""
    path = make_bundle()

    def change(meta: dict) -> None:
        meta["files"][0]["path"] = bad_path

    content = members(resign(path, release_key, change))
    content[f"payload/{bad_path}"] = content.pop("payload/model.json")
    rewrite(path, content)
    refused("bad_format", path, release_key, counters)


def test_missing_payload(make_bundle: Make, release_key: ReleaseKey, counters: Counters):
    path = make_bundle()
    content = members(path)
    del content["payload/model.tflite"]
    assert "missing" in refused("bad_format", rewrite(path, content), release_key, counters)


def test_bad_metadata_fields_name_the_field(make_bundle: Make, release_key: ReleaseKey, counters: Counters):
    for field, value in (("counter", 0), ("version", "1 0"), ("kind", "kernel"), ("entry", "nope.json")):

        def change(meta: dict, field: str = field, value: object = value) -> None:
            meta[field] = value

        message = refused("bad_format", resign(make_bundle(), release_key, change), release_key, counters)
        assert field in message


def test_extract_refuses_a_file_changed_after_verification(
    make_bundle: Make, release_key: ReleaseKey, counters: Counters, tmp_path: Path
):
    path = make_bundle()
    bundle = verify(path, release_key, counters)
    content = members(path)
    content["payload/model.json"] = content["payload/model.json"].replace(b"edgeline", b"EDGELINE")
    rewrite(path, content)
    dest = tmp_path / "staged" / "x"
    with pytest.raises(BundleError) as info:
        extract(path, bundle, dest)
    assert info.value.reason == "bad_hash"
    assert not dest.exists()


def test_firmware_and_config_bundles(make_bundle: Make, release_key: ReleaseKey, counters: Counters):
    fw = verify(make_bundle(kind="firmware"), release_key, counters)
    assert fw.firmware is not None and fw.firmware["arch"] == "native" and fw.entry == ""
    cfg = verify(make_bundle(kind="config"), release_key, counters)
    assert (cfg.name, cfg.entry) == ("gateway", "gateway.toml")
