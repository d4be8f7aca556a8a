# The port's `ssl` for the simulation board, made when the firmware first uses it
# (broker.tls; sim_extras.LazySSL stands in sys.modules["ssl"] until then).


def make_ssl_module(port, board):  # noqa: C901 (one closure per call of the port's ssl and its socket)
    """The port's `ssl`: micropython-lib's ssl.py (frozen into the esp32 and rp2 firmware)
    over extmod/modtls_mbedtls.c (`tls`), with its API and its defaults (an SSLContext
    starts with CERT_NONE), and with the sim's socket rules: the TLS socket is made around
    the unix port's own socket inside the PortSocket, so mbedTLS sees the errors a board's
    socket gives as error codes, not as Python exceptions; its handshake, reads and writes
    are blocking calls like the PortSocket's (callbacks serviced meanwhile, link-down
    windows). MICROPYPATH leaves the unix port's frozen ssl.py out of reach, hence this."""
    import io
    import select

    import tls

    class PortTLSSocket(io.IOBase):
        # A wrapper for the same reason as PortSocket; its poll asks the TLS socket, which
        # also reports what mbedTLS has decrypted already (extmod/modtls_mbedtls.c).
        def __init__(self, tls_sock):
            self._s = tls_sock
            self._p = select.poll()
            self._p.register(tls_sock, select.POLLIN | select.POLLOUT)

        def ioctl(self, req, arg):
            if req == 3:  # MP_STREAM_POLL
                r = 0
                for _, ev in self._p.poll(0):
                    r |= ev
                return r & arg
            return -1

        def setblocking(self, flag):
            self._s.setblocking(flag)

        def close(self):
            self._s.close()

        def _blocking(self, fn, *args):
            t0 = board.emu_block_begin()
            try:
                if board.net_down():
                    raise OSError(104)  # ECONNRESET: the link is lost
                return fn(*args)
            finally:
                board.emu_block_end(t0)

        def read(self, n=-1):
            return self._blocking(self._s.read, n) if n >= 0 else self._blocking(self._s.read)

        def readinto(self, buf, n=-1):
            return self._blocking(self._s.readinto, buf) if n < 0 else self._blocking(self._s.readinto, buf, n)

        def write(self, buf, n=-1):
            return self._blocking(self._s.write, buf if n < 0 else memoryview(buf)[:n])

        def cipher(self):
            return self._s.cipher()

    def _data(x):
        if isinstance(x, str):  # a path, read as ssl.py does
            with open(x, "rb") as f:
                return f.read()
        return x

    class SSLContext:
        def __init__(self, *args):
            self._context = tls.SSLContext(*args)
            self._context.verify_mode = tls.CERT_NONE

        @property
        def verify_mode(self):
            return self._context.verify_mode

        @verify_mode.setter
        def verify_mode(self, value):
            self._context.verify_mode = value

        def load_cert_chain(self, certfile, keyfile):
            self._context.load_cert_chain(_data(certfile), _data(keyfile))

        def load_verify_locations(self, cafile=None, cadata=None):
            self._context.load_verify_locations(_data(cafile) if cafile else cadata)

        def wrap_socket(self, sock, server_side=False, do_handshake_on_connect=True, server_hostname=None):
            # the handshake is one blocking call in C (two waits for the peer, the arithmetic)
            t0 = board.emu_block_begin()
            try:
                if board.net_down():
                    raise OSError(104)
                s = self._context.wrap_socket(
                    sock._s,
                    server_side=server_side,
                    do_handshake_on_connect=do_handshake_on_connect,
                    server_hostname=server_hostname,
                )
            finally:
                board.emu_block_end(t0)
            return PortTLSSocket(s)

    class _SSLModule:
        __name__ = "ssl"

    m = _SSLModule()
    for name in dir(tls):
        if name.isupper():
            setattr(m, name, getattr(tls, name))
    m.SSLContext = SSLContext
    return m
