"""Python's ``ssl.SSLContext`` with a client key that stays elsewhere (in a TPM): OpenSSL calls back
into Python for each signature the key makes.

Python's ssl module takes private keys only from files it can decode.  For a key that never leaves
a TPM, this module gives OpenSSL an EC key object holding only the public half, with a signing
method (an ``EC_KEY_METHOD``, OpenSSL's hook for keys kept in hardware) that calls a Python
function.  OpenSSL 3 keeps such a "foreign" key away from its providers and signs the TLS
CertificateVerify through the method; everything else (the server's chain and host name, the key
exchange, the record layer) stays with the default provider.  The client signs ECDSA with SHA-256
only, so the callback always gets a 32-byte digest.

Why not the tpm2-openssl provider: the release in Debian 12 (1.1.1) exports the public half of a
TPM key when OpenSSL asks for the whole key (fixed upstream in 1.2.0), so OpenSSL 3.0 signs with a
key that has no private part, unless TPM signatures are preferred for every signature: then the
server's chain is verified in the TPM too, which runs out of its three object slots without a
resource manager (seen with swtpm) and limits the chain to the key sizes the TPM knows.

How: ctypes against the libssl that Python's ``_ssl`` module is linked with (looked up through that
module's own handle, so it is the very same library), and the ``SSL_CTX`` pointer read from the
SSLContext object (CPython keeps it right after the object header; checked against the options
Python reports before anything is written).
"""

from __future__ import annotations

import ctypes
import logging
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.errors import GatewayError

log = logging.getLogger(__name__)

Signer = Callable[[bytes], bytes]
"""A SHA-256 digest in, a DER-encoded ECDSA signature out."""

_NID_P256 = 415  # NID_X9_62_prime256v1
_SSL_CTRL_SET_CLIENT_SIGALGS_LIST = 102
_SIGN_FN = ctypes.CFUNCTYPE(
    ctypes.c_int,  # 1 on success
    ctypes.c_int,  # type (the digest's NID; unused)
    ctypes.c_void_p,  # dgst
    ctypes.c_int,  # dlen
    ctypes.c_void_p,  # sig: ECDSA_size() bytes
    ctypes.POINTER(ctypes.c_uint),  # siglen
    ctypes.c_void_p,  # kinv (unused)
    ctypes.c_void_p,  # r (unused)
    ctypes.c_void_p,  # eckey
)


class ExternalKeyError(GatewayError):
    """The key could not be put into the TLS context (the message says why and what to do)."""


class _OpenSSL:
    """The few libssl/libcrypto functions used here, from the library Python's ssl module uses."""

    def __init__(self) -> None:
        import _ssl

        path = getattr(_ssl, "__file__", None)  # None: _ssl is built into the interpreter
        lib = ctypes.CDLL(path)
        vp, i, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t

        def fn(name: str, restype: Any, *argtypes: Any) -> Any:
            f = getattr(lib, name)
            f.restype = restype
            f.argtypes = list(argtypes)
            return f

        self.SSL_CTX_get_options = fn("SSL_CTX_get_options", ctypes.c_uint64, vp)
        self.SSL_CTX_use_certificate_chain_file = fn("SSL_CTX_use_certificate_chain_file", i, vp, ctypes.c_char_p)
        self.SSL_CTX_use_PrivateKey = fn("SSL_CTX_use_PrivateKey", i, vp, vp)
        self.SSL_CTX_check_private_key = fn("SSL_CTX_check_private_key", i, vp)
        self.SSL_CTX_ctrl = fn("SSL_CTX_ctrl", ctypes.c_long, vp, i, ctypes.c_long, ctypes.c_char_p)
        self.EC_KEY_OpenSSL = fn("EC_KEY_OpenSSL", vp)
        self.EC_KEY_METHOD_new = fn("EC_KEY_METHOD_new", vp, vp)
        self.EC_KEY_METHOD_set_sign = fn("EC_KEY_METHOD_set_sign", None, vp, _SIGN_FN, vp, vp)
        self.EC_KEY_new_by_curve_name = fn("EC_KEY_new_by_curve_name", vp, i)
        self.EC_KEY_set_method = fn("EC_KEY_set_method", i, vp, vp)
        self.EC_KEY_oct2key = fn("EC_KEY_oct2key", i, vp, ctypes.c_char_p, sz, vp)
        self.EC_KEY_free = fn("EC_KEY_free", None, vp)
        self.ECDSA_size = fn("ECDSA_size", i, vp)
        self.EVP_PKEY_new = fn("EVP_PKEY_new", vp)
        self.EVP_PKEY_set1_EC_KEY = fn("EVP_PKEY_set1_EC_KEY", i, vp, vp)
        self.EVP_PKEY_free = fn("EVP_PKEY_free", None, vp)
        self.ERR_get_error = fn("ERR_get_error", ctypes.c_ulong)
        self.ERR_error_string_n = fn("ERR_error_string_n", None, ctypes.c_ulong, ctypes.c_char_p, sz)
        # One signing method for every external key of the process; the callback finds the signer by
        # the EC_KEY it is called for.  Never freed: keys made from it live as long as their contexts.
        self.sign_callback = _SIGN_FN(_sign)
        self.method = self.EC_KEY_METHOD_new(self.EC_KEY_OpenSSL())
        if not self.method:
            raise ExternalKeyError(f"OpenSSL cannot make a key method ({self.error()})")
        self.EC_KEY_METHOD_set_sign(self.method, self.sign_callback, None, None)

    def error(self) -> str:
        """OpenSSL's oldest queued error, and the queue emptied."""
        first = self.ERR_get_error()
        while self.ERR_get_error():
            pass
        if not first:
            return "no OpenSSL error queued"
        buf = ctypes.create_string_buffer(256)
        self.ERR_error_string_n(first, buf, len(buf))
        return buf.value.decode(errors="replace")


