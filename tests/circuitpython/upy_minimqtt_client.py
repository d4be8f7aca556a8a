# Runs on the MicroPython unix port with the CircuitPython simulation modules
# (firmware/cpsim) and the pinned CircuitPython libraries (.cache/cp-lib) on MICROPYPATH:
# the real adafruit_minimqtt, through CircuitPython's socketpool API, against Mosquitto.
#
# usage: micropython upy_minimqtt_client.py <port> <topic prefix>
# Connects with a last will on <prefix>/death, subscribes to <prefix>/cmd (QoS 1),
# publishes every byte value on <prefix>/birth (QoS 1), then echoes each command on
# <prefix>/ack until it is killed. Prints READY once subscribed.
import sys

import adafruit_minimqtt.adafruit_minimqtt as MQTT
import socketpool

port = int(sys.argv[1])
prefix = sys.argv[2]
pool = socketpool.SocketPool(None)  # on a board: socketpool.SocketPool(wifi.radio)
client = MQTT.MQTT(
    broker="127.0.0.1",
    port=port,
    client_id="cp-test",
    socket_pool=pool,
    keep_alive=10,
    socket_timeout=1,
    recv_timeout=5,
    connect_retries=1,
    use_binary_mode=True,
)
client.will_set(prefix + "/death", b"\x05gone", qos=1)


def on_message(_client, topic, message):
    client.publish(prefix + "/ack", bytes(message), qos=1)


client.on_message = on_message
client.connect()
client.subscribe(prefix + "/cmd", qos=1)
client.publish(prefix + "/birth", bytes(range(256)), qos=1)
print("READY")
while True:
    client.loop(timeout=1)
