"""A device's TLS files: where they live on the board and on this computer, and when to renew.

On the board (MicroPython) the firmware reads DER files named in config.json ``broker.tls``::

    certs/ca.der  certs/device.der  certs/device.key

On this computer every device has a private folder beside the CA (``<ca dir>/devices/<id>/``,
mode 0700) with the same three files (``device.key`` 0600): provisioning reuses them while the
certificate is good, so provisioning twice does not issue twice; ``renew`` replaces them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from tools.flash.pki import DEVICE_DAYS, DeviceCredentials, FleetCA, IssuedCert, private_dir, write_file

BOARD_DIR = "certs"
CA_NAME = "ca.der"
CERT_NAME = "device.der"
KEY_NAME = "device.key"
BOARD_CA = f"{BOARD_DIR}/{CA_NAME}"
BOARD_CERT = f"{BOARD_DIR}/{CERT_NAME}"
BOARD_KEY = f"{BOARD_DIR}/{KEY_NAME}"
#: a certificate is renewed once less than this share of its lifetime is left
RENEW_FRACTION = 1 / 3
DEVICES_DIR = "devices"


def tls_config(server_name: str) -> dict[str, str]:
    """config.json ``broker.tls``: the files above and the name the broker's certificate must carry."""
    return {"ca": BOARD_CA, "cert": BOARD_CERT, "key": BOARD_KEY, "server_name": server_name}


def folder(ca_dir: Path, device_id: str) -> Path:
    """The device's private folder on this computer."""
    return ca_dir / DEVICES_DIR / device_id


def renew_due(cert: IssuedCert, now: datetime | None = None) -> bool:
    """Whether less than RENEW_FRACTION of the certificate's lifetime is left (or none)."""
    now = now or datetime.now(UTC)
    return cert.not_after - now < (cert.not_after - cert.not_before) * RENEW_FRACTION


def save(creds: DeviceCredentials, where: Path) -> Path:
    """Write the device's three files into ``where`` (0700; the key 0600 from creation)."""
    private_dir(where)
    write_file(where / KEY_NAME, creds.key_der, mode=0o600)
    write_file(where / CERT_NAME, creds.cert_der)
    write_file(where / CA_NAME, creds.ca_der)
    return where


def load(where: Path, device_id: str) -> DeviceCredentials | None:
    """The credentials saved in ``where``, or None when a file is missing or they do not match."""
    try:
        key_der = (where / KEY_NAME).read_bytes()
        cert_der = (where / CERT_NAME).read_bytes()
        ca_der = (where / CA_NAME).read_bytes()
        cert = x509.load_der_x509_certificate(cert_der)
        key = serialization.load_der_private_key(key_der, password=None)
    except (OSError, ValueError, TypeError):
        return None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names or names[0].value != device_id or key.public_key() != cert.public_key():
        return None
    return DeviceCredentials(device_id, key_der, cert_der, ca_der, cert.not_valid_after_utc)


@dataclass(frozen=True)
class Outcome:
    """The credentials to deploy and why: "issued" (new) or "reused" (still good)."""

    creds: DeviceCredentials
    action: str
    where: Path

    def describe(self) -> str:
        days = (self.creds.not_after - datetime.now(UTC)).days
        return (
            f"certificate {self.action} for {self.creds.device_id}: expires {self.creds.not_after:%Y-%m-%d} "
            f"({days} days), files in {self.where} (the key is never shown)"
        )


def reusable(ca: FleetCA, creds: DeviceCredentials, now: datetime | None = None) -> bool:
    """Signed by ``ca``, in its index, not revoked, not due for renewal."""
    if creds.ca_der != ca.cert_der or not ca.verify(creds.cert_der):
        return False
    serial = x509.load_der_x509_certificate(creds.cert_der).serial_number
    entry = next((c for c in ca.issued() if c.serial == serial and c.kind == "device"), None)
    return entry is not None and not entry.revoked and not renew_due(entry, now)


def obtain(
    ca: FleetCA,
    device_id: str,
    *,
    days: int = DEVICE_DAYS,
    renew: bool = False,
    where: Path | None = None,
) -> Outcome:
    """The device's credentials: the saved ones while they are good (unless ``renew``), else a
    new key and certificate, saved first (a board is written only from saved files)."""
    target = where or folder(ca.directory, device_id)
    saved = None if renew else load(target, device_id)
    if saved is not None and reusable(ca, saved):
        return Outcome(saved, "reused", target)
    creds = ca.issue_device(device_id, days=days)
    save(creds, target)
    return Outcome(creds, "issued", target)


def board_files(creds: DeviceCredentials) -> dict[str, bytes]:
    """Board path -> content, for the board's ``certs/`` folder."""
    return {BOARD_CA: creds.ca_der, BOARD_CERT: creds.cert_der, BOARD_KEY: creds.key_der}
