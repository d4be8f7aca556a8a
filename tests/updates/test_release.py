"""edgeline-release: keygen (0600 private key, never printed), pack of each kind (checked by the
gateway's own verifier), inspect with and without keys, and the errors a user can act on."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.updates.bundle import Counters, load_trusted_keys, verify_bundle
from tests.support.upy import ROOT
from tools.release.cli import main

MODEL = ROOT / "models" / "vibration_anomaly_float32.json"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    rc, _, _ = run(capsys, "keygen", "--out", str(tmp_path / "keys" / "rel"))
    assert rc == 0
    return tmp_path / "keys" / "rel"


def verify(path: Path, pub: Path, **kw: str):
    return verify_bundle(
        path,
        keys=load_trusted_keys([pub]),
        site=kw.get("site", "plant1"),
        gateway_id=kw.get("gateway", "gw1"),
        counters=Counters(path.with_name("counters.json")),
        now=time.time(),
        max_bytes=1 << 26,
    )


def test_keygen_private_key_is_0600_and_never_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    rc, out, err = run(capsys, "keygen", "--out", str(tmp_path / "k" / "rel"))
    assert rc == 0
    private, public = tmp_path / "k" / "rel.key", tmp_path / "k" / "rel.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o700
    body = private.read_text()
    assert "PRIVATE KEY" in body and "PRIVATE" not in out + err
    base64_lines = [line for line in body.splitlines() if not line.startswith("-----")]
    assert base64_lines and not any(line in out + err for line in base64_lines)
    assert "PUBLIC KEY" in public.read_text()
    rc, _, err = run(capsys, "keygen", "--out", str(tmp_path / "k" / "rel"))  # never overwritten
    assert rc == 1 and "exists" in err
    assert private.read_text() == body


def test_pack_model_verifies_on_the_gateway(key: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    rc, out, err = run(
        capsys, "pack", "model", "--manifest", str(MODEL), "--pipeline", "vibration", "--key", f"{key}.key",
        "--counter", "3", "--version", "1.2", "--site", "plant1", "--out", str(tmp_path),
    )  # fmt: skip
    assert rc == 0, err
    path = tmp_path / "vibration-1.2.bundle"
    assert str(path) in out
    bundle = verify(path, Path(f"{key}.pub"))
    model_file = json.loads(MODEL.read_text())["model_file"]
    assert {f.path for f in bundle.files} == {MODEL.name, model_file} and bundle.entry == MODEL.name
    tflite = next(f for f in bundle.files if f.path == model_file)
    assert tflite.sha256 == hashlib.sha256((MODEL.parent / model_file).read_bytes()).hexdigest()
    rc, out, _ = run(capsys, "inspect", str(path), "--keys", f"{key}.pub", "--site", "plant1")
    assert rc == 0 and json.loads(out)["verified"] is True
    rc, out, _ = run(capsys, "inspect", str(path))
    meta = json.loads(out)
    assert (meta["kind"], meta["counter"], meta["target"]["sites"]) == ("model", 3, ["plant1"])


def test_pack_config_and_firmware(key: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    toml = tmp_path / "gateway.toml"
    toml.write_text('[gateway]\nsite = "plant1"\n')
    rc, _, err = run(
        capsys, "pack", "config", "--config", str(toml), "--key", f"{key}.key", "--counter", "1",
        "--version", "2026.5", "--out", str(tmp_path / "cfg.bundle"),
    )  # fmt: skip
    assert rc == 0, err
    assert verify(tmp_path / "cfg.bundle", Path(f"{key}.pub")).entry == "gateway.toml"
    build = tmp_path / "build" / "native"
    files = {"main.py": b"loader", "boot.py": b"boot", "otaslots.mpy": b"M\x06slots", "sensorfw/app.mpy": b"M\x06app"}
    files["lib/umqtt/simple.mpy"] = b"M"
    for rel, data in files.items():
        (build / rel).parent.mkdir(parents=True, exist_ok=True)
        (build / rel).write_bytes(data)
    manifest = {
        "format": 1,
        "arch": "native",
        "mpy_cross": "1.25",
        "files": {p: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d), "source": p} for p, d in files.items()},
    }
    (build / "manifest.json").write_text(json.dumps(manifest))
    rc, _, err = run(
        capsys, "pack", "firmware", "--build", str(build), "--arch", "native", "--key", f"{key}.key",
        "--counter", "9", "--version", "1.8", "--canary", "dev-01", "--out", str(tmp_path / "fw.bundle"),
    )  # fmt: skip
    assert rc == 0, err
    bundle = verify(tmp_path / "fw.bundle", Path(f"{key}.pub"))
    assert [f.path for f in bundle.files] == ["lib/umqtt/simple.mpy", "sensorfw/app.mpy"]  # no loader files
    assert bundle.firmware is not None
    assert bundle.firmware["rollout"] == {"devices": ["*"], "canary": ["dev-01"], "wave": 5, "max_failure_rate": 0.2}


def test_errors_name_the_input(key: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    base = ["pack", "model", "--manifest", str(MODEL), "--pipeline", "p", "--counter", "1", "--out", str(tmp_path)]
    rc, _, err = run(capsys, *base, "--key", f"{key}.key", "--version", "1 2")
    assert rc == 1 and "version" in err and not list(tmp_path.glob("*.bundle"))
    os.chmod(f"{key}.key", 0o644)
    rc, _, err = run(capsys, *base, "--key", f"{key}.key", "--version", "1")
    assert rc == 1 and "chmod 600" in err
    rc, _, err = run(capsys, *base, "--key", f"{key}.pub", "--version", "1")
    assert rc == 1 and "--key" in err
    garbage = tmp_path / "x.bundle"
    garbage.write_bytes(b"not a tar")
    rc, out, _ = run(capsys, "inspect", str(garbage), "--keys", f"{key}.pub")
    assert rc == 2 and json.loads(out)["reason"] == "bad_format"


def test_module_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "tools.release", "--help"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "keygen" in done.stdout and "publish" in done.stdout


def test_check_config_loads_the_trusted_keys(key: Path, tmp_path: Path):
    """A configuration naming a missing or non-Ed25519 key is refused before it runs (and so a
    config bundle naming one is refused before the swap)."""
    from gateway.updates.bundle import key_id, load_public_key

    toml = tmp_path / "gateway.toml"

    def check(trusted: Path) -> subprocess.CompletedProcess[str]:
        toml.write_text(
            f'[gateway]\nid = "gw1"\nsite = "s1"\ndata_dir = "{tmp_path / "data"}"\n\n'
            f'[updates]\nenabled = true\ntrusted_keys = ["{trusted}"]\n'
        )
        return subprocess.run(
            [sys.executable, "-m", "gateway", "check-config", "-c", str(toml), "--skip-models"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )

    ok = check(Path(f"{key}.pub"))
    assert ok.returncode == 0, ok.stderr
    assert key_id(load_public_key(Path(f"{key}.pub"))) in ok.stdout
    missing = check(tmp_path / "nope.pub")
    assert missing.returncode == 2 and "updates.trusted_keys" in missing.stderr and "nope.pub" in missing.stderr
