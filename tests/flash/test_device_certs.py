"""Device certificates on this computer (tools/flash/device_certs.py), devices.toml's
``broker.tls`` and ``[ca]``, and the ``edgeline-flash ca`` commands."""

from __future__ import annotations

import json
import stat
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from tools.flash import device_certs
from tools.flash.cli import main
from tools.flash.devices import load_device, render_config
from tools.flash.errors import FlashError
from tools.flash.pki import FleetCA


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def serial(creds: device_certs.DeviceCredentials) -> int:
    return x509.load_der_x509_certificate(creds.cert_der).serial_number


@pytest.fixture
def ca(tmp_path: Path) -> FleetCA:
    return FleetCA.init(tmp_path / "ca", "plant1")


def test_obtain_saves_private_files_then_reuses_them(ca: FleetCA) -> None:
    first = device_certs.obtain(ca, "pump-01")
    assert first.action == "issued"
    where = ca.directory / "devices" / "pump-01"
    assert first.where == where
    assert mode(where) == 0o700 and mode(where.parent) == 0o700
    assert mode(where / "device.key") == 0o600
    assert (where / "device.key").read_bytes() == first.creds.key_der
    assert "key is never shown" in first.describe() and "pump-01" in first.describe()
    again = device_certs.obtain(ca, "pump-01")
    assert again.action == "reused" and again.creds == first.creds
    renewed = device_certs.obtain(ca, "pump-01", renew=True)
    assert renewed.action == "issued" and serial(renewed.creds) != serial(first.creds)
    assert renewed.creds.key_der != first.creds.key_der
    assert device_certs.load(where, "pump-01") == renewed.creds


def test_a_revoked_or_foreign_or_aging_certificate_is_not_reused(ca: FleetCA, tmp_path: Path) -> None:
    first = device_certs.obtain(ca, "d1")
    ca.revoke("d1")
    after_revoke = device_certs.obtain(ca, "d1")
    assert after_revoke.action == "issued" and serial(after_revoke.creds) != serial(first.creds)
    # a certificate of another CA in the folder (the CA was replaced)
    other = FleetCA.init(tmp_path / "other", "plant1")
    device_certs.save(other.issue_device("d1"), after_revoke.where)
    assert device_certs.obtain(ca, "d1").action == "issued"
    # within the last third of its lifetime: renewed when provisioned
    aging = ca.issue_device("d1", days=30, not_before=datetime.now(UTC) - timedelta(days=21))
    device_certs.save(aging, after_revoke.where)
    assert device_certs.obtain(ca, "d1").action == "issued"
    # a key that does not belong to the certificate
    good = device_certs.obtain(ca, "d1").creds
    (after_revoke.where / "device.key").write_bytes(ca.issue_device("d1").key_der)
    assert device_certs.load(after_revoke.where, "d1") is None
    assert device_certs.obtain(ca, "d1").creds != good


def test_renew_due_at_two_thirds_of_the_lifetime(ca: FleetCA) -> None:
    start = datetime.now(UTC)
    ca.issue_device("r1", days=90, not_before=start)
    entry = next(c for c in ca.issued() if c.device_id == "r1")
    assert not device_certs.renew_due(entry, start + timedelta(days=59))
    assert device_certs.renew_due(entry, start + timedelta(days=61))


TLS_DEVICES = """
[ca]
dir = "ca"
device_days = 30

[defaults.config]
site = "plant1"
broker = { host = "192.168.4.1", port = 8883, tls = true }

[devices.dev1]
arch = "native"
[devices.dev1.config]
sensors = [{ type = "analog", name = "temp", pin = 34 }]

[devices.dev2]
arch = "native"
[devices.dev2.config]
broker = { tls = { server_name = "gateway.plant1" } }
sensors = [{ type = "analog", name = "temp", pin = 34 }]
"""


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "devices.toml"
    path.write_text(textwrap.dedent(body))
    return path


def test_devices_toml_tls_becomes_the_config_json_block(tmp_path: Path) -> None:
    path = write(tmp_path, TLS_DEVICES)
    dev1 = load_device(path, "dev1")
    assert dev1.tls_server_name == "192.168.4.1"
    assert dev1.ca.dir == tmp_path / "ca" and dev1.ca.device_days == 30
    broker = json.loads(render_config(dev1))["broker"]
    assert broker == {
        "host": "192.168.4.1",
        "port": 8883,
        "tls": {
            "ca": "certs/ca.der",
            "cert": "certs/device.der",
            "key": "certs/device.key",
            "server_name": "192.168.4.1",
        },
    }
    dev2 = load_device(path, "dev2")
    assert json.loads(render_config(dev2))["broker"]["tls"]["server_name"] == "gateway.plant1"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.replace("tls = true }", 'tls = true, user = "dev1" }'),
            "device dev1: config.broker: remove user: with tls the broker takes the username from the device's certificate",
        ),
        (lambda t: t.replace("tls = true", 'tls = "yes"'), "config.broker.tls: must be true, false or a table"),
        (
            lambda t: t.replace("tls = true", 'tls = { ca = "x.der" }'),
            "config.broker.tls: must be true, false or a table { server_name",
        ),
        (lambda t: t.replace("device_days = 30", "device_days = 0"), "[ca] device_days must be a whole number"),
        (lambda t: t.replace("device_days = 30", "days = 3"), "[ca]: unknown key(s) ['days']"),
    ],
)
def test_tls_settings_mistakes_are_named(tmp_path: Path, edit: object, message: str) -> None:
    assert callable(edit)
    path = write(tmp_path, edit(TLS_DEVICES))
    with pytest.raises(FlashError) as exc:
        load_device(path, "dev1")
    assert message in str(exc.value)


