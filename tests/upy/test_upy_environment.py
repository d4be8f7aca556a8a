# The unix port provides what the firmware relies on (checked on the real interpreter).
import micropython

BROKER = True


def test_heap_lock_catches_allocation():
    buf = bytearray(16)
    micropython.heap_lock()
    try:
        buf[0] = 1  # writing into a preallocated buffer allocates nothing
        failed = False
        try:
            bytearray(8)
        except MemoryError:
            failed = True
    finally:
        micropython.heap_unlock()
    assert failed, "heap_lock() did not stop an allocation"


def test_umqtt_simple_talks_to_mosquitto():
    import os

    from umqtt.simple import MQTTClient

    host = os.getenv("EDGELINE_MQTT_HOST")
    port = int(os.getenv("EDGELINE_MQTT_PORT"))
    got = []
    c = MQTTClient("harness-check", host, port=port)
    c.set_callback(lambda topic, msg: got.append((topic, msg)))
    c.connect()
    c.subscribe(b"harness/echo", qos=1)
    c.publish(b"harness/echo", b"hello", qos=1)
    # The echo may already have arrived while publish() waited for its PUBACK.
    import time

    deadline = time.ticks_add(time.ticks_ms(), 5000)
    while not got and time.ticks_diff(deadline, time.ticks_ms()) > 0:
        c.check_msg()
        time.sleep_ms(10)
    c.disconnect()
    assert got == [(b"harness/echo", b"hello")], got
