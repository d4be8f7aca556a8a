"""Configuration (TOML -> frozen dataclasses, errors that name the key) and the CLI."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway import config
from gateway.cli import main
from gateway.config import ConfigError
from tests.support.upy import ROOT

EXAMPLE = ROOT / "gateway.example.toml"


def test_example_config_parses_with_defaults_and_paths() -> None:
    cfg = config.load(EXAMPLE)
    assert cfg.gateway.id == "pi-01" and cfg.gateway.site == "plant1" and cfg.gateway.prefix == "el"
    assert cfg.mqtt.password_file == Path("/etc/edgeline/gateway.secret")
    assert cfg.pipelines[0].model == Path("/opt/edgeline/models/vibration_anomaly_int8.json")  # the Pi install
    assert cfg.pipelines[0].devices == ("pump-*",)
    assert cfg.rules[0].device == "tank-03" and cfg.rules[0].duration_s == 5.0
    assert cfg.forward is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.gateway.id = "x"  # type: ignore[misc]


BASE = {"gateway": {"id": "g", "site": "s", "data_dir": "/tmp/x"}}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"gateway": {"id": "g", "site": "s"}}, "gateway.data_dir: missing"),
        ({"gateway": {"id": "bad/id", "site": "s", "data_dir": "d"}}, "gateway.id: 'bad/id' is not a valid id"),
        ({"mqtt": {"port": 70000}}, "mqtt.port: expected 1..65535, got 70000"),
        ({"mqtt": {"port": "1883"}}, "mqtt.port: expected an integer"),
        ({"mqtt": {"password": "hunter2"}}, "mqtt.password: passwords are not accepted"),
        ({"mqtt": {"hots": "x"}}, "mqtt.hots: unknown key"),
        ({"ingest": {"queue_size": 1}}, "ingest.queue_size: expected 16..10000000"),
        ({"pipelines": [{"name": "p"}]}, "pipelines[0].model: missing"),
        ({"pipelines": {"name": "p"}}, "pipelines: expected an array of tables [[pipelines]]"),
        (
            {"pipelines": [{"name": "p", "model": "m"}, {"name": "p", "model": "n"}]},
            "pipelines[1].name: 'p' used twice",
        ),
        ({"rules": [{"on_alert_from": "a", "device": "b", "output": 300}]}, "rules[0].output: expected 0..255"),
        (
            {"rules": [{"on_alert_from": "a", "device": "b", "output": 0, "pipeline": "nope"}]},
            "rules[0].pipeline: 'nope' is not a configured pipeline",
        ),
        ({"forward": "cloud"}, "forward: expected a table"),
    ],
)
def test_config_errors_name_the_key(patch: dict[str, Any], message: str) -> None:
    data = {**BASE, **patch}
    with pytest.raises(ConfigError) as exc:
        config.from_dict(data)
    assert message in str(exc.value)


def test_password_never_in_errors_or_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "gw.secret"
    secret.write_text("s3cr3t-value\n")
    secret.chmod(0o644)
    cfg = tmp_path / "g.toml"
    cfg.write_text(
        f'[gateway]\nid = "g"\nsite = "s"\ndata_dir = "{tmp_path}/d"\n'
        f'[mqtt]\nusername = "gateway"\npassword_file = "{secret}"\n'
    )
    assert main(["check-config", "-c", str(cfg)]) == 2
    out = capsys.readouterr()
    assert "chmod 600" in out.err and "s3cr3t-value" not in out.out + out.err
    secret.chmod(0o600)
    assert main(["check-config", "-c", str(cfg)]) == 0
    out = capsys.readouterr()
    assert "configuration OK" in out.out and "s3cr3t-value" not in out.out + out.err
    assert config.load(cfg).mqtt.read_password() == "s3cr3t-value"


def test_check_config_reports_bad_toml_and_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway\n")
    assert main(["check-config", "-c", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    cfg = tmp_path / "g.toml"
    cfg.write_text(
        f'[gateway]\nid = "g"\nsite = "s"\ndata_dir = "{tmp_path}/d"\n'
        '[[pipelines]]\nname = "vib"\nmodel = "nope.json"\n'
    )
    assert main(["check-config", "-c", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "pipelines[0].model" in err and "nope.json does not exist" in err
    assert main(["check-config", "-c", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read configuration" in capsys.readouterr().err


def test_status_without_running_gateway_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text(f'[gateway]\nid = "g"\nsite = "s"\ndata_dir = "{tmp_path}/d"\n')
    assert main(["status", "-c", str(cfg)]) == 2
    assert "is `edgeline-gateway run` running" in capsys.readouterr().err


def test_python_dash_m_gateway_help() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "gateway", "--help"], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert r.returncode == 0
    for cmd in ("run", "check-config", "status", "add-device", "raw"):
        assert cmd in r.stdout


def test_status_and_raw_commands_on_a_gateway_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.ingest import RawFrame
    from gateway.pipeline import Gateway
    from tests.gateway.doubles import Published
    from tests.support.simdevice import SimDevice

    cfg_path = tmp_path / "g.toml"
    cfg_path.write_text(f'[gateway]\nid = "g"\nsite = "s1"\ndata_dir = "{tmp_path}/d"\n')
    cfg = config.load(cfg_path)
    gw = Gateway(cfg, Published())
    dev = SimDevice("pump-1")
    import time

    now = time.time()
    gw.process([RawFrame(dev.topic("birth"), dev.birth(), now)])
    gw.process([RawFrame(dev.topic("data"), dev.data(), now + 0.33 * (i + 1)) for i in range(3)])
    status = {
        **gw.status(),
        "ingest": {
            "connected": True,
            "queue": {"depth": 0, "capacity": 10, "high_water": 3, "dropped": 0, "blocked_s": 0.0},
        },
        "pid": 1,
        "written_at": now,
        "forward": None,
    }
    (tmp_path / "d" / "status.json").write_text(json.dumps(status))
    gw.close()
    assert main(["status", "-c", str(cfg_path)]) == 0
    out = capsys.readouterr().out
    assert "pump-1" in out and "readings 288" in out
    assert main(["raw", "-c", str(cfg_path), "pump-1", "--since", str(now - 10), "--to", str(now + 10)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "time,ax,ay,temp" and len(lines) == 1 + 96
    first = lines[1].split(",")
    assert float(first[1]) == pytest.approx(0.0) and float(first[3]) == pytest.approx(25.0)


def installed_example(tmp_path: Path) -> Path:
    """gateway.example.toml after the one documented substitution: the install's directories
    (/opt/edgeline the checkout, /etc/edgeline, /var/lib/edgeline) moved to this checkout and
    tmp_path; the gateway's broker password written where mqtt.password_file says."""
    etc = tmp_path / "etc" / "edgeline"
    etc.mkdir(parents=True)
    text = EXAMPLE.read_text()
    for old, new in (("/opt/edgeline", ROOT), ("/etc/edgeline", etc), ("/var/lib/edgeline", tmp_path / "data")):
        text = text.replace(old, str(new))
    secret = etc / "gateway.secret"
    secret.write_text("a-password-for-the-gateway\n")
    secret.chmod(0o600)
    path = etc / "gateway.toml"
    path.write_text(text)
    return path


