"""The fleet CA: one site CA, a server certificate for the gateway's Mosquitto, and one
short-lived client certificate per device (EC P-256, ECDSA with SHA-256).

A CA directory holds::

    ca.key      the CA's private key (PKCS#8 PEM, mode 0600; the directory is 0700)
    ca.crt      the CA certificate (PEM)
    index.json  every certificate issued: kind, name, serial, validity, revocation

The CA key and device keys are never printed or logged. Key files are created with mode 0600
(``os.open``), never chmod-ed after writing; every file is written to a temporary name and
renamed, so an interrupted write leaves the old file whole.

A device certificate's CN is the device id: Mosquitto with ``use_identity_as_username`` takes it
as the username, so the per-device ACL applies to it. Revocation marks every unexpired
certificate of a device in the index; ``write_crl`` writes the PEM CRL Mosquitto's ``crlfile``
loads. A CRL has a next-update date: once it is past, Mosquitto refuses every client, so it is
rewritten well before (docs/flashing.md "Device certificates").

One module on purpose: every function here reads or writes the CA's key and its index, under
the index lock. The command line is tools/flash/ca_cli.py, the provisioning side
tools/flash/device_certs.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared_protocol.topics import valid_id
from tools.flash.errors import FlashError

DEVICE_DAYS = 90  # default device certificate lifetime
SERVER_DAYS = 397  # the longest a browser-style server certificate may live
CRL_DAYS = 30
CA_DAYS = 3650

CA_KEY = "ca.key"
CA_CERT = "ca.crt"
INDEX = "index.json"
INDEX_LOCK = ".index.lock"
SERVER_KEY = "server.key"
SERVER_CERT = "server.crt"
#: clock skew allowed between the tool and the boards or the broker
BACKDATE = timedelta(minutes=5)
_HASH = hashes.SHA256()
_INDEX_VERSION = 1


class CAError(FlashError):
    """The CA directory or a request to it is wrong; the message says which file and the fix."""


@dataclass(frozen=True)
class DeviceCredentials:
    """What a device needs for mutual TLS: its key, its certificate and the CA (all DER)."""

    device_id: str
    key_der: bytes  # PKCS#8 DER, unencrypted (boards cannot decrypt)
    cert_der: bytes
    ca_der: bytes
    not_after: datetime

    @property
    def key_pem(self) -> bytes:
        return _pem("PRIVATE KEY", self.key_der)

    @property
    def cert_pem(self) -> bytes:
        return _pem("CERTIFICATE", self.cert_der)

    @property
    def ca_pem(self) -> bytes:
        return _pem("CERTIFICATE", self.ca_der)

    def __repr__(self) -> str:  # never the key, not even in a traceback
        return f"DeviceCredentials(device_id={self.device_id!r}, not_after={self.not_after.isoformat()})"


@dataclass(frozen=True)
class ServerFiles:
    """The files of a server certificate, ready for Mosquitto's keyfile/certfile/cafile."""

    key: Path  # 0600
    cert: Path
    ca: Path


@dataclass(frozen=True)
class IssuedCert:
    """One entry of the CA's index."""

    device_id: str  # the CN: a device id, or a server's name for kind "server"
    serial: int
    not_before: datetime
    not_after: datetime
    revoked: bool
    kind: str = "device"  # "device" | "server"
    revoked_at: datetime | None = None

    def expired(self, now: datetime | None = None) -> bool:
        return self.not_after <= (now or _now())


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)  # certificates hold whole seconds


def _pem(label: str, der: bytes) -> bytes:
    import base64

    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"".join(
        [f"-----BEGIN {label}-----\n".encode(), *(line + b"\n" for line in lines), f"-----END {label}-----\n".encode()]
    )


