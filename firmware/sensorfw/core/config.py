# config.json: load, validate, fill defaults.
#
# Every problem raises ConfigError naming the key and what is expected, so the
# board can print it and stay on the REPL instead of crash-looping. Secrets
# (passwords) are never echoed in a message. With a board profile (boards/*.py) the
# pins are checked by role (core/pins.py) and the preallocated buffers against the
# board's HEAP_BUDGET; without one (simulation, unix port) only what holds everywhere.

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


TLS_KEYS = ("ca", "cert", "key", "server_name")


def _tls(b, host, base_dir):
    """broker.tls: the device's certificate, its key and the site CA (file paths on the
    board, relative to config.json), and the name the broker's certificate must carry
    (default: broker.host). None: plain TCP with broker.user / broker.password. The files
    are read at start-up (port/tls.py), not here: the flash tool validates a config
    before the files are on the board."""
    t = b.get("tls")
    if t is None:
        return None
    if not isinstance(t, dict):
        _fail("broker.tls", "an object with ca, cert and key (file paths on the board)", t)
    for k in t:
        if k not in TLS_KEYS:
            raise ConfigError(
                "config.json: 'broker.tls.%s' is not a known key: broker.tls takes %s" % (k, ", ".join(TLS_KEYS))
            )
    for k in ("user", "password", "password_file"):
        if k in b:
            raise ConfigError(
                "config.json: 'broker.%s' cannot be used with 'broker.tls': the broker takes the username from "
                "the device certificate (its CN is the device id) and needs no password: remove broker.%s" % (k, k)
            )
    out = {"server_name": _str(t, "broker.tls.server_name", host, maxlen=253)}
    for k in ("ca", "cert", "key"):
        v = _str(t, "broker.tls." + k, required=True, maxlen=64)
        if not v:
            _fail("broker.tls." + k, "a file path on the board", v)
        out[k] = v if v[0] == "/" or base_dir == "." else base_dir.rstrip("/") + "/" + v
    return out


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
        # absent or null: automatic, the driver picks the filter from the sample rate
        out["dlpf"] = None if s.get("dlpf") is None else _int(s, key + ".dlpf", 0, 0, 6)
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


def _out_pin(o, key, names):
    v = o.get("pin")
    if isinstance(v, str) and v in names:
        return v  # a named pin of the board, e.g. "LED" on the Pico W
    if isinstance(v, str):
        _fail(key, "an integer 0..64" + "".join([" or %r" % n for n in names]), v)
    return _int(o, key, None, 0, 64, required=True)