def test_tls_false_keeps_the_password_way(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("a-broker-pass\n")
    secret.chmod(0o600)
    body = TLS_DEVICES.replace(
        'broker = { tls = { server_name = "gateway.plant1" } }',
        'broker = { tls = false, port = 1883, user = "dev2", password_file = "pw" }',
    )
    device = load_device(write(tmp_path, body), "dev2")
    assert device.tls_server_name is None
    broker = json.loads(render_config(device))["broker"]
    assert "tls" not in broker and broker["user"] == "dev2"


def test_config_check_needs_the_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, TLS_DEVICES)
    assert main(["config", "--device", "dev1", "--config", str(path), "--check"]) == 1
    err = capsys.readouterr().err
    assert f"CA directory {tmp_path / 'ca'} does not exist: create the CA with `edgeline-flash ca init" in err
    without = tmp_path / "no-ca.toml"
    without.write_text(textwrap.dedent(TLS_DEVICES.replace('dir = "ca"\n', "")))
    assert main(["config", "--device", "dev1", "--config", str(without), "--check"]) == 1
    err = capsys.readouterr().err
    assert f"no fleet CA: set [ca] dir in {without} or pass --ca-dir DIR" in err
    assert main(["ca", "init", "--dir", str(tmp_path / "ca"), "--site", "plant1"]) == 0
    capsys.readouterr()
    assert main(["config", "--device", "dev1", "--config", str(path), "--check"]) == 0
    out = capsys.readouterr().out
    assert f"broker.tls: certificate from the CA in {tmp_path / 'ca'}, server name 192.168.4.1" in out
    assert not (tmp_path / "ca" / "devices").exists()  # --check issues nothing


def test_ca_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, TLS_DEVICES)
    ca_dir = tmp_path / "ca"
    assert main(["ca", "init", "--dir", str(ca_dir), "--site", "plant1"]) == 0
    assert mode(ca_dir / "ca.key") == 0o600 and (ca_dir / "crl.pem").exists()
    assert main(["ca", "init", "--dir", str(ca_dir), "--site", "plant1"]) == 1
    assert "already set up" in capsys.readouterr().err
    out_dir = tmp_path / "gateway-tls"
    assert (
        main(["ca", "server-cert", "--config", str(path), "--name", "gw", "--ip", "192.168.4.1", "--out", str(out_dir)])
        == 0
    )
    assert sorted(p.name for p in out_dir.iterdir()) == ["ca.crt", "crl.pem", "server.crt", "server.key"]
    assert main(["ca", "issue", "dev1", "--config", str(path)]) == 0
    assert main(["ca", "issue", "dev1", "--config", str(path)]) == 0
    assert main(["ca", "renew", "dev1", "--ca-dir", str(ca_dir), "--days", "9"]) == 0
    out = capsys.readouterr().out
    assert out.count("certificate issued for dev1") == 2 and out.count("certificate reused for dev1") == 1
    key = (ca_dir / "devices" / "dev1" / "device.key").read_bytes()
    assert key.hex() not in out and "PRIVATE" not in out
    # a certificate issued 25 days ago for 30 days: due for renewal
    FleetCA.open(ca_dir).issue_device("old", days=30, not_before=datetime.now(UTC) - timedelta(days=25))
    assert main(["ca", "list", "--config", str(path)]) == 0
    rows = {tuple(line.split()[:2]): line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows[("server", "gw")][-1] == "ok"
    assert rows[("device", "old")][-1] == "renew"
    assert rows[("device", "dev1")][-1] == "ok"
    assert main(["ca", "revoke", "dev1", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"CRL written to {ca_dir / 'crl.pem'}" in out
    crl = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
    assert len(list(crl)) == 2  # both certificates of dev1
    assert main(["ca", "crl", "--dir", str(ca_dir), "--out", str(tmp_path / "c.pem"), "--days", "3"]) == 0
    assert "valid 3 days" in capsys.readouterr().out
    assert main(["ca", "list"]) == 1
    assert "which CA? pass --dir DIR" in capsys.readouterr().err
    assert main(["ca", "revoke", "nobody", "--dir", str(ca_dir)]) == 1
    assert "no certificate was issued to device 'nobody'" in capsys.readouterr().err
