"""Provisioning a TLS device (devices.toml ``broker.tls``) to the virtual board through the real
mpremote transport: the certificate files land in ``certs/`` before config.json, they are
reused while good, ``renew`` replaces them, no key reaches the output; and the provisioned
firmware connects to a real Mosquitto whose device listener is mutual TLS (the generated one)."""

from __future__ import annotations

import json
import stat
import textwrap
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from paho.mqtt.enums import CallbackAPIVersion

from shared_protocol import BIRTH
from shared_protocol.decode import decode
from tests.gateway.mtls_site import SERVER, USERS, make_site
from tools.flash.cli import main
from tools.flash.pki import FleetCA
from tools.vboard import VirtualBoard


def tls_devices(tmp_path: Path, ca_dir: Path, port: int = 8883, site: str = "lab") -> Path:
    path = tmp_path / "devices.toml"
    path.write_text(
        textwrap.dedent(f"""
        [ca]
        dir = "{ca_dir}"

        [devices.vb1]
        arch = "native"
        [devices.vb1.config]
        site = "{site}"
        broker = {{ host = "127.0.0.1", port = {port}, timeout_ms = 1000, tls = {{ server_name = "{SERVER}" }} }}
        sample = {{ rate_hz = 20, batch = 8 }}
        sensors = [{{ type = "analog", name = "temp", pin = 34 }}]
        health_s = 5
        """)
    )
    return path


def test_config_writes_certificates_first_reuses_them_and_renew_replaces_them(
    tmp_path: Path, board: VirtualBoard, capfd: pytest.CaptureFixture[str]
) -> None:
    ca = FleetCA.init(tmp_path / "ca", "lab")
    devices = tls_devices(tmp_path, ca.directory)
    args = ["config", "--device", "vb1", "--config", str(devices), "--port", board.port, "--no-reset"]
    assert main(args) == 0
    out, err = capfd.readouterr()
    flash = board.flash_dir
    saved = ca.directory / "devices" / "vb1"
    for name in ("ca.der", "device.der", "device.key"):
        assert (flash / "certs" / name).read_bytes() == (saved / name).read_bytes(), name
    assert stat.S_IMODE((saved / "device.key").stat().st_mode) == 0o600
    key = (saved / "device.key").read_bytes()
    assert key.hex() not in out + err and "PRIVATE KEY" not in out + err
    assert "certificate issued for vb1: expires" in out
    # in this order: the certificates, then the config that names them
    written = [line.split(":")[0] for line in out.splitlines() if ": written (" in line]
    assert written == ["certs/ca.der", "certs/device.der", "certs/device.key", "config.json"]
    assert "certs/device.key: written (" in out and "key not shown" in out
    broker = json.loads((flash / "config.json").read_bytes())["broker"]
    assert broker["tls"] == {
        "ca": "certs/ca.der",
        "cert": "certs/device.der",
        "key": "certs/device.key",
        "server_name": SERVER,
    }
    cert = x509.load_der_x509_certificate((flash / "certs" / "device.der").read_bytes())
    assert cert.subject.rfc4514_string() == "CN=vb1"

    # again: the saved certificate is still good, nothing on the board changes
    assert main(args) == 0
    out, _ = capfd.readouterr()
    assert "certificate reused for vb1" in out
    assert out.count(": unchanged") == 4

    # renew: a new key and certificate, written over the old ones
    assert main(["renew", "--device", "vb1", "--config", str(devices), "--port", board.port, "--no-reset"]) == 0
    out, err = capfd.readouterr()
    assert "certificate issued for vb1" in out
    renewed = x509.load_der_x509_certificate((flash / "certs" / "device.der").read_bytes())
    assert renewed.serial_number != cert.serial_number
    assert (flash / "certs" / "device.key").read_bytes() != key
    assert (flash / "certs" / "device.key").read_bytes().hex() not in out + err
    assert "config.json: unchanged" in out
    assert [c.serial for c in ca.issued()] == [cert.serial_number, renewed.serial_number]


def test_a_missing_ca_touches_no_board(tmp_path: Path, board: VirtualBoard, capfd: pytest.CaptureFixture[str]) -> None:
    devices = tls_devices(tmp_path, tmp_path / "no-ca")
    assert main(["config", "--device", "vb1", "--config", str(devices), "--port", board.port]) == 1
    assert "does not exist: create the CA with `edgeline-flash ca init" in capfd.readouterr().err
    assert list(board.flash_dir.iterdir()) == []
    assert main(["renew", "--device", "vb1", "--config", str(devices), "--port", board.port]) == 1
    assert board.reboots == 0


def test_provisioned_board_publishes_birth_over_mutual_tls(tmp_path: Path, board: VirtualBoard) -> None:
    """Needs the firmware's TLS client (firmware/sensorfw/port/tls.py) and the generated listener."""
    site = make_site(tmp_path / "site")
    devices = tls_devices(tmp_path, site.ca.directory, port=site.broker.device_port, site="s1")
    births: list[bytes] = []
    got_birth = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        births.append(bytes(msg.payload))
        got_birth.set()

    with site.broker:
        sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gateway")
        sub.username_pw_set("gateway", USERS["gateway"])
        sub.on_message = on_message
        sub.connect(site.broker.host, site.broker.port)
        sub.subscribe("el/s1/vb1/birth", qos=1)
        sub.loop_start()
        try:
            build = ["--build-dir", str(tmp_path / "build")]
            result = main(["provision", "--device", "vb1", "--config", str(devices), "--port", board.port, *build])
            assert result == 0
            assert got_birth.wait(30), board.transcript()[-3000:] + site.broker.log_text()[-2000:]
        finally:
            sub.loop_stop()
            sub.disconnect()
        assert decode(births[0]).type == BIRTH
        log = site.broker.log_text()
        assert f"on port {site.broker.device_port}" in log and "as vb1 (" in log and "u'vb1'" in log
