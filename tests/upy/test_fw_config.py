# config.json validation: every bad or missing value names its key and what is expected.
from sensorfw.core.config import ConfigError, validate

RUNTIMES = ("micropython", "cpython")


def _good():
    return {
        "device_id": "dev-1",
        "site": "plant_a",
        "broker": {"host": "10.0.0.2", "port": 1883, "user": "dev-1", "password": "hunter2-secret"},
        "sensors": [{"type": "mpu6050"}, {"type": "analog", "pin": 34}],
    }


def _error(cfg, needs_wifi=False):
    try:
        validate(cfg, ".", needs_wifi)
    except ConfigError as e:
        return str(e)
    raise AssertionError("config accepted: %r" % (cfg,))


def test_defaults_filled():
    c = validate(_good())
    assert c["topic_prefix"] == "el"
    assert c["sample"]["rate_hz"] == 50 and c["sample"]["batch"] == 32
    assert c["queue"]["ram_frames"] == 8 and c["queue"]["flash_frames"] == 256
    assert c["queue"]["block_bytes"] == 4096
    assert c["sensors"][0]["addr"] == 0x68 and c["sensors"][1]["name"] == "a1"
    assert c["broker"]["password"] == "hunter2-secret"
    assert c["sleep"]["enabled"] is False


def test_errors_name_the_key():
    cases = [
        ("device_id", lambda c: c.pop("device_id")),
        ("device_id", lambda c: c.update(device_id="bad/id")),
        ("broker.port", lambda c: c["broker"].update(port="abc")),
        ("broker.port", lambda c: c["broker"].update(port=70000)),
        ("broker.host", lambda c: c["broker"].pop("host")),
        ("broker", lambda c: c.pop("broker")),
        ("sensors", lambda c: c.update(sensors=[])),
        ("sensors[0].type", lambda c: c["sensors"][0].update(type="bme280")),
        ("sensors[1].pin", lambda c: c["sensors"][1].pop("pin")),
        ("sensors[0].accel_range_g", lambda c: c["sensors"][0].update(accel_range_g=3)),
        ("sample.rate_hz", lambda c: c.update(sample={"rate_hz": 0})),
        ("sample.ring_rows", lambda c: c.update(sample={"batch": 64, "ring_rows": 32})),
        ("queue.ram_frames", lambda c: c.update(queue={"ram_frames": 0})),
        ("watchdog_ms", lambda c: c.update(watchdog_ms=10)),
        ("sleep.enabled", lambda c: c.update(sleep={"enabled": "yes"})),
        ("wifi", lambda c: None),  # needs_wifi below
    ]
    for key, mutate in cases:
        c = _good()
        mutate(c)
        msg = _error(c, needs_wifi=key == "wifi")
        assert ("'%s'" % key) in msg, (key, msg)
        assert "must be" in msg or "give" in msg, msg


def test_password_never_in_messages():
    c = _good()
    c["broker"]["password"] = 12345678
    msg = _error(c)
    assert "broker.password" in msg and "12345678" not in msg
    c = _good()
    c["broker"]["password_file"] = "missing-secret.txt"
    msg = _error(c)
    assert "password" in msg and "hunter2-secret" not in msg
    c = _good()
    c["wifi"] = {"ssid": "x" * 40, "password": "wifi-secret"}
    msg = _error(c)
    assert "wifi.ssid" in msg and "wifi-secret" not in msg


def test_top_level_must_be_object():
    assert "top level" in _error([1, 2])
