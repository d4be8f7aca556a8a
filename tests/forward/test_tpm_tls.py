"""Mutual TLS to the cloud with the gateway's key held in a TPM (swtpm), against a real Mosquitto
that requires a client certificate and takes the username from it; the certificates come from the
fleet CA (tools/flash/pki.py), the key and its request from ``edgeline-gateway tpm-key``.

test_tls.py covers a key file and a broker of another CA; here: the TPM key end to end, the
broker's name checked (for the TPM key and for a key file), another CA with the TPM key, and the
configuration errors around TPM keys."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.forward import ForwardConfig, Forwarder
from gateway.forward.config import check_private_files
from gateway.forward.errors import ForwardConfigError
from tests.forward.helpers import Collector, records, wait_until
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.swtpm import Swtpm
from tools.flash.pki import FleetCA, ServerFiles


@pytest.fixture
def tpm(tmp_path: Path) -> Iterator[Swtpm]:
    with Swtpm(tmp_path / "tpm") as t:
        yield t


def _tpm_identity(tmp_path: Path, tpm: Swtpm, ca: FleetCA, gateway_id: str) -> tuple[Path, Path]:
    """(certificate, TSS2 key file) of a key made in ``tpm``, its CSR signed by ``ca``."""
    key, csr, cert = tmp_path / "cloud.key", tmp_path / "cloud.csr", tmp_path / "cloud.crt"
    args = ["tpm-key", "--tcti", tpm.tcti, "--key-out", str(key), "--csr-out", str(csr), "--cn", gateway_id]
    assert main(args) == 0
    cert.write_bytes(ca.sign_csr(csr.read_bytes(), days=30))
    return cert, key


def _cloud(factory: Callable[..., Mosquitto], server: ServerFiles) -> tuple[Mosquitto, int]:
    """A broker whose TLS listener requires a client certificate of our CA; the CN is the username."""
    port = free_port()
    conf = [
        f"listener {port} 127.0.0.1",
        f"cafile {server.ca}",
        f"certfile {server.cert}",
        f"keyfile {server.key}",
        "require_certificate true",
        "use_identity_as_username true",
    ]
    return factory(extra_conf="\n".join(conf)), port


def _forwarder(tmp_path: Path, name: str, port: int, tls: dict[str, Any]) -> Forwarder:
    cfg = ForwardConfig.from_dict(
        {"host": "127.0.0.1", "port": port, "tls": tls, "backoff_min_s": 0.05, "backoff_max_s": 0.2}
    )
    return Forwarder(cfg, name, tmp_path / name)


def test_records_reach_the_cloud_over_mtls_with_the_tpm_key(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path, tpm: Swtpm
) -> None:
    ca = FleetCA.init(tmp_path / "ca", "plant1")
    cloud, port = _cloud(mosquitto_factory, ca.issue_server("127.0.0.1", tmp_path / "server"))
    cert, key = _tpm_identity(tmp_path, tpm, ca, "gw-tpm")
    tls = {"ca_file": str(ca.directory / "ca.crt"), "cert_file": str(cert), "key_file": str(key), "tpm_tcti": tpm.tcti}
    collector = Collector(cloud)
    fwd = _forwarder(tmp_path, "gw-tpm", port, tls)
    fwd.start()
    try:
        fwd.submit("alert", {"over": "mtls", "key": "tpm"})
        assert fwd.wait_drained(30), fwd.status()
        got = collector.wait_for(lambda m: len(records(m)) >= 1)
        # Each connection is signed by the TPM: without it the next one fails, and the status says why.
        tpm.stop()
        cloud.restart()
        fwd.submit("alert", {"after": "tpm gone"})
        assert fwd.flush(10)  # committed: the depth below counts it
        status = wait_until(
            lambda: "TPM-held client key: no TPM at" in str(fwd.status()["connection"]["last_error"]) and fwd.status(),
            "the missing TPM in the status",
        )
        assert status["lanes"]["alert"]["depth"] == 1
    finally:
        fwd.stop()
        collector.close()
    assert [r["record"] for r in records(got)] == [{"over": "mtls", "key": "tpm"}]
    # The broker took the username from the certificate the TPM key signed for.
    assert "as edgeline-fwd-gw-tpm (p2, c0, k30, u'gw-tpm')" in cloud.log_text()
    assert key.read_bytes().startswith(b"-----BEGIN TSS2 PRIVATE KEY-----")  # no software key anywhere

    with Swtpm(tmp_path / "fresh-tpm") as fresh:  # the key file and certificate with another TPM
        stranger = _forwarder(tmp_path, "gw-elsewhere", port, {**tls, "tpm_tcti": fresh.tcti})
        with pytest.raises(ForwardConfigError, match="made by another TPM"):
            stranger.start()


def test_broker_of_another_name_or_ca_is_refused_and_records_stay_queued(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path, tpm: Swtpm
) -> None:
    ca = FleetCA.init(tmp_path / "ca", "plant1")
    # The broker's certificate is for gateway.plant1 only; the forwarders connect to 127.0.0.1.
    _cloud_broker, port = _cloud(mosquitto_factory, ca.issue_server("gateway.plant1", tmp_path / "server"))
    cert, key = _tpm_identity(tmp_path, tpm, ca, "gw-tpm")
    creds = ca.issue_device("gw-file")
    (tmp_path / "file.crt").write_bytes(creds.cert_pem)
    (tmp_path / "file.key").touch(mode=0o600)
    (tmp_path / "file.key").write_bytes(creds.key_pem)
    rogue = FleetCA.init(tmp_path / "rogue-ca", "elsewhere")
    ca_file, rogue_ca = str(ca.directory / "ca.crt"), str(rogue.directory / "ca.crt")
    tpm_tls = {"cert_file": str(cert), "key_file": str(key), "tpm_tcti": tpm.tcti}
    file_tls = {"cert_file": str(tmp_path / "file.crt"), "key_file": str(tmp_path / "file.key")}
    cases = {
        "wrong-name-tpm": ({**tpm_tls, "ca_file": ca_file}, "IP address mismatch"),
        "wrong-name-file": ({**file_tls, "ca_file": ca_file}, "IP address mismatch"),
        # Mosquitto sends its CA with its certificate: a root the forwarder does not trust.
        "other-ca-tpm": ({**tpm_tls, "ca_file": rogue_ca}, "self-signed certificate in certificate chain"),
    }
    forwarders = {name: _forwarder(tmp_path, name, port, tls) for name, (tls, _) in cases.items()}
    try:
        for fwd in forwarders.values():
            fwd.start()
            fwd.submit("alert", {"kept": True})
            assert fwd.flush(10)  # committed: the depth below counts it
        for name, (_, reason) in cases.items():
            fwd = forwarders[name]
            error = wait_until(
                lambda f=fwd, r=reason: r in str(f.status()["connection"]["last_error"]) and f.status(),
                f"{name}: the refusal ({reason}) in the status",
            )
            assert "certificate verify failed" in error["connection"]["last_error"]
            assert error["connection"]["state"] != "connected"
            assert error["lanes"]["alert"]["depth"] == 1  # kept, waiting for a broker it can trust
            assert error["lanes"]["alert"]["acked"] == 0
    finally:
        for fwd in forwarders.values():
            fwd.stop()


def test_tpm_key_settings_are_checked(tmp_path: Path) -> None:
    tss2 = tmp_path / "cloud.key"
    tss2.write_bytes(b"-----BEGIN TSS2 PRIVATE KEY-----\nMIIB\n-----END TSS2 PRIVATE KEY-----\n")
    plain = tmp_path / "plain.key"
    plain.write_bytes(b"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n")
    for f in (tss2, plain):
        f.chmod(0o600)
    cert = str(tmp_path / "cloud.crt")

    def config(**tls: str) -> ForwardConfig:
        return ForwardConfig.from_dict({"host": "cloud.example", "tls": {"cert_file": cert, **tls}})

    with pytest.raises(ForwardConfigError, match=r"is a TPM key \(TSS2 PRIVATE KEY\): set forward.tls.tpm_tcti"):
        check_private_files(config(key_file=str(tss2)))
    with pytest.raises(ForwardConfigError, match=r"forward\.tls\.tpm_tcti: .* is not a TPM key"):
        check_private_files(config(key_file=str(plain), tpm_tcti="device:/dev/tpmrm0"))
    check_private_files(config(key_file=str(tss2), tpm_tcti="device:/dev/tpmrm0"))
    with pytest.raises(ForwardConfigError, match=r"forward\.tls\.tpm_tcti: names the TPM"):
        ForwardConfig.from_dict({"host": "cloud.example", "tls": {"tpm_tcti": "device:/dev/tpmrm0"}})
