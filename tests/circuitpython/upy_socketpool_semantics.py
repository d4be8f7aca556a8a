# CircuitPython's socketpool semantics, as firmware/cpsim/socketpool.py gives them on the
# unix port. usage: micropython upy_socketpool_semantics.py <port>; the test's server
# accepts, waits for b"go", sends b"hello" and then closes.
import errno
import sys

import socketpool

port = int(sys.argv[1])
pool = socketpool.SocketPool(None)
info = pool.getaddrinfo("localhost", port, 0, pool.SOCK_STREAM)[0]
assert info[0] == pool.AF_INET and info[-1] == ("127.0.0.1", port), info
s = pool.socket(info[0], info[1])
s.settimeout(0.2)
s.connect(info[-1])
buf = bytearray(8)
try:
    s.recv_into(buf)
    raise AssertionError("no timeout")
except OSError as e:
    assert e.errno == errno.ETIMEDOUT, e  # a timed-out read: ETIMEDOUT
s.settimeout(0)
try:
    s.recv_into(buf)
    raise AssertionError("no EAGAIN")
except OSError as e:
    assert e.errno == errno.EAGAIN, e  # non-blocking, nothing there: EAGAIN
s.settimeout(5)
assert s.send(b"go") == 2
got = s.recv_into(buf, 3)  # at most bufsize bytes
assert got == 3 and bytes(buf[:3]) == b"hel", (got, buf)
n = 0
while True:
    k = s.recv_into(buf)
    if k == 0:  # the peer closed
        break
    n += k
assert n == 2, n
s.close()
try:
    pool.getaddrinfo("no-such-host.invalid", 1)
    raise AssertionError("resolved")
except OSError:
    pass
print("OK")
