# The CircuitPython transport (firmware/sensorfw/cpport/mqtt.py) over the pinned MiniMQTT
# on the unix port. usage: micropython upy_cp_transport.py <port> <prefix>
# Prints one line per check; the pytest side sends the commands and reads the lines.
import sys
import time

import socketpool
from sensorfw.cpport.mqtt import MQTTTransport

port = int(sys.argv[1])
prefix = sys.argv[2]
got = []
t = MQTTTransport(socketpool.SocketPool(None), "cp-tr", "127.0.0.1", port, None, None, 10, 2000)
t.on_message = lambda topic, msg: got.append((topic, bytes(msg)))
t.connect((prefix + "/death").encode(), b"\x05gone", ((prefix + "/cmd").encode(),))
t.publish((prefix + "/birth").encode(), memoryview(bytes(range(256))))  # a memoryview, as the queue hands out
print("READY")
# 1. nothing pending: poll() returns without waiting (socket timeout 1 s per read)
t0 = time.ticks_ms()
for _ in range(50):
    t.poll()
print("IDLE_POLLS_MS", time.ticks_diff(time.ticks_ms(), t0))
# 2. a command that arrives byte by byte (the relay dribbles it) is read whole
t0 = time.ticks_ms()
while not got and time.ticks_diff(time.ticks_ms(), t0) < 20000:
    t.poll()
    time.sleep_ms(5)
print("GOT", len(got), got[0][0] if got else "", got[0][1].hex() if got else "")
# 3. ping is answered and bounded; close frees the connection manager's socket
t.ping()
t.close()
t.connect((prefix + "/death").encode(), b"\x05gone", ())
t.publish((prefix + "/birth").encode(), b"again")
t.disconnect()
print("DONE")
