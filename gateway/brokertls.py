"""How devices authenticate to the local broker, as ``check-config`` reports it.

With ``[broker.tls]`` the device listener takes certificates of the site CA and refuses those
the CRL lists. Mosquitto (OpenSSL) refuses EVERY client certificate once the CRL's next-update
date has passed (checked on Mosquitto 2.0.11), so a CRL close to it is a warning: write a new
one with ``edgeline-flash ca crl`` and reload Mosquitto. Without ``[broker.tls]`` devices send
passwords over plain TCP, which anyone on the device network can read: also a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.config import BrokerSection, BrokerTLS

#: warn when the CRL or the broker's certificate expires within this long
CRL_WARN = timedelta(days=7)
CERT_WARN = timedelta(days=30)
PLAIN_WARNING = "devices: passwords over plain TCP (see docs/security.md); set [broker.tls] (docs/gateway.md)"


@dataclass
class DeviceAuth:
    """One line for the report and the warnings that go with it."""

    summary: str
    warnings: list[str] = field(default_factory=list)


def _read(path_key: str, tls: BrokerTLS, warnings: list[str]) -> bytes | None:
    path = getattr(tls, path_key)
    try:
        return bytes(path.read_bytes())
    except OSError as exc:
        warnings.append(
            f"broker.tls.{path_key}: cannot read {path} ({exc.strerror}); Mosquitto will not start "
            "without it (or run check-config as a user that may read it)"
        )
        return None


def _signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    key = ca.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        return False
    try:
        return crl.is_signature_valid(key)
    except (InvalidSignature, TypeError, ValueError):
        return False


def _crl(tls: BrokerTLS, ca: x509.Certificate | None, now: datetime, warnings: list[str]) -> str:
    data = _read("crl_file", tls, warnings)
    if data is None:
        return "unreadable"
    try:
        crl = x509.load_pem_x509_crl(data)
    except ValueError:
        warnings.append(f"broker.tls.crl_file: {tls.crl_file} is not a PEM CRL (write one: edgeline-flash ca crl)")
        return "not a CRL"
    if ca is not None and (crl.issuer != ca.subject or not _signed_by(crl, ca)):
        warnings.append(
            f"broker.tls.crl_file: {tls.crl_file} is not from the CA of broker.tls.ca_file; Mosquitto "
            "refuses every device with it (write one from the site's CA: edgeline-flash ca crl)"
        )
    next_update = crl.next_update_utc
    if next_update is None:
        return "without an expiry date"
    left = next_update - now
    fix = "write a new one (edgeline-flash ca crl), install it and reload Mosquitto"
    if left <= timedelta(0):
        warnings.append(
            f"broker.tls.crl_file: the CRL expired {next_update:%Y-%m-%d %H:%M} UTC: Mosquitto refuses EVERY "
            f"device certificate until it has a current one; {fix}"
        )
        return f"EXPIRED {(-left).days} days ago"
    if left < CRL_WARN:
        warnings.append(
            f"broker.tls.crl_file: the CRL expires {next_update:%Y-%m-%d %H:%M} UTC; after that Mosquitto "
            f"refuses every device; {fix}"
        )
    return f"expires in {left.days} days"


def device_auth(broker: BrokerSection, now: datetime | None = None) -> DeviceAuth:
    """How devices authenticate, with warnings about the TLS files' dates."""
    tls = broker.tls
    if tls is None:
        return DeviceAuth("devices: passwords over plain TCP", [PLAIN_WARNING])
    now = now or datetime.now(UTC)
    warnings: list[str] = []
    ca = None
    ca_data = _read("ca_file", tls, warnings)
    if ca_data is not None:
        try:
            ca = x509.load_pem_x509_certificate(ca_data)
        except ValueError:
            warnings.append(f"broker.tls.ca_file: {tls.ca_file} is not a PEM certificate")
    cert_data = _read("cert_file", tls, warnings)
    if cert_data is not None:
        try:
            cert = x509.load_pem_x509_certificate(cert_data)
        except ValueError:
            warnings.append(f"broker.tls.cert_file: {tls.cert_file} is not a PEM certificate")
        else:
            left = cert.not_valid_after_utc - now
            if left < CERT_WARN:
                warnings.append(
                    f"broker.tls.cert_file: the broker's certificate expires {cert.not_valid_after_utc:%Y-%m-%d} "
                    "(devices refuse an expired one): issue a new one with edgeline-flash ca server-cert"
                )
    crl = _crl(tls, ca, now, warnings)
    return DeviceAuth(f"devices: mTLS (CA {tls.ca_file}, CRL {tls.crl_file} {crl})", warnings)
