"""``[forward]`` is parsed with the rest of the configuration: a bad one is a one-line ConfigError
naming the key from ``check-config`` and ``run`` alike (no traceback), and the gateway's errors
share one base class."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway import config
from gateway.cli import CommandError
from gateway.errors import ConfigError, GatewayError
from gateway.features import FeatureError
from gateway.forward import ForwardConfig, ForwardConfigError, ForwardError, QueueError, RecordError
from gateway.manifest import ModelError
from tests.support.upy import ROOT


def _write(tmp_path: Path, forward: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[gateway]\nid = "g1"\nsite = "s1"\ndata_dir = "{tmp_path / "data"}"\n\n[forward]\n{forward}\n')
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_forward_table_is_parsed_at_load(tmp_path: Path) -> None:
    cfg = config.load(
        _write(tmp_path, 'host = "cloud.example"\ndisk_budget_mb = 8\nurgent_lanes = ["alert", "registry"]')
    )
    assert isinstance(cfg.forward, ForwardConfig)
    assert (cfg.forward.host, cfg.forward.disk_budget_mb, cfg.forward.urgent_lanes) == (
        "cloud.example",
        8.0,
        ("alert", "registry"),
    )
    assert cfg.forward.commit_max_delay_ms == 1000.0  # the default


@pytest.mark.parametrize(
    ("forward", "message"),
    [
        ('host = "c"\ndisk_budget_mb = "lots"', "forward.disk_budget_mb: expected a number, got 'lots'"),
        ('host = "c"\ndisk_budget = 8', "forward.disk_budget: unknown key"),
        ("port = 1883", "forward.host: missing"),
        ('host = "c"\ncommit_interval_ms = 50\ncommit_max_delay_ms = 10', "forward.commit_max_delay_ms: expected >="),
        ('host = "c"\nurgent_lanes = ["alerts"]', "forward.urgent_lanes: expected a list of lane names"),
    ],
)
def test_bad_forward_is_a_config_error_naming_the_key(tmp_path: Path, forward: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        config.load(_write(tmp_path, forward))


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_bad_forward_via_the_cli_one_line_no_traceback(tmp_path: Path, command: str) -> None:
    """Before, ``run`` validated ``[forward]`` only when it built the forwarder: a traceback."""
    path = _write(tmp_path, 'host = "cloud.example"\ndisk_budget_mb = "lots"')
    r = _cli(command, "--config", str(path))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == [f"edgeline-gateway {command}: forward.disk_budget_mb: expected a number, got 'lots'"]
    assert not (tmp_path / "data").exists()  # refused before anything was created


def test_check_config_describes_a_good_forward(tmp_path: Path) -> None:
    r = _cli("check-config", "--config", str(_write(tmp_path, 'host = "cloud.example"')), "--skip-models")
    assert r.returncode == 0, r.stderr
    assert "forward: cloud.example:1883 tls off, payload json, disk budget 256 MB" in r.stdout


def test_one_error_base_class() -> None:
    for cls in (ConfigError, ForwardError, ForwardConfigError, RecordError, QueueError, ModelError, FeatureError):
        assert issubclass(cls, GatewayError), cls
    assert issubclass(CommandError, GatewayError)
    assert issubclass(ForwardConfigError, ConfigError) and issubclass(ForwardConfigError, ForwardError)
    # Callers that caught ValueError still do.
    for cls in (ConfigError, ForwardConfigError, RecordError, FeatureError):
        assert issubclass(cls, ValueError), cls
    # ``from gateway.config import ConfigError`` is the same class.
    assert config.ConfigError is ConfigError
