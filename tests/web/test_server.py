"""The status page's server in a real gateway process: read-only, its password, its [web]
configuration errors, and a port already taken."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

import pytest

from gateway.config import ConfigError, WebSection, from_dict
from tests.support.gateway_proc import GatewayProcess
from tests.support.mosquitto import Mosquitto
from tests.support.upy import ROOT
from tests.support.waiting import wait_until

PASSWORD = "s3cret-status-page"


def _request(
    url: str, *, method: str = "GET", password: str | None = None, user: str = "ops"
) -> tuple[int, Message, bytes]:
    """Status, headers (case-insensitive) and body."""
    req = urllib.request.Request(url, method=method, data=b"x=1" if method in ("POST", "PUT") else None)
    if password is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def _password_file(path: Path, mode: int = 0o600) -> Path:
    path.write_text(PASSWORD + "\n")
    os.chmod(path, mode)
    return path


def test_with_a_password_every_route_asks_for_it_and_nothing_can_be_written(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    pw = _password_file(tmp_path / "web.passwd")
    gw = GatewayProcess(tmp_path / "gw", mosquitto.port, extra_toml=f'[web]\nport = 0\npassword_file = "{pw}"\n')
    try:
        gw.start()
        status = gw.status()
        assert status is not None and status["web"]["password"] is True
        url = status["web"]["url"]
        for path in ("", "device/pump-01", "api/status", "api/fleet", "metrics", "static/status.js"):
            code, headers, _ = _request(url + path)
            assert code == 401, path
            assert headers["WWW-Authenticate"].startswith('Basic realm="edgeline gateway"'), headers
            assert _request(url + path, password="wrong")[0] == 401, path
        code, headers, body = _request(url, password=PASSWORD)
        assert code == 200 and b'data-page="fleet"' in body
        assert (
            headers["X-Content-Type-Options"] == "nosniff"
            and "default-src 'self'" in headers["Content-Security-Policy"]
        )
        assert _request(url + "api/status", password=PASSWORD, user="anyone")[0] == 200
        assert _request(url + "metrics", password=PASSWORD)[0] == 200
        # read-only: no route takes a write, whatever the path
        for path in ("", "api/status", "api/fleet", "api/device/pump-01", "metrics"):
            for method in ("POST", "PUT", "DELETE"):
                code, headers, _ = _request(url + path, method=method, password=PASSWORD)
                assert code == 405, (method, path)
                assert "GET" in (headers["Allow"] or ""), dict(headers)
        # bad input: a clear 4xx, not a traceback
        code, _, body = _request(url + "api/device/pump-01?since=yesterday", password=PASSWORD)
        assert code == 400 and b"since: expected a unix time" in body
        assert _request(url + "api/device/nobody", password=PASSWORD)[0] == 404
        assert _request(url + "device/..%2Fetc", password=PASSWORD)[0] == 404
    finally:
        gw.stop()
    log = gw.log.read_text()
    assert PASSWORD not in log and "Traceback" not in log


@pytest.mark.parametrize("command", ["run", "check-config"])
def test_a_password_file_others_can_read_stops_the_gateway(tmp_path: Path, mosquitto: Mosquitto, command: str) -> None:
    pw = _password_file(tmp_path / "web.passwd", 0o644)
    gw = GatewayProcess(tmp_path / "gw", mosquitto.port, extra_toml=f'[web]\npassword_file = "{pw}"\n')
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            command,
            "-c",
            str(gw.config),
            *(["--skip-models"] if command == "check-config" else []),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode != 0
    assert f"web.password_file: {pw} has mode 0644" in run.stderr and "chmod 600" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and PASSWORD not in run.stderr + run.stdout


def test_check_config_refuses_a_page_open_to_the_network_without_a_password(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f'[gateway]\nid = "gw1"\nsite = "s1"\ndata_dir = "{tmp_path / "data"}"\n\n[web]\naddress = "0.0.0.0"\n'
    )
    run = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "-c", str(cfg), "--skip-models"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode != 0
    assert "web.password_file: required when web.address is 0.0.0.0 (not a loopback address)" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("web", "error"),
    [
        ({"address": "example.org"}, "web.address: expected an IP address"),
        ({"address": "192.168.4.1"}, "web.password_file: required when web.address is 192.168.4.1"),
        ({"port": 70000}, "web.port: expected 0..65535"),
        ({"enabled": "yes"}, "web.enabled: expected true or false"),
        ({"username": "x"}, "web.username: unknown key"),
    ],
)
def test_web_configuration_errors_name_the_key(tmp_path: Path, web: dict[str, object], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        from_dict({"gateway": {"id": "g", "site": "s", "data_dir": str(tmp_path)}, "web": web})


def test_web_defaults_and_an_open_address_with_a_password(tmp_path: Path) -> None:
    base = {"gateway": {"id": "g", "site": "s", "data_dir": str(tmp_path)}}
    assert from_dict(base).web == WebSection(enabled=True, address="127.0.0.1", port=8080, password_file=None)
    pw = _password_file(tmp_path / "pw")
    web = from_dict({**base, "web": {"address": "::", "password_file": str(pw)}}).web
    assert not web.loopback and web.read_password() == PASSWORD
    assert from_dict({**base, "web": {"address": "0.0.0.0", "enabled": False}}).web.enabled is False


def test_a_port_in_use_is_a_clear_error_and_the_gateway_runs_on(tmp_path: Path, mosquitto: Mosquitto) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    gw = GatewayProcess(tmp_path / "gw", mosquitto.port, extra_toml=f"[web]\nport = {port}\n")
    try:
        st = gw.start().wait_subscribed()
        assert st["web"]["url"] is None
        assert st["web"]["error"].startswith(
            f"web: cannot serve the status page on 127.0.0.1:{port} (Address already in use)"
        )
        assert "set [web] port to a free port (0 picks one)" in st["web"]["error"]
        wait_until(
            lambda: "the gateway runs on without its status page" in gw.log.read_text(), 10, "the error in the log"
        )
    finally:
        gw.stop()
        taken.close()
    assert "Traceback" not in gw.log.read_text()
