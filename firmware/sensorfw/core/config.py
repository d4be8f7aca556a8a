# config.json: load, validate, fill defaults.
#
# Every problem raises ConfigError naming the key and what is expected, so the
# board can print it and stay on the REPL instead of crash-looping. Secrets
# (passwords) are never echoed in a message.

import json


class ConfigError(ValueError):
    pass


_SECRET = ("password",)


def _fail(key, expected, value=None, show=True):
    if show and key.split(".")[-1] not in _SECRET:
        raise ConfigError("config.json: '%s' must be %s, got %r" % (key, expected, value))
    raise ConfigError("config.json: '%s' must be %s" % (key, expected))


def _obj(d, key, required=False):
    v = d.get(key.split(".")[-1]) if d is not None else None
    if v is None:
        if required:
            _fail(key, "an object", None)
        return {}
    if not isinstance(v, dict):
        _fail(key, "an object", v)
    return v


def _int(d, key, default, lo, hi, required=False):  # noqa: PLR0917
    name = key.split(".")[-1]
    v = d.get(name)
    if v is None:
        if required or default is None:
            _fail(key, "an integer %d..%d (missing)" % (lo, hi), None)
        return default
    if isinstance(v, bool) or not isinstance(v, int) or not (lo <= v <= hi):
        _fail(key, "an integer %d..%d" % (lo, hi), v)
    return v


def _num(d, key, default, lo, hi):
    v = d.get(key.split(".")[-1])
    if v is None:
        if default is None:
            _fail(key, "a number %s..%s (missing)" % (lo, hi), None)
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (lo <= v <= hi):
        _fail(key, "a number %s..%s" % (lo, hi), v)
    return v


def _bool(d, key, default):
    v = d.get(key.split(".")[-1])
    if v is None:
        return default
    if not isinstance(v, bool):
        _fail(key, "true or false", v)
    return v


def _str(d, key, default=None, required=False, choices=None, maxlen=128):  # noqa: PLR0917
    name = key.split(".")[-1]
    v = d.get(name)
    if v is None:
        if required:
            _fail(key, "a string" + (" (one of %s)" % ", ".join(choices) if choices else "") + " (missing)", None)
        return default
    if not isinstance(v, str) or len(v) > maxlen:
        _fail(key, "a string of at most %d characters" % maxlen, v, show=name not in _SECRET)
    if choices and v not in choices:
        _fail(key, "one of %s" % ", ".join(choices), v)
    return v


def _ident(d, key, default=None):
    v = _str(d, key, default, required=default is None, maxlen=32)
    if not v:
        _fail(key, "1..32 characters of A-Z a-z 0-9 _ -", v)
    for ch in v:
        if not (ch.isalpha() or ch.isdigit() or ch in "_-") or ord(ch) > 127:
            _fail(key, "1..32 characters of A-Z a-z 0-9 _ -", v)
    return v


def _secret(d, key, base_dir):
    # password as a value, or password_file: a file on the board holding it
    val = d.get("password")
    path = d.get("password_file")
    if val is not None and path is not None:
        raise ConfigError("config.json: give '%s.password' or '%s.password_file', not both" % (key, key))
    if path is not None:
        if not isinstance(path, str) or not path:
            _fail(key + ".password_file", "a file path", path)
        full = path if path[0] == "/" else base_dir + "/" + path
        try:
            with open(full) as f:
                val = f.read().strip()
        except OSError:
            raise ConfigError("config.json: '%s.password_file' names %r, which cannot be read" % (key, path))
        return val
    if val is not None and not isinstance(val, str):
        raise ConfigError("config.json: '%s.password' must be a string" % key)
    return val


SENSOR_TYPES = ("mpu6050", "analog", "pulse")