def test_check_config_accepts_the_example_as_installed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "-c", str(installed_example(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "pipeline vibration: model 1.0.0" in out and "rule close-valve: alert from pump-* -> tank-03" in out
    assert out.rstrip().endswith("configuration OK")


def test_example_files_fit_together(tmp_path: Path) -> None:
    """gateway.example.toml and devices.example.toml describe one site: the same site, ids, rates
    and broker address."""
    import fnmatch
    import tomllib

    from tools.flash.devices import load_device

    cfg = config.load(EXAMPLE)
    devices_toml = tmp_path / "devices.toml"
    shutil.copy(ROOT / "devices.example.toml", devices_toml)
    ids = list(tomllib.loads(devices_toml.read_text())["devices"])
    assert ids == ["pump-01", "tank-03"]
    (tmp_path / "secrets").mkdir()
    for name in ("wifi.txt",):
        (tmp_path / "secrets" / name).write_text("secret-value\n")
        (tmp_path / "secrets" / name).chmod(0o600)
    manifest = json.loads((ROOT / cfg.pipelines[0].model.relative_to("/opt/edgeline")).read_text())
    for device_id in ids:
        device = load_device(devices_toml, device_id)
        c = device.config
        assert c["site"] == cfg.gateway.site and c["broker"]["host"] == cfg.broker.device_address
        # mutual TLS on both sides: the device's username is its certificate's CN
        assert cfg.broker.tls is not None and device.tls_server_name is not None
        assert "user" not in c["broker"] and c["broker"]["port"] == cfg.broker.device_port
        if any(fnmatch.fnmatch(device_id, pattern) for pattern in cfg.pipelines[0].devices):
            assert c["sample"]["rate_hz"] == manifest["input"]["rate_hz"], device_id
            assert [s["type"] for s in c["sensors"]] == ["mpu6050"], device_id  # imu_ax .. imu_gz
    rule = cfg.rules[0]
    assert rule.device in ids and any(fnmatch.fnmatch(i, rule.on_alert_from) for i in ids)
    valve = load_device(devices_toml, rule.device).config["outputs"][rule.output]
    assert valve["name"] == "valve"


def test_devices_file_and_secrets_are_git_ignored() -> None:
    r = subprocess.run(
        ["git", "check-ignore", "--no-index", "devices.toml", "secrets/wifi.txt", "gateway.secret"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.stdout.split() == ["devices.toml", "secrets/wifi.txt", "gateway.secret"], r
