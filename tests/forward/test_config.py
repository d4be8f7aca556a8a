"""ForwardConfig.from_dict: defaults, and errors that name the key and what is expected."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.forward import ForwardConfig, ForwardConfigError, Forwarder
from tests.support.mosquitto import free_port
from tests.support.upy import ROOT


def test_defaults_and_tls_port() -> None:
    cfg = ForwardConfig.from_dict({"host": "cloud.example"})
    assert (cfg.port, cfg.qos, cfg.payload_format, cfg.tls) == (1883, 1, "json", None)
    tls = ForwardConfig.from_dict({"host": "cloud.example", "tls": {"ca_file": "/etc/ca.pem"}})
    assert tls.port == 8883 and tls.tls is not None and tls.tls.verify is True
    assert tls.tls.ca_file == Path("/etc/ca.pem")
    assert tls.disk_budget_bytes == 256 * 1024 * 1024


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({}, "forward.host: missing"),
        ({"host": 5}, "forward.host: expected a string"),
        ({"host": "h", "port": 70000}, "forward.port: expected <= 65535"),
        ({"host": "h", "qos": 0}, "forward.qos: only 1 is supported"),
        ({"host": "h", "payload_format": "xml"}, "forward.payload_format: expected one of json, sparkplug"),
        ({"host": "h", "disk_budget_mb": "big"}, "forward.disk_budget_mb: expected a number"),
        ({"host": "h", "disk_budget_mb": 0}, "forward.disk_budget_mb: expected >= 0.25"),
        ({"host": "h", "max_inflight": True}, "forward.max_inflight: expected an integer"),
        ({"host": "h", "backoff_min_s": 5, "backoff_max_s": 1}, "forward.backoff_max_s: expected >= backoff_min_s"),
        ({"host": "h", "disk_budget": 5}, "forward.disk_budget: unknown key"),
        ({"host": "h", "tls": {"ca": "x"}}, "forward.tls.ca: unknown key"),
        ({"host": "h", "tls": {"cert_file": "c"}}, "forward.tls.cert_file / forward.tls.key_file: set both"),
        ({"host": "h", "tls": {"verify": "yes"}}, "forward.tls.verify: expected true or false"),
        ({"host": "h", "password_file": "/p"}, "forward.password_file: set forward.username too"),
        ({"host": "h", "topic_prefix": "a/#"}, "forward.topic_prefix: expected a prefix without"),
        ({"host": "h", "bandwidth_limit_bytes_per_s": 0}, "forward.bandwidth_limit_bytes_per_s: expected >= 1"),
    ],
)
def test_errors_name_the_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ForwardConfigError) as info:
        ForwardConfig.from_dict(table)
    assert message in str(info.value)


def _secret(path: Path, mode: int) -> Path:
    path.write_text("s3cret\n")
    path.chmod(mode)
    return path


def test_password_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    pw = _secret(tmp_path / "cloud.pw", 0o644)
    table = {"host": "127.0.0.1", "port": free_port(), "username": "gw", "password_file": str(pw)}
    fwd = Forwarder(ForwardConfig.from_dict(table), "gwp", tmp_path / "data")
    with pytest.raises(ForwardConfigError) as info:
        fwd.start()
    message = str(info.value)
    assert message.startswith("forward.password_file: ")
    assert f"{pw} is accessible by group or others (mode 0644)" in message
    assert f"chmod 600 {pw}" in message
    assert not (tmp_path / "data" / "forward.db").exists()  # refused before anything started
    # The stand-alone process says the same and exits with status 2.
    cfg_path = tmp_path / "forward.json"
    cfg_path.write_text(json.dumps(table))
    args = ["--config", str(cfg_path), "--gateway-id", "gwp", "--data-dir", str(tmp_path / "data")]
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.forward", *args],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert f"forward.password_file: {pw} is accessible by group or others" in proc.stderr
    assert f"chmod 600 {pw}" in proc.stderr
    pw.chmod(0o600)  # private: accepted
    fwd.start()
    fwd.stop()


def test_tls_key_readable_by_group_is_refused(tmp_path: Path) -> None:
    key = _secret(tmp_path / "gateway.key", 0o640)
    table = {"host": "127.0.0.1", "tls": {"cert_file": str(tmp_path / "gateway.crt"), "key_file": str(key)}}
    fwd = Forwarder(ForwardConfig.from_dict(table), "gwk", tmp_path / "data")
    with pytest.raises(ForwardConfigError, match=r"forward\.tls\.key_file: .*\(mode 0640\).*chmod 600"):
        fwd.start()
    assert not (tmp_path / "data" / "forward.db").exists()


def test_missing_password_file_names_the_key(tmp_path: Path) -> None:
    table = {"host": "h", "username": "gw", "password_file": str(tmp_path / "nope")}
    with pytest.raises(ForwardConfigError, match=r"forward\.password_file: cannot read .*nope \(No such file"):
        Forwarder(ForwardConfig.from_dict(table), "gwm", tmp_path / "data").start()