def _sensor(s, key, index):
    if not isinstance(s, dict):
        _fail(key, "an object with a 'type'", s)
    t = _str(s, key + ".type", required=True, choices=SENSOR_TYPES)
    out = {"type": t}
    if t == "mpu6050":
        out["name"] = _ident(s, key + ".name", "imu")
        i2c = _obj(s, key + ".i2c")
        out["i2c"] = {
            "id": _int(i2c, key + ".i2c.id", 0, 0, 8),
            "scl": _int(i2c, key + ".i2c.scl", -1, -1, 64),
            "sda": _int(i2c, key + ".i2c.sda", -1, -1, 64),
            "freq": _int(i2c, key + ".i2c.freq", 400000, 10000, 1000000),
        }
        out["addr"] = _int(s, key + ".addr", 0x68, 0x68, 0x69)
        out["accel_range_g"] = _int(s, key + ".accel_range_g", 2, 2, 16)
        if out["accel_range_g"] not in (2, 4, 8, 16):
            _fail(key + ".accel_range_g", "one of 2, 4, 8, 16", out["accel_range_g"])
        out["gyro_range_dps"] = _int(s, key + ".gyro_range_dps", 250, 250, 2000)
        if out["gyro_range_dps"] not in (250, 500, 1000, 2000):
            _fail(key + ".gyro_range_dps", "one of 250, 500, 1000, 2000", out["gyro_range_dps"])
        out["dlpf"] = _int(s, key + ".dlpf", 3, 0, 6)
    elif t == "analog":
        out["name"] = _ident(s, key + ".name", "a%d" % index)
        out["pin"] = _int(s, key + ".pin", None, 0, 64, required=True)
        out["unit"] = _str(s, key + ".unit", "V", maxlen=16)
        out["scale"] = _num(s, key + ".scale", 3.3 / 65535, -1e9, 1e9)
        out["offset"] = _num(s, key + ".offset", 0.0, -1e9, 1e9)
    else:
        out["name"] = _ident(s, key + ".name", "p%d" % index)
        out["pin"] = _int(s, key + ".pin", None, 0, 64, required=True)
        out["mode"] = _str(s, key + ".mode", "count", choices=("count", "event"))
        out["edge"] = _str(
            s, key + ".edge", "rising" if out["mode"] == "count" else "both", choices=("rising", "falling", "both")
        )
        out["pull"] = _str(s, key + ".pull", None, choices=("up", "down"))
        out["debounce_ms"] = _int(s, key + ".debounce_ms", 0, 0, 10000)
        out["unit"] = _str(s, key + ".unit", None, maxlen=16)
        out["sim_hz"] = _num(s, key + ".sim_hz", 5.0, 0.001, 1000)
    return out


