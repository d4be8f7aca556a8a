"""What `check-config` says about how devices authenticate (gateway/brokertls.py): mTLS with the
CRL's expiry, warnings before Mosquitto starts refusing everyone, and the plain-password warning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.brokertls import device_auth
from gateway.cli import main
from gateway.config import BrokerSection, BrokerTLS
from tests.gateway.test_config_cli import installed_example
from tools.flash.pki import FleetCA


def tls_files(tmp_path: Path, *, crl_days: int = 30, crl_issued_at: datetime | None = None) -> BrokerTLS:
    ca = FleetCA.init(tmp_path / "ca", "plant1")
    files = ca.issue_server("gateway.plant1", tmp_path / "tls")
    crl = ca.write_crl(tmp_path / "tls" / "crl.pem", days=crl_days, issued_at=crl_issued_at)
    return BrokerTLS(files.ca, files.cert, files.key, crl)


def test_plain_passwords_are_a_warning() -> None:
    auth = device_auth(BrokerSection(device_address="192.168.4.1"))
    assert auth.summary == "devices: passwords over plain TCP"
    assert auth.warnings == [
        "devices: passwords over plain TCP (see docs/security.md); set [broker.tls] (docs/gateway.md)"
    ]


def test_a_current_crl_gives_its_days_left(tmp_path: Path) -> None:
    tls = tls_files(tmp_path)
    auth = device_auth(BrokerSection(tls=tls))
    assert auth.summary == f"devices: mTLS (CA {tls.ca_file}, CRL {tls.crl_file} expires in 29 days)"
    assert auth.warnings == []


def test_a_crl_expiring_within_a_week_is_a_warning(tmp_path: Path) -> None:
    tls = tls_files(tmp_path, crl_days=5)
    auth = device_auth(BrokerSection(tls=tls))
    assert "expires in 4 days" in auth.summary
    assert len(auth.warnings) == 1
    assert auth.warnings[0].startswith("broker.tls.crl_file: the CRL expires ")
    assert "Mosquitto refuses every device; write a new one (edgeline-flash ca crl)" in auth.warnings[0]


def test_an_expired_crl_is_a_warning_too(tmp_path: Path) -> None:
    tls = tls_files(tmp_path, crl_days=1, crl_issued_at=datetime.now(UTC) - timedelta(days=3))
    auth = device_auth(BrokerSection(tls=tls))
    assert auth.summary.endswith("EXPIRED 2 days ago)")
    assert "Mosquitto refuses EVERY device certificate until it has a current one" in auth.warnings[0]


def test_a_crl_of_another_ca_and_missing_files_are_named(tmp_path: Path) -> None:
    tls = tls_files(tmp_path)
    FleetCA.init(tmp_path / "other", "plant1").write_crl(tls.crl_file)
    auth = device_auth(BrokerSection(tls=tls))
    assert any("is not from the CA of broker.tls.ca_file" in w for w in auth.warnings), auth.warnings
    tls.cert_file.unlink()
    auth = device_auth(BrokerSection(tls=tls))
    assert any(w.startswith(f"broker.tls.cert_file: cannot read {tls.cert_file}") for w in auth.warnings)


def test_a_server_certificate_close_to_expiry_is_a_warning(tmp_path: Path) -> None:
    tls = tls_files(tmp_path)
    auth = device_auth(BrokerSection(tls=tls), now=datetime.now(UTC) + timedelta(days=380))
    assert any("the broker's certificate expires" in w for w in auth.warnings), auth.warnings


def test_check_config_prints_the_line_and_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The example as installed points at TLS files that are not on this machine: check-config
    still passes (Mosquitto, not the gateway, reads them) and says what is missing."""
    assert main(["check-config", "--skip-models", "-c", str(installed_example(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "devices: mTLS (CA /etc/mosquitto/edgeline/ca.crt, CRL /etc/mosquitto/edgeline/crl.pem unreadable)" in out
    assert "warning: broker.tls.crl_file: cannot read /etc/mosquitto/edgeline/crl.pem" in out