def validate(raw, base_dir=".", needs_wifi=False, profile=None):
    """Return a complete configuration dict from the parsed JSON object `raw`.
    profile: the board profile module (boards/esp32_devkit.py, boards/pico_w.py), or
    None for the simulation / unix port (no pin roles, no heap budget)."""
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
        # a board whose join blocks the loop (CircuitPython) has a shorter default: see _check_watchdog
        "connect_timeout_ms": _int(
            wifi, "wifi.connect_timeout_ms", getattr(profile, "WIFI_CONNECT_TIMEOUT_MS", 15000), 1000, 120000
        ),
    }
    b = _obj(raw, "broker", required=True)
    host = _str(b, "broker.host", required=True, maxlen=253)
    tls = _tls(b, host, base_dir)
    c["broker"] = {
        "host": host,
        "port": _int(b, "broker.port", 1883 if tls is None else 8883, 1, 65535),
        "user": _str(b, "broker.user", None, maxlen=64),
        "password": _secret(b, "broker", base_dir),
        "keepalive_s": _int(b, "broker.keepalive_s", 30, 5, 3600),
        "timeout_ms": _int(b, "broker.timeout_ms", 2000, 100, 30000),
        "tls": tls,
    }
    s = _obj(raw, "sample")
    # sample.rate_hz, sample.batch and health_s: the ranges of shared_protocol/config_change.py
    # SETTINGS, which remote changes are checked with (tests/firmware/test_fw_config_change.py)
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
    named = profile.NAMED_PINS if profile is not None else ()
    for i in range(len(outputs)):
        o = outputs[i]
        k = "outputs[%d]" % i
        if not isinstance(o, dict):
            _fail(k, "an object with a 'pin'", o)
        c["outputs"].append(
            {
                "name": _ident(o, k + ".name", "out%d" % i),
                "pin": _out_pin(o, k + ".pin", named),
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
    # a firmware on trial after an update that is not confirmed within this restarts (the
    # A/B loader rolls it back at its third start): one that runs but cannot reach its
    # gateway does not stay
    c["ota_trial_s"] = _int(raw, "ota_trial_s", 900, 1, 86400)
    if 0 < c["watchdog_ms"] < 1000:
        _fail("watchdog_ms", "0 (off) or 1000..600000", c["watchdog_ms"])
    sl = _obj(raw, "sleep")
    c["sleep"] = {
        "enabled": _bool(sl, "sleep.enabled", False),
        "awake_samples": _int(sl, "sleep.awake_samples", batch, 1, 1000000),
        "sleep_ms": _int(sl, "sleep.sleep_ms", 60000, 10, 86400000),
        "ack_wait_ms": _int(sl, "sleep.ack_wait_ms", 3000, 0, 600000),
    }
    _check_pins(c, profile)
    _check_mpu_rates(c)
    _check_watchdog(c, profile, needs_wifi)
    _check_buffers(c, profile)
    return c


def _check_pins(c, profile):
    from sensorfw import unload
    from sensorfw.core import pins  # rules by role: loaded for this check only

    e = pins.error(c, profile)
    unload("sensorfw.core.pins")
    if e:
        raise ConfigError("config.json: " + e)


def _check_mpu_rates(c):
    # The MPU-6050 paces sampling: only 1000 Hz / (1 + SMPLRT_DIV) exist (8000 Hz base
    # with dlpf 0); the driver's rate_error() is the one rule (imported under CPython too).
    for i in range(len(c["sensors"])):
        s = c["sensors"][i]
        if s["type"] == "mpu6050":
            from sensorfw.drivers.mpu6050_rates import rate_error

            for k in ("rate_hz", "burst_rate_hz"):
                e = rate_error(c["sample"][k], s["dlpf"])
                if e:
                    raise ConfigError("config.json: 'sample.%s' (for 'sensors[%d]'): %s" % (k, i, e))


# Watchdog budget. The firmware feeds the watchdog before every blocking socket call,
# but one call into the MQTT client can wait on the socket twice before it returns
# (connect: TCP connect then CONNACK; a QoS 1 publish: send then PUBACK), each wait
# bounded by broker.timeout_ms. On top comes the loop's own work up to the next feed:
# draining the rings and encoding frames, an offline-queue block written to flash, a
# gc.collect(); WDT_LOOP_MARGIN_MS bounds that with room to spare.
WDT_LOOP_MARGIN_MS = 1000
# With broker.tls, the TLS handshake runs inside one call between two feeds: its two waits
# for the broker (each bounded by broker.timeout_ms) plus the ECDHE-ECDSA P-256 arithmetic,
# which no callback interrupts. The profile's TLS_HANDSHAKE_MS bounds that arithmetic
# (docs/firmware.md "TLS"); without a profile (simulation) this default applies.
TLS_HANDSHAKE_MS = 1000


def _check_watchdog(c, profile, needs_wifi):
    w = c["watchdog_ms"]
    if not w:
        return
    top = getattr(profile, "WDT_MAX_MS", 0)
    if top and w > top:
        raise ConfigError(
            "config.json: 'watchdog_ms' = %d is above the %s watchdog's maximum of %d ms: "
            "set watchdog_ms to at most %d (0 = off)" % (w, profile.NAME, top, top)
        )
    t = c["broker"]["timeout_ms"]
    margin = WDT_LOOP_MARGIN_MS
    why = "a call into the MQTT client may wait twice on the socket between two feeds"
    if c["broker"]["tls"] is not None:
        margin += getattr(profile, "TLS_HANDSHAKE_MS", TLS_HANDSHAKE_MS)
        why += ", and a TLS handshake adds its arithmetic"
    need = 2 * t + margin
    if w < need:
        fix = []
        if not top or need <= top:
            fix.append("watchdog_ms to at least %d" % need)
        if (w - margin) // 2 >= 100:
            fix.append("broker.timeout_ms to at most %d" % ((w - margin) // 2))
        if not fix:
            fix.append("watchdog_ms to %d and broker.timeout_ms to at most %d" % (top, (top - margin) // 2))
        raise ConfigError(
            "config.json: 'watchdog_ms' = %d is too short for 'broker.timeout_ms' = %d: it must be at least "
            "2 x broker.timeout_ms + %d = %d (%s): set %s" % (w, t, margin, need, why, " or ".join(fix))
        )
    ct = c["wifi"]["connect_timeout_ms"]
    if getattr(profile, "WIFI_JOIN_BLOCKS", False) and ct + WDT_LOOP_MARGIN_MS > w:
        # CircuitPython's wifi.radio.connect() returns only when joined or timed out, and
        # the loop cannot feed the watchdog meanwhile: every outage would reset the board
        fix = []
        if w - WDT_LOOP_MARGIN_MS >= 1000:
            fix.append("wifi.connect_timeout_ms to at most %d" % (w - WDT_LOOP_MARGIN_MS))
        if not top or ct + WDT_LOOP_MARGIN_MS <= top:
            fix.append("watchdog_ms to at least %d" % (ct + WDT_LOOP_MARGIN_MS))
        raise ConfigError(
            "config.json: 'wifi.connect_timeout_ms' = %d is too long for 'watchdog_ms' = %d on %s: a Wi-Fi "
            "join blocks the loop that long, so it must be at most watchdog_ms - %d: set %s"
            % (ct, w, profile.NAME, WDT_LOOP_MARGIN_MS, " or ".join(fix))
        )
    if needs_wifi and c["sleep"]["enabled"] and ct >= w:
        fix = []
        if w - 1 >= 1000:
            fix.append("wifi.connect_timeout_ms to at most %d" % (w - 1))
        if not top or ct < top:
            fix.append("watchdog_ms to at least %d" % (ct + 1))
        raise ConfigError(
            "config.json: 'wifi.connect_timeout_ms' = %d must be below 'watchdog_ms' = %d in sleep mode "
            "(each wake-up joins Wi-Fi before the watchdog is fed again): set %s" % (ct, w, " or ".join(fix))
        )


# Channels per sensor type (the drivers' `width`) and the EVENT frame buffer
# (core/batcher.py EVENT_BUF_SIZE); tests/upy/test_fw_config.py checks both.
_WIDTH = {"mpu6050": 6, "analog": 1, "pulse": 1}
_EVENT_BUF = 306


def _frame(cfg):
    """(channels, bytes of the largest frame the offline queue holds: DATA, EVENT or BIRTH)"""
    w = 0
    for s in cfg["sensors"]:
        w += _WIDTH[s["type"]]
    return w, max(27 + 2 * w * cfg["sample"]["max_batch"], _EVENT_BUF, 64 + 76 * w)


def buffer_bytes(cfg):
    """(total, [(config key, bytes), ...] largest first): the large buffers the firmware
    preallocates for the validated cfg on a 32-bit board (4-byte pointers). Object
    headers and the memoryviews made on first use are left to the headroom."""
    w, frame = _frame(cfg)
    sc = cfg["sample"]
    q = cfg["queue"]
    mb = sc["max_batch"]
    parts = [
        # ring.py SampleRing: ticks i32, width int16 values, gap byte; + batcher.py's view slot
        ("sample.ring_rows", sc["ring_rows"] * (4 + 2 * w + 1 + 4)),
        ("sample.event_ring", sc["event_ring"] * 9),  # channel byte, ticks i32, value i32
        # data_encoder.py + shared_protocol DataEncoder: the frame, 7 lists of max_batch + 1
        ("sample.max_batch", 27 + 2 * w * mb + 28 * (mb + 1)),
        ("queue.ram_frames", q["ram_frames"] * (frame + 9)),  # slot + len, boot, seq, state
        ("queue.flash_frames", q["flash_frames"] * 17),  # index: boot, seq, seg, off, len, state
        ("queue.block_bytes", q["block_bytes"]),
        # queue read buffer and record header, app.py BIRTH/HEALTH buffer, batcher.py EVENT
        # staging (32 x 9 B) and frame
        ("fixed frame buffers", frame + 14 + 64 + 76 * w + 288 + _EVENT_BUF),
    ]
    parts.sort(key=lambda p: p[1], reverse=True)
    total = 0
    for p in parts:
        total += p[1]
    return total, parts


def _check_buffers(c, profile):
    frame = _frame(c)[1]
    if c["queue"]["block_bytes"] < frame + 7:  # offline_queue.py: a block holds a whole frame
        _fail(
            "queue.block_bytes",
            "at least %d (a frame of up to %d B + 7)" % (frame + 7, frame),
            c["queue"]["block_bytes"],
        )
    budget = getattr(profile, "HEAP_BUDGET", 0)
    total, parts = buffer_bytes(c)
    tls = getattr(profile, "TLS_HEAP_RESERVE", 0) if c["broker"]["tls"] is not None else 0
    if tls:  # mbedTLS's record buffers, on this board's heap (port/mqtt.py keeps a run for them)
        total += tls
        parts = sorted(parts + [("broker.tls", tls)], key=lambda p: p[1], reverse=True)
    if budget and total > budget:
        raise ConfigError(
            "config.json: the buffers this configuration preallocates take %d B, more than the %d B budget of %s "
            "(HEAP_BUDGET); largest: %s: lower those"
            % (total, budget, profile.NAME, ", ".join(["%s %d B" % p for p in parts[:3]]))
        )


def load(path, needs_wifi=False, profile=None):
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
    return validate(raw, base, needs_wifi, profile)
