"""The fleet CA (tools/flash/pki.py): chains verify, names and usages are right, revocation
reaches the CRL, keys are private, and a broken CA directory gets an actionable error."""

from __future__ import annotations

import json
import multiprocessing
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from tools.flash.pki import CRL_DAYS, DEVICE_DAYS, CAError, FleetCA


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def openssl_verify(
    where: Path, ca_pem: bytes, leaf_pem: bytes, *, purpose: str, crl: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``openssl verify`` of ``leaf_pem`` against ``ca_pem`` (and ``crl``) for a TLS ``purpose``."""
    (where / "verify-ca.pem").write_bytes(ca_pem)
    (where / "verify-leaf.pem").write_bytes(leaf_pem)
    command = ["openssl", "verify", "-purpose", purpose, "-CAfile", "verify-ca.pem"]
    if crl is not None:
        command += ["-crl_check", "-CRLfile", str(crl)]
    command.append("verify-leaf.pem")
    return subprocess.run(command, cwd=where, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> FleetCA:
    return FleetCA.init(tmp_path_factory.mktemp("pki") / "ca", "plant1")


def eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_ca_directory_is_private_and_opens_again(ca: FleetCA) -> None:
    assert mode(ca.directory) == 0o700
    assert mode(ca.directory / "ca.key") == 0o600
    assert b"PRIVATE KEY" not in ca.cert_pem
    again = FleetCA.open(ca.directory)
    assert again.cert_der == ca.cert_der
    assert again.site == "plant1"
    assert "PRIVATE" not in repr(again)
    cert = x509.load_der_x509_certificate(ca.cert_der)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_device_certificate_chain_name_and_usage(ca: FleetCA, tmp_path: Path) -> None:
    creds = ca.issue_device("pump-01")
    cert = x509.load_der_x509_certificate(creds.cert_der)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "pump-01"
    assert eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert creds.ca_der == ca.cert_der
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=DEVICE_DAYS) <= lifetime <= timedelta(days=DEVICE_DAYS, minutes=10)
    # the key is PKCS#8 DER, unencrypted, P-256, and belongs to the certificate
    key = serialization.load_der_private_key(creds.key_der, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert key.public_key() == cert.public_key()
    assert creds.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert serialization.load_pem_private_key(creds.key_pem, password=None).public_key() == cert.public_key()
    assert "PRIVATE" not in repr(creds) and "key_der" not in repr(creds)
    # OpenSSL (Mosquitto's TLS library) accepts it as a TLS client certificate of this CA
    assert openssl_verify(tmp_path, ca.cert_pem, creds.cert_pem, purpose="sslclient").returncode == 0
    assert openssl_verify(tmp_path, ca.cert_pem, creds.cert_pem, purpose="sslserver").returncode != 0
    # a new issue is a new key and a new serial
    second = ca.issue_device("pump-01")
    assert second.key_der != creds.key_der
    assert x509.load_der_x509_certificate(second.cert_der).serial_number != cert.serial_number


def test_server_certificate_files_san_and_usage(ca: FleetCA, tmp_path: Path) -> None:
    files = ca.issue_server("gateway.plant1", tmp_path / "tls", dns=["gateway.plant1"], ips=["127.0.0.1"])
    assert mode(files.key) == 0o600 and mode(tmp_path / "tls") == 0o700
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert eku(cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gateway.plant1"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    # the name is always in the SAN (TLS clients never look at the CN), as an address if it is one
    by_name = ca.issue_server("gw.site", tmp_path / "a", dns=["gw"], ips=["10.0.0.1"])
    san = x509.load_pem_x509_certificate(by_name.cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == ["gw.site", "gw"]
    by_ip = ca.issue_server("10.0.0.2", tmp_path / "b")
    san = x509.load_pem_x509_certificate(by_ip.cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert [str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)] == ["10.0.0.2"]
    assert san.value.get_values_for_type(x509.DNSName) == []
    assert files.ca.read_bytes() == ca.cert_pem
    store = Store([x509.load_pem_x509_certificate(ca.cert_pem)])
    PolicyBuilder().store(store).build_server_verifier(x509.DNSName("gateway.plant1")).verify(cert, [])
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).build_server_verifier(x509.DNSName("other.plant1")).verify(cert, [])
    with pytest.raises(CAError, match="--ip"):
        ca.issue_server("gw", tmp_path / "bad", ips=["not-an-ip"])


def test_another_ca_does_not_verify(ca: FleetCA, tmp_path: Path) -> None:
    other = FleetCA.init(tmp_path / "other", "plant2")
    creds = other.issue_device("pump-01")
    assert not ca.verify(creds.cert_der)
    assert other.verify(creds.cert_der)
    result = openssl_verify(tmp_path, ca.cert_pem, creds.cert_pem, purpose="sslclient")
    assert result.returncode != 0 and "unable to get local issuer certificate" in result.stdout + result.stderr


def test_expired_certificate_can_be_issued_for_tests(ca: FleetCA) -> None:
    start = datetime.now(UTC) - timedelta(days=10)
    creds = ca.issue_device("old-01", days=2, not_before=start)
    assert creds.not_after < datetime.now(UTC)
    entry = next(c for c in ca.issued() if c.device_id == "old-01")
    assert entry.expired()


def test_revoke_lists_every_live_serial_in_the_crl(ca: FleetCA, tmp_path: Path) -> None:
    first = x509.load_der_x509_certificate(ca.issue_device("fan-07").cert_der)
    second = x509.load_der_x509_certificate(ca.issue_device("fan-07").cert_der)
    keeper = x509.load_der_x509_certificate(ca.issue_device("fan-08").cert_der)
    revoked = ca.revoke("fan-07")
    assert sorted(revoked) == sorted([first.serial_number, second.serial_number])
    assert ca.revoke("fan-07") == []  # nothing left to revoke
    with pytest.raises(CAError, match="no certificate was issued to device 'nobody'"):
        ca.revoke("nobody")
    crl_path = ca.write_crl(tmp_path / "crl" / "ca.crl")
    crl = x509.load_pem_x509_crl(crl_path.read_bytes())
    assert crl.is_signature_valid(x509.load_der_x509_certificate(ca.cert_der).public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(first.serial_number) is not None
    assert crl.get_revoked_certificate_by_serial_number(second.serial_number) is not None
    assert crl.get_revoked_certificate_by_serial_number(keeper.serial_number) is None
    assert crl.next_update_utc is not None
    assert timedelta(days=CRL_DAYS - 1) < crl.next_update_utc - datetime.now(UTC) <= timedelta(days=CRL_DAYS)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    later = x509.load_pem_x509_crl(ca.write_crl(tmp_path / "crl" / "ca.crl").read_bytes())
    assert later.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == number + 1
    entries = {c.serial: c for c in ca.issued()}
    assert entries[first.serial_number].revoked and not entries[keeper.serial_number].revoked


def test_openssl_refuses_a_revoked_certificate(ca: FleetCA, tmp_path: Path) -> None:
    """The CRL as OpenSSL (Mosquitto's TLS library) reads it."""
    good, bad = ca.issue_device("valve-1"), ca.issue_device("valve-2")
    ca.revoke("valve-2")
    crl = ca.write_crl(tmp_path / "ca.crl")
    assert openssl_verify(tmp_path, ca.cert_pem, good.cert_pem, purpose="sslclient", crl=crl).returncode == 0
    result = openssl_verify(tmp_path, ca.cert_pem, bad.cert_pem, purpose="sslclient", crl=crl)
    assert result.returncode != 0 and "revoked" in (result.stdout + result.stderr)


def test_init_refuses_an_existing_ca(ca: FleetCA) -> None:
    with pytest.raises(CAError, match="already set up"):
        FleetCA.init(ca.directory, "plant1")
    with pytest.raises(CAError, match="site"):
        FleetCA.init(ca.directory.parent / "x", "bad site")


def test_open_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(CAError, match=r"does not exist: create the CA with `edgeline-flash ca init"):
        FleetCA.open(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CAError, match=r"ca\.key is missing"):
        FleetCA.open(tmp_path / "empty")
    ca = FleetCA.init(tmp_path / "ca", "plant1")
    key = ca.directory / "ca.key"
    key.chmod(0o644)
    with pytest.raises(CAError, match=rf"mode 0644.*run `chmod 600 {key}`"):
        FleetCA.open(ca.directory)
    key.chmod(0o600)
    (ca.directory / "index.json").write_text("{}")
    with pytest.raises(CAError, match="not an edgeline CA index"):
        FleetCA.open(ca.directory)


def test_open_refuses_a_key_of_another_ca(tmp_path: Path) -> None:
    one, two = FleetCA.init(tmp_path / "one", "a"), FleetCA.init(tmp_path / "two", "b")
    (one.directory / "ca.crt").write_bytes(two.cert_pem)
    with pytest.raises(CAError, match="does not belong to"):
        FleetCA.open(one.directory)


def test_index_holds_no_key_material(ca: FleetCA) -> None:
    ca.issue_device("idx-1")
    text = (ca.directory / "index.json").read_text()
    assert "PRIVATE" not in text and "BEGIN" not in text
    entries = json.loads(text)["certs"]
    assert {"kind", "name", "serial", "not_before", "not_after", "revoked_at"} == set(entries[0])


def test_certificates_cannot_outlive_the_ca(tmp_path: Path) -> None:
    ca = FleetCA.init(tmp_path / "short", "plant1", days=30)
    with pytest.raises(CAError, match="would outlive the CA"):
        ca.issue_device("d1", days=90)


def test_sign_csr(ca: FleetCA) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "csr-dev")]))
        .sign(key, hashes.SHA256())
    )
    pem = ca.sign_csr(csr.public_bytes(serialization.Encoding.PEM), days=10)
    cert = x509.load_pem_x509_certificate(pem)
    assert cert.public_key() == key.public_key()
    assert eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ca.verify(cert.public_bytes(serialization.Encoding.DER))
    with pytest.raises(CAError, match="not a PEM CSR"):
        ca.sign_csr(b"junk", days=10)


def _issue_many(directory: Path, worker: int, n: int) -> None:
    ca = FleetCA.open(directory)
    for i in range(n):
        ca.issue_device(f"dev-{worker}-{i}")


def test_concurrent_provisioning_runs_lose_no_certificate_from_the_index(tmp_path: Path) -> None:
    # Two terminals provisioning at once: every certificate issued is in the index (so it can be
    # listed and revoked), none overwritten by another run's read-modify-write.
    FleetCA.init(tmp_path / "ca", "s1")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_issue_many, args=(tmp_path / "ca", w, 6)) for w in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    names = sorted(c.device_id for c in FleetCA.open(tmp_path / "ca").issued() if c.kind == "device")
    assert names == sorted(f"dev-{w}-{i}" for w in range(6) for i in range(6))
