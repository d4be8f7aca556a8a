"""Key rotation (docs/updates.md): a config bundle signed by the old release key carries the new
public key and a gateway.toml that trusts both; once it is in, bundles signed by the new key are
accepted, and a later config bundle signed by the new key drops the old one. The release tool
packs the key with ``pack config --public-key``; the gateway writes it beside gateway.toml before
it checks the new file, and never replaces another file of that name."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.config import load
from gateway.updates.bundle import BundleError, Counters, extract, load_trusted_keys, verify_bundle
from gateway.updates.events import UpdateEvents
from gateway.updates.gwconfig import ConfigUpdates, start_config
from tests.support.gateway_proc import GatewayProcess
from tests.support.mosquitto import free_port
from tests.updates.conftest import ReleaseKey, make_release_key
from tools.release.cli import main as release


def _updates(*pubs: str) -> str:
    keys = ", ".join(f'"{p}"' for p in pubs)
    return f"\n[updates]\nenabled = true\ntrusted_keys = [{keys}]\n"


def _pack_config(tmp: Path, key: ReleaseKey, text: str, counter: int, *pubs: Path) -> Path:
    src = tmp / f"gateway-{counter}.toml"
    src.write_text(text)
    out = tmp / f"config-{counter}.bundle"
    args = ["pack", "config", "--config", str(src), "--key", str(key.key_path), "--counter", str(counter)]
    args += ["--version", f"c{counter}", "--out", str(out)]
    for pub in pubs:
        args += ["--public-key", str(pub)]
    assert release(args) == 0
    return out


def _handler(gp: GatewayProcess, records: list[dict[str, object]], restarts: list[int]) -> ConfigUpdates:
    cfg = load(gp.config)
    assert cfg.updates is not None
    return ConfigUpdates(
        config_path=gp.config,
        state_dir=cfg.updates.state_dir,
        settings=cfg.updates.config,
        events=UpdateEvents(state_topic=None, publish=None, submit=lambda lane, rec: records.append(rec)),
        restart=lambda: restarts.append(1),
    )


def _restart_healthy(gp: GatewayProcess) -> None:
    """What the re-executed gateway does: count the trial start, then confirm it when healthy."""
    start_config(gp.config)
    records: list[dict[str, object]] = []
    _handler(gp, records, []).tick(True)
    assert [r["state"] for r in records] == ["confirmed"], records


def _install(gp: GatewayProcess, bundle_path: Path, counters: Counters) -> tuple[list[dict[str, object]], list[int]]:
    """Verify with the keys the gateway's current gateway.toml trusts, then hand the bundle to
    the config handler, as the update service does."""
    cfg = load(gp.config)
    assert cfg.updates is not None
    bundle = verify_bundle(
        bundle_path,
        keys=load_trusted_keys(cfg.updates.trusted_keys),
        site="s1",
        gateway_id="gw1",
        counters=counters,
        now=time.time(),
        max_bytes=1 << 20,
    )
    counters.accept(bundle.kind, bundle.name, bundle.counter)
    staged = gp.dir / f"staged-{bundle.counter}"
    extract(bundle_path, bundle, staged)
    records: list[dict[str, object]] = []
    restarts: list[int] = []
    _handler(gp, records, restarts).install(bundle, staged)
    return records, restarts


def test_rotation_through_config_bundles(tmp_path: Path) -> None:
    old = make_release_key(tmp_path / "offline", "release-2026")
    new = make_release_key(tmp_path / "offline", "release-2027")
    gp = GatewayProcess(tmp_path / "gw", free_port(), extra_toml=_updates(str(old.pub_path)))
    base = gp.config.read_text().replace(_updates(str(old.pub_path)), "")
    counters = Counters(tmp_path / "counters.json")
    # 1. signed by the old key: the new key travels with a gateway.toml that trusts both
    both = base + _updates(str(old.pub_path), "release-2027.pub")  # relative: beside gateway.toml
    records, restarts = _install(gp, _pack_config(tmp_path, old, both, 2, new.pub_path), counters)
    assert [r["state"] for r in records] == ["installed"] and restarts == [1], records
    assert (gp.dir / "release-2027.pub").read_bytes() == new.pub_path.read_bytes()
    _restart_healthy(gp)
    # 2. signed by the new key: accepted now; it drops the old key
    only_new = base + _updates("release-2027.pub")
    records, restarts = _install(gp, _pack_config(tmp_path, new, only_new, 3), counters)
    assert [r["state"] for r in records] == ["installed"], records
    _restart_healthy(gp)
    # 3. the old key is no longer trusted
    with pytest.raises(BundleError) as err:
        _install(gp, _pack_config(tmp_path, old, only_new, 4), counters)
    assert err.value.reason == "unknown_key"


def test_a_key_file_of_that_name_is_never_replaced(tmp_path: Path) -> None:
    old = make_release_key(tmp_path / "offline", "release")
    other = make_release_key(tmp_path / "other", "release-2027")
    gp = GatewayProcess(tmp_path / "gw", free_port(), extra_toml=_updates(str(old.pub_path)))
    planted = gp.dir / "release-2027.pub"
    planted.write_bytes(b"an operator's own file\n")
    before = gp.config.read_bytes()
    text = before.decode().replace(str(old.pub_path), f'{old.pub_path}", "release-2027.pub')
    records, restarts = _install(gp, _pack_config(tmp_path, old, text, 2, other.pub_path), Counters(tmp_path / "c"))
    assert records[-1]["state"] == "refused" and "exists with another key" in str(records[-1]["reason"]), records
    assert restarts == [] and gp.config.read_bytes() == before and planted.read_bytes() == b"an operator's own file\n"


def test_pack_refuses_a_private_key_as_public(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = make_release_key(tmp_path / "k", "release")
    src = tmp_path / "gateway.toml"
    src.write_text("[gateway]\n")
    leaked = tmp_path / "leak.pub"
    leaked.write_bytes(key.key_path.read_bytes())
    args = ["pack", "config", "--config", str(src), "--key", str(key.key_path), "--counter", "1", "--version", "c1"]
    assert release([*args, "--out", str(tmp_path / "x.bundle"), "--public-key", str(leaked)]) == 1
    err = capsys.readouterr().err
    assert "this is a private key" in err and "PRIVATE" not in err
    assert not (tmp_path / "x.bundle").exists()