def validate(raw, base_dir=".", needs_wifi=False):
    """Return a complete configuration dict from the parsed JSON object `raw`."""
    if not isinstance(raw, dict):
        raise ConfigError("config.json: the top level must be a JSON object")
    c = {}
    c["device_id"] = _ident(raw, "device_id")
    c["site"] = _ident(raw, "site")
    c["topic_prefix"] = _ident(raw, "topic_prefix", "el")
    wifi = _obj(raw, "wifi", required=needs_wifi)
    c["wifi"] = {
        "ssid": _str(wifi, "wifi.ssid", required=needs_wifi, maxlen=32),
        "password": _secret(wifi, "wifi", base_dir),
        "connect_timeout_ms": _int(wifi, "wifi.connect_timeout_ms", 15000, 1000, 120000),
    }
    b = _obj(raw, "broker", required=True)
    c["broker"] = {
        "host": _str(b, "broker.host", required=True, maxlen=253),
        "port": _int(b, "broker.port", 1883, 1, 65535),
        "user": _str(b, "broker.user", None, maxlen=64),
        "password": _secret(b, "broker", base_dir),
        "keepalive_s": _int(b, "broker.keepalive_s", 30, 5, 3600),
        "timeout_ms": _int(b, "broker.timeout_ms", 2000, 100, 30000),
    }
    s = _obj(raw, "sample")
    batch = _int(s, "sample.batch", 32, 1, 1024)
    max_batch = _int(s, "sample.max_batch", batch, 1, 1024)
    if max_batch < batch:
        _fail("sample.max_batch", "an integer >= sample.batch (%d)" % batch, max_batch)
    rows = _int(s, "sample.ring_rows", 4 * max_batch, 2, 16384)
    if rows <= max_batch:
        _fail("sample.ring_rows", "an integer > sample.max_batch (%d)" % max_batch, rows)
    rate = _num(s, "sample.rate_hz", 50, 0.01, 2000)
    c["sample"] = {
        "rate_hz": rate,
        "batch": batch,
        "max_batch": max_batch,
        "ring_rows": rows,
        "delta": _bool(s, "sample.delta", False),
        "burst_rate_hz": _num(s, "sample.burst_rate_hz", rate, 0.01, 2000),
        "event_ring": _int(s, "sample.event_ring", 64, 2, 4096),
    }
    sensors = raw.get("sensors")
    if not isinstance(sensors, list) or not sensors:
        _fail("sensors", "a non-empty list of sensor objects (type: mpu6050, analog or pulse)", sensors)
    c["sensors"] = [_sensor(sensors[i], "sensors[%d]" % i, i) for i in range(len(sensors))]
    names = [x["name"] for x in c["sensors"]]
    for n in names:
        if names.count(n) > 1:
            _fail("sensors", "sensors with distinct names", n)
    outputs = raw.get("outputs", [])
    if not isinstance(outputs, list):
        _fail("outputs", "a list of output objects", outputs)
    c["outputs"] = []
    for i in range(len(outputs)):
        o = outputs[i]
        k = "outputs[%d]" % i
        if not isinstance(o, dict):
            _fail(k, "an object with a 'pin'", o)
        c["outputs"].append(
            {
                "name": _ident(o, k + ".name", "out%d" % i),
                "pin": _int(o, k + ".pin", None, 0, 64, required=True),
                "active_high": _bool(o, k + ".active_high", True),
            }
        )
    q = _obj(raw, "queue")
    c["queue"] = {
        "dir": _str(q, "queue.dir", "queue", maxlen=64),
        "ram_frames": _int(q, "queue.ram_frames", 8, 1, 1024),
        "flash_frames": _int(q, "queue.flash_frames", 256, 1, 65535),
        "block_bytes": _int(q, "queue.block_bytes", 4096, 256, 65536),
        "segment_blocks": _int(q, "queue.segment_blocks", 4, 1, 64),
        "ack_timeout_s": _int(q, "queue.ack_timeout_s", 30, 1, 86400),
        "publish_per_loop": _int(q, "queue.publish_per_loop", 4, 1, 256),
        "seq_lease": _int(q, "queue.seq_lease", 16, 1, 65535),
    }
    c["health_s"] = _int(raw, "health_s", 30, 1, 86400)
    bo = _obj(raw, "backoff")
    c["backoff"] = {
        "min_ms": _int(bo, "backoff.min_ms", 1000, 10, 3600000),
        "max_ms": _int(bo, "backoff.max_ms", 60000, 10, 3600000),
    }
    if c["backoff"]["max_ms"] < c["backoff"]["min_ms"]:
        _fail("backoff.max_ms", "an integer >= backoff.min_ms", c["backoff"]["max_ms"])
    c["watchdog_ms"] = _int(raw, "watchdog_ms", 8000, 0, 600000)
    if 0 < c["watchdog_ms"] < 1000:
        _fail("watchdog_ms", "0 (off) or 1000..600000", c["watchdog_ms"])
    sl = _obj(raw, "sleep")
    c["sleep"] = {
        "enabled": _bool(sl, "sleep.enabled", False),
        "awake_samples": _int(sl, "sleep.awake_samples", batch, 1, 1000000),
        "sleep_ms": _int(sl, "sleep.sleep_ms", 60000, 10, 86400000),
        "ack_wait_ms": _int(sl, "sleep.ack_wait_ms", 3000, 0, 600000),
    }
    return c


def load(path, needs_wifi=False):
    """Read and validate the file at path. Raises ConfigError."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise ConfigError("config.json: cannot read %r: write it with the flash tool (tools/flash)" % path)
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise ConfigError("config.json: %r is not valid JSON (%s)" % (path, e))
    base = path.rsplit("/", 1)[0] if "/" in path else "."
    return validate(raw, base, needs_wifi)