def write_file(path: Path, data: bytes, *, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` atomically, the file created with ``mode`` from the start."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp: mode 0600
    try:
        if mode != 0o600:
            os.fchmod(fd, mode)  # widening a file that holds no secret (certificates, CRL, index)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def private_dir(path: Path) -> Path:
    """Create ``path`` and the parents it lacks with mode 0700; an existing ``path`` is
    tightened to 0700 (before any secret goes in)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o700)
    return path


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs only; a server or device key signs handshakes only."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _serial() -> int:
    """A random positive 128-bit serial (RFC 5280: at most 20 octets, unpredictable)."""
    return secrets.randbits(127) | (1 << 126)


def _key_der(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _entry(record: dict[str, Any]) -> IssuedCert:
    revoked_at = record.get("revoked_at")
    return IssuedCert(
        device_id=record["name"],
        serial=int(record["serial"], 16),
        not_before=_parse_time(record["not_before"]),
        not_after=_parse_time(record["not_after"]),
        revoked=revoked_at is not None,
        kind=record["kind"],
        revoked_at=_parse_time(revoked_at) if revoked_at else None,
    )


def _record(cert: IssuedCert) -> dict[str, Any]:
    return {
        "kind": cert.kind,
        "name": cert.device_id,
        "serial": f"{cert.serial:x}",
        "not_before": cert.not_before.isoformat(),
        "not_after": cert.not_after.isoformat(),
        "revoked_at": cert.revoked_at.isoformat() if cert.revoked_at else None,
    }


class FleetCA:
    """A site's certificate authority, kept in one directory (see the module docstring)."""

    def __init__(self, directory: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.directory = directory
        self._key = key
        self._cert = cert

    def __repr__(self) -> str:
        return f"FleetCA({str(self.directory)!r}, {self._cert.subject.rfc4514_string()!r})"

    # ----------------------------------------------------------------- creating and opening

    @classmethod
    def init(cls, directory: Path, site: str, *, days: int = CA_DAYS) -> FleetCA:
        """Create a new CA for ``site`` in ``directory``; refuses to overwrite an existing one."""
        if not valid_id(site):
            raise CAError(f"site {site!r} must be 1-32 characters of A-Z a-z 0-9 _ -")
        for filename in (CA_KEY, CA_CERT):
            if (directory / filename).exists():
                raise CAError(
                    f"{directory / filename} exists: a CA is already set up in {directory} "
                    "(replacing it would orphan every certificate it issued; use another --dir)"
                )
        private_dir(directory)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgeline"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, site),
                x509.NameAttribute(NameOID.COMMON_NAME, f"edgeline {site} CA"),
            ]
        )
        now = _now()
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(public)
            .serial_number(_serial())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                _key_usage(ca=True),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, _HASH)
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_file(directory / CA_KEY, key_pem, mode=0o600)
        write_file(directory / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
        ca = cls(directory, key, cert)
        ca._save_index({"version": _INDEX_VERSION, "site": site, "crl_number": 0, "certs": []})
        return ca

    @classmethod
    def open(cls, directory: Path) -> FleetCA:
        """Open the CA in ``directory``; a clear error when it is missing, unreadable or too open."""
        key_path, cert_path = directory / CA_KEY, directory / CA_CERT
        if not directory.is_dir():
            raise CAError(
                f"CA directory {directory} does not exist: create the CA with "
                f"`edgeline-flash ca init --dir {directory} --site SITE`"
            )
        if not key_path.exists() or not cert_path.exists():
            missing = CA_KEY if not key_path.exists() else CA_CERT
            raise CAError(
                f"{directory / missing} is missing: {directory} is not a CA directory "
                f"(create one with `edgeline-flash ca init --dir DIR --site SITE`, or restore it from its backup)"
            )
        mode = stat.S_IMODE(key_path.stat().st_mode)
        if mode & 0o077:
            raise CAError(
                f"{key_path} is readable by other users (mode {mode:04o}): the CA key must be private; "
                f"run `chmod 600 {key_path}` (and `chmod 700 {directory}`), and consider the key exposed "
                "if others could log in"
            )
        try:
            key_data = key_path.read_bytes()
            cert_data = cert_path.read_bytes()
        except OSError as exc:
            raise CAError(f"cannot read the CA in {directory}: {exc.strerror} ({exc.filename})") from None
        try:
            key = serialization.load_pem_private_key(key_data, password=None)
        except (ValueError, TypeError):
            raise CAError(f"{key_path} is not an unencrypted PEM private key") from None
        try:
            cert = x509.load_pem_x509_certificate(cert_data)
        except ValueError:
            raise CAError(f"{cert_path} is not a PEM certificate") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise CAError(f"{key_path} does not belong to {cert_path}: restore the pair from the CA's backup")
        ca = cls(directory, key, cert)
        ca._load_index()  # a damaged index is reported now, not halfway through an issue
        return ca

    # ----------------------------------------------------------------- the CA certificate

    @property
    def cert_pem(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.PEM)

    @property
    def cert_der(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.DER)

    @property
    def not_after(self) -> datetime:
        return self._cert.not_valid_after_utc

    @property
    def site(self) -> str:
        return str(self._load_index()["site"])

    # ----------------------------------------------------------------- issuing

    def _builder(
        self, subject: x509.Name, public: ec.EllipticCurvePublicKey, not_before: datetime, days: int
    ) -> tuple[x509.CertificateBuilder, datetime]:
        if days < 1:
            raise CAError(f"a certificate must live at least 1 day (got {days})")
        not_before = not_before.replace(microsecond=0)
        not_after = not_before + timedelta(days=days)
        if not_after > self.not_after:
            raise CAError(
                f"a {days}-day certificate would outlive the CA (it expires {self.not_after:%Y-%m-%d}); "
                "issue a shorter one, or set up a new CA"
            )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._cert.subject)
            .public_key(public)
            .serial_number(self._new_serial())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                _key_usage(ca=False),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        return builder, not_after

    def _sign(self, builder: x509.CertificateBuilder, kind: str, name: str) -> x509.Certificate:
        cert = builder.sign(self._key, _HASH)
        self._add_issued(
            IssuedCert(name, cert.serial_number, cert.not_valid_before_utc, cert.not_valid_after_utc, False, kind)
        )
        return cert

    def issue_server(
        self,
        name: str,
        out_dir: Path,
        *,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        days: int = SERVER_DAYS,
    ) -> ServerFiles:
        """A server certificate (CN=name, SAN name + dns + ips, serverAuth) with a new key,
        written to ``out_dir`` as server.key (0600), server.crt and ca.crt. TLS clients check
        the SAN, never the CN, so ``name`` is in the SAN too (as an IP address if it is one)."""
        try:
            addresses = [ipaddress.ip_address(ip) for ip in ips]
        except ValueError as exc:
            raise CAError(f"--ip: {exc}") from None
        try:
            addresses.insert(0, ipaddress.ip_address(name))
            names = list(dns)
        except ValueError:
            names = [name, *dns]
        names = list(dict.fromkeys(names))
        addresses = list(dict.fromkeys(addresses))
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder, _ = self._builder(subject, key.public_key(), _now() - BACKDATE, days)
        san: list[x509.GeneralName] = [x509.DNSName(d) for d in names]
        san += [x509.IPAddress(a) for a in addresses]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        cert = self._sign(builder, "server", name)
        private_dir(out_dir)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        files = ServerFiles(out_dir / SERVER_KEY, out_dir / SERVER_CERT, out_dir / CA_CERT)
        write_file(files.key, key_pem, mode=0o600)
        write_file(files.cert, cert.public_bytes(serialization.Encoding.PEM))
        write_file(files.ca, self.cert_pem)
        return files

    def issue_device(
        self, device_id: str, *, days: int = DEVICE_DAYS, not_before: datetime | None = None
    ) -> DeviceCredentials:
        """A new key and client certificate for ``device_id`` (CN = the id, clientAuth).
        ``not_before`` (default: now) lets tests issue an already-expired certificate."""
        if not valid_id(device_id):
            raise CAError(f"device id {device_id!r} must be 1-32 characters of A-Z a-z 0-9 _ -")
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])
        start = not_before if not_before is not None else _now() - BACKDATE
        builder, not_after = self._builder(subject, key.public_key(), start, days)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        cert = self._sign(builder, "device", device_id)
        return DeviceCredentials(
            device_id=device_id,
            key_der=_key_der(key),
            cert_der=cert.public_bytes(serialization.Encoding.DER),
            ca_der=self.cert_der,
            not_after=not_after,
        )

    def sign_csr(self, csr_pem: bytes, *, days: int, client: bool = True) -> bytes:
        """Sign a PEM certificate request (EC P-256; CN = a device id for a client certificate)
        and return the PEM certificate: for a device whose key never leaves it."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError:
            raise CAError("the certificate request is not a PEM CSR") from None
        if not csr.is_signature_valid:
            raise CAError("the certificate request's signature does not verify")
        public = csr.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
            raise CAError("the certificate request must hold an EC P-256 key")
        common = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        name = str(common[0].value) if common else ""
        if client and not valid_id(name):
            raise CAError(f"the request's CN {name!r} must be a device id (1-32 of A-Z a-z 0-9 _ -)")
        if not name:
            raise CAError("the certificate request has no CN")
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder, _ = self._builder(subject, public, _now() - BACKDATE, days)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if not client:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        cert = self._sign(builder, "device" if client else "server", name)
        return cert.public_bytes(serialization.Encoding.PEM)

    # ----------------------------------------------------------------- revocation

    def revoke(self, device_id: str) -> list[int]:
        """Revoke every unexpired, unrevoked certificate of ``device_id``; the serials revoked.
        The CRL is not rewritten here: call ``write_crl`` (the CLI does both)."""
        with self._index_lock():
            return self._revoke(device_id)

    def _revoke(self, device_id: str) -> list[int]:
        index = self._load_index()
        now = _now()
        known = False
        revoked: list[int] = []
        for record in index["certs"]:
            if record["kind"] != "device" or record["name"] != device_id:
                continue
            known = True
            cert = _entry(record)
            if cert.revoked or cert.expired(now):
                continue
            record["revoked_at"] = now.isoformat()
            revoked.append(cert.serial)
        if not known:
            raise CAError(f"no certificate was issued to device {device_id!r} by the CA in {self.directory}")
        if revoked:
            self._save_index(index)
        return revoked

    def crl(self, *, days: int = CRL_DAYS, issued_at: datetime | None = None) -> x509.CertificateRevocationList:
        """A new CRL (next number) of every revoked certificate that has not expired yet.
        ``issued_at`` (default: now) lets tests make a CRL that has already expired."""
        with self._index_lock():
            return self._crl(days, issued_at)

    def _crl(self, days: int, issued_at: datetime | None) -> x509.CertificateRevocationList:
        index = self._load_index()
        number = int(index.get("crl_number", 0)) + 1
        now = issued_at.replace(microsecond=0) if issued_at is not None else _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._cert.subject)
            .last_update(now - BACKDATE)
            .next_update(now + timedelta(days=days))
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        for cert in (_entry(r) for r in index["certs"]):
            if cert.revoked and cert.revoked_at is not None and not cert.expired(now):
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder().serial_number(cert.serial).revocation_date(cert.revoked_at).build()
                )
        crl = builder.sign(self._key, _HASH)
        index["crl_number"] = number
        self._save_index(index)
        return crl

    def write_crl(self, path: Path, *, days: int = CRL_DAYS, issued_at: datetime | None = None) -> Path:
        """Write a new PEM CRL to ``path`` (Mosquitto's ``crlfile``), valid for ``days``."""
        if days < 1:
            raise CAError(f"a CRL must be valid at least 1 day (got {days})")
        crl = self.crl(days=days, issued_at=issued_at)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_file(path, crl.public_bytes(serialization.Encoding.PEM))

    def issued(self) -> list[IssuedCert]:
        """Every certificate issued, oldest first."""
        return [_entry(r) for r in self._load_index()["certs"]]

    def verify(self, cert_der: bytes) -> bool:
        """Whether ``cert_der`` was signed by this CA (signature only; validity is not checked)."""
        cert = x509.load_der_x509_certificate(cert_der)
        try:
            cert.verify_directly_issued_by(self._cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    # ----------------------------------------------------------------- the index

    def _new_serial(self) -> int:
        used = {r["serial"] for r in self._load_index()["certs"]}
        while True:
            serial = _serial()
            if f"{serial:x}" not in used:
                return serial

    @contextlib.contextmanager
    def _index_lock(self) -> Iterator[None]:
        """Every read-modify-write of the index holds this: two provisioning runs at once (two
        terminals, a script per board) each add their certificate, none is lost."""
        fd = os.open(self.directory / INDEX_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _add_issued(self, cert: IssuedCert) -> None:
        with self._index_lock():
            index = self._load_index()
            index["certs"].append(_record(cert))
            self._save_index(index)

    def _load_index(self) -> dict[str, Any]:
        path = self.directory / INDEX
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CAError(f"{path} is missing: restore it from the CA's backup") from None
        except (OSError, ValueError) as exc:
            raise CAError(f"cannot read {path}: {exc}") from None
        if (
            not isinstance(index, dict)
            or index.get("version") != _INDEX_VERSION
            or not isinstance(index.get("certs"), list)
        ):
            raise CAError(f"{path} is not an edgeline CA index (version {_INDEX_VERSION}): restore it from backup")
        return index

    def _save_index(self, index: dict[str, Any]) -> None:
        data = json.dumps(index, indent=1, sort_keys=True).encode("utf-8") + b"\n"
        write_file(self.directory / INDEX, data)
