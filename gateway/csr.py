"""A certificate signing request (PKCS#10, RFC 2986) for an EC P-256 key whose private half is
elsewhere (a TPM): the request is assembled here and only its digest goes to the signer.

``cryptography`` builds requests only with a private key it holds, so the DER is put together by
hand: the request info (version 0, the subject, the public key, no attributes), the algorithm
ecdsa-with-SHA256 and the signature.  The result is parsed back and its signature checked before
it is returned, so a fault here cannot reach the CA.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# AlgorithmIdentifier { ecdsa-with-SHA256 (1.2.840.10045.4.3.2) }, parameters absent (RFC 5758)
_ECDSA_WITH_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")


class CSRError(ValueError):
    """A bad common name, or a signature that does not verify."""


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def build_csr(common_name: str, public_key: ec.EllipticCurvePublicKey, sign: Callable[[bytes], bytes]) -> bytes:
    """A PEM CSR with subject ``CN=common_name`` for ``public_key``; ``sign`` gets the SHA-256 digest of
    the request info and returns a DER ECDSA signature made with the matching private key."""
    if not common_name or len(common_name) > 64:
        raise CSRError(f"common name: expected 1..64 characters, got {common_name!r}")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]).public_bytes()
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    info = _der(0x30, b"\x02\x01\x00" + subject + spki + b"\xa0\x00")  # version 0 ... attributes [0] {}
    signature = sign(hashlib.sha256(info).digest())
    der = _der(0x30, info + _ECDSA_WITH_SHA256 + _der(0x03, b"\x00" + signature))
    csr = x509.load_der_x509_csr(der)
    if not csr.is_signature_valid:
        raise CSRError("the signer's signature does not verify against the public key (a key of another TPM?)")
    return csr.public_bytes(serialization.Encoding.PEM)