class _ExternalKey:
    """What the callback needs for one context's key: its signer, and why it last failed."""

    def __init__(self, sign: Signer) -> None:
        self.sign = sign
        self.failure: str | None = None


_openssl: _OpenSSL | None = None
_openssl_lock = threading.Lock()
_keys: dict[int, _ExternalKey] = {}  # EC_KEY address -> its key's signer
_by_context: weakref.WeakKeyDictionary[Any, _ExternalKey] = weakref.WeakKeyDictionary()


def _lib() -> _OpenSSL:
    global _openssl
    with _openssl_lock:
        if _openssl is None:
            _openssl = _OpenSSL()
        return _openssl


def _sign(
    _type: int, dgst: int, dlen: int, sig: int, siglen: Any, _kinv: int, _r: int, eckey: int
) -> int:  # OpenSSL's EC_KEY_METHOD sign(): runs on the thread doing the handshake
    key = _keys.get(eckey)
    if key is None:  # the context is gone: refuse rather than guess
        return 0
    try:
        der = key.sign(ctypes.string_at(dgst, dlen))
        if len(der) > _lib().ECDSA_size(eckey):
            raise ExternalKeyError(f"a {len(der)}-byte signature, more than an EC P-256 signature can be")
    except Exception as exc:  # an exception must not unwind through OpenSSL: keep it, fail the handshake
        key.failure = str(exc)
        log.warning("TLS client key: the signature failed: %s", exc)
        return 0
    ctypes.memmove(sig, der, len(der))
    siglen[0] = len(der)
    return 1


def _ssl_ctx_pointer(lib: _OpenSSL, ctx: Any) -> int:
    """The ``SSL_CTX *`` inside a CPython ``ssl.SSLContext`` (the first field after the object header)."""
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not ptr or lib.SSL_CTX_get_options(ptr) != int(ctx.options):
        raise ExternalKeyError(
            "this Python's ssl module keeps its OpenSSL context where edgeline does not expect it (CPython 3.11 "
            "to 3.13 are known to work): a TPM-held key cannot be used; use a key file instead"
        )
    return int(ptr)


def use_external_key(ctx: Any, cert_file: Path, public_key: ec.EllipticCurvePublicKey, sign: Signer) -> None:
    """Make the client context ``ctx`` (an ``ssl.SSLContext``) present ``cert_file`` (PEM, the
    certificate first, then any intermediates) and sign with ``sign``, for an EC P-256 key whose
    public half is ``public_key``.  Raises :class:`ExternalKeyError` naming the file and the fix."""
    if not isinstance(public_key.curve, ec.SECP256R1):
        raise ExternalKeyError(f"an external TLS key must be EC P-256, got {public_key.curve.name}")
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError) as exc:
        raise ExternalKeyError(f"{cert_file}: cannot read a PEM certificate ({exc})") from None
    if cert.public_key() != public_key:
        raise ExternalKeyError(
            f"{cert_file}: this certificate is for another key than the TPM's; have the CSR of this key signed"
        )
    lib = _lib()
    ptr = _ssl_ctx_pointer(lib, ctx)
    if lib.SSL_CTX_use_certificate_chain_file(ptr, str(cert_file).encode()) != 1:
        raise ExternalKeyError(f"{cert_file}: OpenSSL cannot use this certificate chain ({lib.error()})")
    point = public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    eckey = lib.EC_KEY_new_by_curve_name(_NID_P256)
    pkey = lib.EVP_PKEY_new()
    try:
        if not (
            eckey
            and pkey
            and lib.EC_KEY_set_method(eckey, lib.method) == 1
            and lib.EC_KEY_oct2key(eckey, point, len(point), None) == 1
            and lib.EVP_PKEY_set1_EC_KEY(pkey, eckey) == 1
        ):
            raise ExternalKeyError(f"OpenSSL cannot make the external key ({lib.error()})")
        _keys[eckey] = _by_context[ctx] = _ExternalKey(sign)
        # The context holds the key from here on; the signer goes when the context does.
        weakref.finalize(ctx, _keys.pop, eckey, None)
        if lib.SSL_CTX_use_PrivateKey(ptr, pkey) != 1 or lib.SSL_CTX_check_private_key(ptr) != 1:
            raise ExternalKeyError(f"{cert_file}: OpenSSL does not take the external key ({lib.error()})")
    finally:
        lib.EVP_PKEY_free(pkey)  # both are reference counted: the context keeps its own references
        lib.EC_KEY_free(eckey)
    if lib.SSL_CTX_ctrl(ptr, _SSL_CTRL_SET_CLIENT_SIGALGS_LIST, 0, b"ECDSA+SHA256") != 1:
        raise ExternalKeyError(f"OpenSSL refuses the client signature algorithms ({lib.error()})")


def take_failure(ctx: Any) -> str | None:
    """Why the external key of ``ctx`` last failed to sign, once (then None until it fails again).
    The handshake's own error says only "EVP lib"."""
    key = _by_context.get(ctx)
    if key is None:
        return None
    failure, key.failure = key.failure, None
    return failure
