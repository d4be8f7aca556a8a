# config.json validation: every bad or missing value names its key and what is expected;
# with a board profile, pins by role, the watchdog budget and the heap budget.
from array import array

from sensorfw.boards import cp_esp32s3, cp_pico_w, esp32_devkit, pico_w
from sensorfw.core.config import WDT_LOOP_MARGIN_MS, ConfigError, buffer_bytes, validate

RUNTIMES = ("micropython", "cpython")


def _good():
    return {
        "device_id": "dev-1",
        "site": "plant_a",
        "broker": {"host": "10.0.0.2", "port": 1883, "user": "dev-1", "password": "hunter2-secret"},
        "sensors": [{"type": "mpu6050"}, {"type": "analog", "pin": 34}],
    }


def _error(cfg, needs_wifi=False, profile=None):
    try:
        validate(cfg, ".", needs_wifi, profile)
    except ConfigError as e:
        return str(e)
    raise AssertionError("config accepted: %r" % (cfg,))


# one valid configuration per board: an MPU-6050 on the board's default I2C pins and an
# analog input on an ADC pin that works with Wi-Fi on
ADC = {esp32_devkit: 34, pico_w: 26, cp_pico_w: 26, cp_esp32s3: 4}
BOARDS = (esp32_devkit, pico_w)


def _board_good(profile):
    c = _good()
    c["wifi"] = {"ssid": "plant", "password": "wifi-secret"}
    c["sensors"][1]["pin"] = ADC[profile]
    return c


def _ok(cfg, profile, needs_wifi=True):
    return validate(cfg, ".", needs_wifi, profile)


def _refused(cfg, profile, *parts, needs_wifi=True):
    msg = _error(cfg, needs_wifi, profile)
    for p in parts:
        assert p in msg, (p, msg)
    return msg


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


def test_board_configs_pass():
    for b in BOARDS:
        c = _ok(_board_good(b), b)
        assert c["sensors"][0]["dlpf"] is None  # absent: automatic, the driver picks it
        _ok(_board_good(b), None)


def test_dlpf_optional():
    c = _good()
    c["sensors"][0]["dlpf"] = 3
    assert validate(c)["sensors"][0]["dlpf"] == 3
    c["sensors"][0]["dlpf"] = None
    assert validate(c)["sensors"][0]["dlpf"] is None
    c["sensors"][0]["dlpf"] = 7
    assert "'sensors[0].dlpf'" in _error(c)


def _set(path, value):
    def mutate(c):
        d = c
        keys = path.split(".")
        for k in keys[:-1]:
            d = d[int(k)] if isinstance(d, list) else d.setdefault(k, {})
        last = keys[-1]
        d[int(last) if isinstance(d, list) else last] = value

    return mutate


def test_esp32_pins_by_role():
    b = esp32_devkit
    refused = [
        (
            _set("sensors.1.pin", 14),
            "'sensors[1].pin' = 14 is an ADC2 pin on esp32_devkit, unusable while Wi-Fi is on: use one of 32, 33, 34, 35, 36, 39",
        ),
        (_set("sensors.1.pin", 21), "'sensors[1].pin' = 21 is not an ADC input on esp32_devkit"),
        (
            _set("sensors.1.pin", 7),
            "'sensors[1].pin' = 7 is wired to the module's SPI flash on esp32_devkit (never usable)",
        ),
        (_set("sensors.1.pin", 37), "'sensors[1].pin' = 37 is not a usable GPIO on esp32_devkit"),
        (_set("sensors.1", {"type": "pulse", "pin": 9}), "'sensors[1].pin' = 9 is wired to the module's SPI flash"),
        (
            _set("sensors.1", {"type": "pulse", "pin": 35, "pull": "up"}),
            "'sensors[1].pin' = 35 is input-only without internal pull-up/down on esp32_devkit: leave 'sensors[1].pull' out",
        ),
        (
            _set("outputs", [{"pin": 36}]),
            "'outputs[0].pin' = 36 is input-only (no output driver) on esp32_devkit: use one of 0, 1, 2",
        ),
        (_set("outputs", [{"pin": 11}]), "'outputs[0].pin' = 11 is wired to the module's SPI flash"),
        (_set("outputs", [{"pin": "LED"}]), "'outputs[0].pin' must be an integer 0..64, got 'LED'"),
        (
            _set("sensors.0.i2c", {"scl": 39, "sda": 21}),
            "'sensors[0].i2c.scl' = 39 is input-only (no output driver) on esp32_devkit",
        ),
        (
            _set("sensors.0.i2c", {"id": 2}),
            "'sensors[0].i2c.id' = 2 is not an I2C bus of esp32_devkit: use one of 0, 1",
        ),
    ]
    for mutate, expected in refused:
        c = _board_good(b)
        mutate(c)
        _refused(c, b, "config.json: " + expected)
        if "LED" not in expected:
            _ok(c, None)  # the simulation takes any pin
    passing = [
        _set("sensors.1.pin", 39),
        _set("sensors.1", {"type": "pulse", "pin": 35}),  # input-only pin, no pull: fine
        _set("sensors.1", {"type": "pulse", "pin": 4, "pull": "down"}),
        _set("outputs", [{"pin": 2}, {"pin": 33}]),
        _set("sensors.0.i2c", {"id": 1, "scl": 18, "sda": 19}),  # any output GPIO, any bus
    ]
    for mutate in passing:
        c = _board_good(b)
        mutate(c)
        _ok(c, b)


def test_pico_w_pins_by_role():
    b = pico_w
    refused = [
        (
            _set("sensors.1.pin", 29),
            "'sensors[1].pin' = 29 is used by the CYW43439 Wi-Fi chip on pico_w (never usable)",
        ),
        (_set("sensors.1.pin", 22), "'sensors[1].pin' = 22 is not an ADC input on pico_w: use one of 26, 27, 28"),
        (_set("sensors.1", {"type": "pulse", "pin": 25}), "'sensors[1].pin' = 25 is used by the CYW43439 Wi-Fi chip"),
        (_set("outputs", [{"pin": 23}]), "'outputs[0].pin' = 23 is used by the CYW43439 Wi-Fi chip"),
        (_set("outputs", [{"pin": "led"}]), "'outputs[0].pin' must be an integer 0..64 or 'LED', got 'led'"),
        (
            _set("sensors.0.i2c", {"id": 1}),
            "'sensors[0].i2c.scl' = 5 (the board default) is an I2C0 SCL pin on pico_w, but 'sensors[0].i2c.id' is 1: set i2c.id to 0 or use one of 3, 7, 11, 15, 19, 27",
        ),
        (
            _set("sensors.0.i2c", {"id": 0, "scl": 9, "sda": 6}),
            "'sensors[0].i2c.sda' = 6 is an I2C1 SDA pin on pico_w, but 'sensors[0].i2c.id' is 0: set i2c.id to 1 or use one of 0, 4, 8, 12, 16, 20, 28",
        ),
        (
            _set("sensors.0.i2c", {"id": 0, "scl": 4, "sda": 5}),
            "'sensors[0].i2c.scl' = 4 is not usable for I2C SCL on pico_w",
        ),
        (
            _set("sensors.0.i2c", {"id": 1, "scl": 23, "sda": 22}),
            "'sensors[0].i2c.scl' = 23 is used by the CYW43439 Wi-Fi chip",
        ),
    ]
    for mutate, expected in refused:
        c = _board_good(b)
        mutate(c)
        _refused(c, b, "config.json: " + expected)
    passing = [
        _set("sensors.1.pin", 28),
        _set("sensors.1", {"type": "pulse", "pin": 15, "pull": "up"}),
        _set("outputs", [{"pin": "LED"}, {"pin": 16}]),
        _set("sensors.0.i2c", {"id": 1, "scl": 7, "sda": 6}),
        _set("sensors.0.i2c", {"id": 0, "scl": 21, "sda": 20}),
    ]
    for mutate in passing:
        c = _board_good(b)
        mutate(c)
        _ok(c, b)


def test_no_pin_serves_two_purposes():
    for b in (esp32_devkit, pico_w, None):
        adc = ADC[b] if b is not None else 34
        c = _board_good(b or esp32_devkit)
        c["outputs"] = [{"pin": adc}]
        if b is None:
            _refused(c, None, "'outputs[0].pin' = %d is already used by 'sensors[1].pin'" % adc)
            continue
        _refused(c, b, "'outputs[0].pin' = %d" % adc)  # an ADC pin cannot drive (esp32) or is taken
        c = _board_good(b)
        c["outputs"] = [{"pin": b.I2C_DEFAULT["sda"]}]  # the MPU-6050's default SDA
        _refused(c, b, "'outputs[0].pin' = %d is already used by 'sensors[0].i2c.sda'" % b.I2C_DEFAULT["sda"])
        c = _board_good(b)
        c["outputs"] = [{"pin": 16}, {"name": "o2", "pin": 16}]
        _refused(c, b, "'outputs[1].pin' = 16 is already used by 'outputs[0].pin'")
        # two IMUs on one bus: same pins, other address: fine; same address or other pins: not
        c = _board_good(b)
        c["sensors"].append({"type": "mpu6050", "name": "imu2", "addr": 0x69})
        c["sample"] = {"ring_rows": 64}
        _ok(c, b)
        c["sensors"][2]["addr"] = 0x68
        _refused(c, b, "'sensors[2].addr' = 0x68 is taken on I2C bus 0")
        c["sensors"][2]["addr"] = 0x69
        c["sensors"][2]["i2c"] = {"scl": 17, "sda": 16}
        _refused(c, b, "'sensors[2].i2c' puts I2C bus 0 on scl 17 / sda 16, but 'sensors[0].i2c' put it on")
        c["sensors"][2]["i2c"] = {"id": 1, "scl": 19 if b is pico_w else 17, "sda": 18 if b is pico_w else 16}
        _ok(c, b)


def test_mpu6050_rates_are_the_chips():
    # the sensor paces sampling: 1000 Hz / (1 + n), n = 0..255 (drivers/mpu6050.py rate_error)
    refused = (
        (400, "the nearest are 333.333 Hz and 500 Hz"),
        (2000, "the nearest is 1000 Hz"),
        (3, "the nearest is 3.90625 Hz"),
        (45, "the nearest are 43.4783 Hz and 45.4545 Hz"),
    )
    for b in (esp32_devkit, pico_w, None):
        for key in ("rate_hz", "burst_rate_hz"):
            for rate, near in refused:
                c = _board_good(b or esp32_devkit)
                c["sample"] = {key: rate}
                _refused(
                    c, b, "config.json: 'sample.%s' (for 'sensors[0]'): MPU-6050 sample rate %d Hz" % (key, rate), near
                )
            for rate in (1000, 500, 333.33, 200, 142.86, 100, 50, 10, 3.90625):
                c = _board_good(b or esp32_devkit)
                c["sample"] = {key: rate}
                _ok(c, b)
    c = _board_good(esp32_devkit)
    c["sensors"][0]["dlpf"] = 0  # filter off: the gyro runs at 8 kHz, other rates
    c["sample"] = {"rate_hz": 2000}
    _ok(c, esp32_devkit)
    c["sample"] = {"rate_hz": 10}
    _refused(c, esp32_devkit, "'sample.rate_hz' (for 'sensors[0]')", "8000 Hz")
    c = _board_good(esp32_devkit)
    del c["sensors"][0]  # no MPU-6050: the timer paces, any rate
    c["sample"] = {"rate_hz": 400, "burst_rate_hz": 1234}
    _ok(c, esp32_devkit)


def test_watchdog_budget():
    assert WDT_LOOP_MARGIN_MS == 1000
    for b in (esp32_devkit, pico_w, None):
        c = _board_good(b or esp32_devkit)
        c["broker"]["timeout_ms"] = 2000
        c["watchdog_ms"] = 4999
        _refused(
            c,
            b,
            "'watchdog_ms' = 4999 is too short for 'broker.timeout_ms' = 2000",
            "at least 2 x broker.timeout_ms + 1000 = 5000",
            "set watchdog_ms to at least 5000 or broker.timeout_ms to at most 1999",
        )
        c["watchdog_ms"] = 5000
        _ok(c, b)
        c["watchdog_ms"] = 0  # off: no budget
        c["broker"]["timeout_ms"] = 30000
        _ok(c, b)
    # the RP2040 watchdog stops at 8388 ms: refused, not clamped
    c = _board_good(pico_w)
    c["watchdog_ms"] = 8389
    _refused(
        c,
        pico_w,
        "'watchdog_ms' = 8389 is above the pico_w watchdog's maximum of 8388 ms: set watchdog_ms to at most 8388",
    )
    c["watchdog_ms"] = 8388
    _ok(c, pico_w)
    c = _board_good(esp32_devkit)
    c["watchdog_ms"] = 60000
    _ok(c, esp32_devkit)
    # a socket timeout the Pico W watchdog cannot cover: only the timeout can change
    c = _board_good(pico_w)
    c["broker"]["timeout_ms"] = 4000
    msg = _refused(c, pico_w, "set broker.timeout_ms to at most 3500")
    assert "watchdog_ms to at least" not in msg, msg
    c["broker"]["timeout_ms"] = 3500
    _ok(c, pico_w)


def test_sleep_mode_joins_wifi_within_the_watchdog():
    for b in (esp32_devkit, pico_w):
        c = _board_good(b)
        c["sleep"] = {"enabled": True}  # connect_timeout_ms 15000 vs watchdog_ms 8000
        msg = _refused(
            c,
            b,
            "'wifi.connect_timeout_ms' = 15000 must be below 'watchdog_ms' = 8000 in sleep mode",
            "set wifi.connect_timeout_ms to at most 7999",
        )
        assert ("watchdog_ms to at least 15001" in msg) == (b is esp32_devkit), msg
        c["wifi"]["connect_timeout_ms"] = 7999
        _ok(c, b)
        c["wifi"]["connect_timeout_ms"] = 15000
        c["watchdog_ms"] = 0
        _ok(c, b)
        c["watchdog_ms"] = 8000
        c["sleep"]["enabled"] = False
        _ok(c, b)
        c["sleep"]["enabled"] = True
        _ok(c, b, needs_wifi=False)  # no Wi-Fi join (unix port)


def test_heap_budget():
    for b in BOARDS:
        total, parts = buffer_bytes(_ok(_board_good(b), b))
        assert total <= b.HEAP_BUDGET, (b.NAME, total)
        assert parts[0][1] >= parts[-1][1]
    c = _board_good(esp32_devkit)
    c["queue"] = {"flash_frames": 1536}
    msg = _refused(
        c,
        esp32_devkit,
        "the buffers this configuration preallocates take ",
        "more than the 24576 B budget of esp32_devkit",
        "largest: queue.flash_frames 26112 B",
    )
    total = buffer_bytes(_ok(c, None))[0]
    assert ("take %d B" % total) in msg, msg
    c["sensors"][1]["pin"] = 26
    _ok(c, pico_w)  # 48 KB on the Pico W
    c["queue"] = {"flash_frames": 4096}
    _refused(c, pico_w, "budget of pico_w", "queue.flash_frames 69632 B")
    for key, value in (("ring_rows", 16384), ("max_batch", 1024)):
        c = _board_good(pico_w)
        c["sample"] = {key: value}
        if key == "max_batch":
            c["queue"] = {"block_bytes": 16384}
        _refused(c, pico_w, "budget of pico_w", "sample." + key if key == "ring_rows" else "queue.ram_frames")
    c = _good()
    c["queue"] = {"flash_frames": 65535, "block_bytes": 65536}
    c["sample"] = {"ring_rows": 16384}
    validate(c)  # the simulation: no budget


def test_block_holds_a_frame():
    c = _good()  # 7 channels: the BIRTH buffer (64 + 76 x 7 = 596 B) is the largest frame
    c["queue"] = {"block_bytes": 602}
    assert "'queue.block_bytes' must be at least 603 (a frame of up to 596 B + 7), got 602" in _error(c)
    c["queue"] = {"block_bytes": 603}
    validate(c)


def _held(obj):
    # bytes of the buffers an object holds: arrays and bytearrays, lists at 4 B an entry
    n = 0
    for v in obj.__dict__.values():
        if isinstance(v, (bytearray, array)):
            n += len(bytes(v))
        elif isinstance(v, list):
            n += 4 * len(v)
    return n


def test_buffer_bytes_matches_the_firmware_objects():
    import os

    from sensorfw.core.batcher import EVENT_BUF_SIZE, Batcher
    from sensorfw.core.config import _EVENT_BUF, _WIDTH
    from sensorfw.core.data_encoder import RingDataEncoder
    from sensorfw.core.offline_queue import OfflineQueue
    from sensorfw.core.ring import EventRing, SampleRing
    from sensorfw.drivers.analog import AnalogChannel
    from sensorfw.drivers.pulse import PulseInput

    try:
        from sensorfw.drivers.mpu6050 import MPU6050

        imu_width = MPU6050.width
    except Exception:  # the viper helpers need MicroPython's emitter (a stub may shadow it)
        imu_width = 6
    assert _WIDTH == {"mpu6050": imu_width, "analog": AnalogChannel.width, "pulse": PulseInput.width}
    assert _EVENT_BUF == EVENT_BUF_SIZE
    c = _good()
    c["sensors"].append({"type": "pulse", "pin": 4})
    c["sample"] = {"batch": 20, "max_batch": 40, "ring_rows": 100, "event_ring": 30}
    c["queue"] = {"ram_frames": 5, "flash_frames": 50, "block_bytes": 2048, "dir": "qbuf"}
    cfg = validate(c)
    w = 8
    ring = SampleRing(100, w)
    events = EventRing(30)
    enc = RingDataEncoder(w, 40)
    batcher = Batcher(ring, events, enc, 20, None, None)
    frame = max(len(enc.buf), EVENT_BUF_SIZE, 64 + 76 * w)  # core/app.py's slot size, BIRTH bounded
    d = "qbuf"
    try:
        import sys

        if sys.implementation.name == "cpython":
            import tempfile

            d = tempfile.mkdtemp(prefix="edgeline-cfg-") + "/qbuf"
    except ImportError:
        pass
    queue = OfflineQueue(d, 5, 50, frame, 2048, 4)
    app_buffers = 64 + 76 * w  # core/app.py out_buf
    held = _held(ring) + _held(events) + _held(enc) + _held(batcher) + _held(queue) + app_buffers
    total, parts = buffer_bytes(cfg)
    assert 0 <= total - held <= 16, (total, held, parts)
    assert dict(parts)["queue.ram_frames"] == 5 * (frame + 9)
    try:
        for f in os.listdir(d):
            os.remove(d + "/" + f)
        os.rmdir(d)
    except OSError:
        pass


def test_circuitpython_wifi_joins_stay_within_the_watchdog():
    # wifi.radio.connect() blocks the loop: the join plus the loop margin must fit the watchdog,
    # in every mode, and the CircuitPython profiles default to a 5 s join
    for b in (cp_pico_w, cp_esp32s3):
        c = _board_good(b)
        assert validate(c, ".", True, b)["wifi"]["connect_timeout_ms"] == 5000
        c["wifi"]["connect_timeout_ms"] = 15000
        msg = _refused(
            c,
            b,
            "'wifi.connect_timeout_ms' = 15000 is too long for 'watchdog_ms' = 8000 on %s" % b.NAME,
            "set wifi.connect_timeout_ms to at most %d" % (8000 - WDT_LOOP_MARGIN_MS),
        )
        assert ("watchdog_ms to at least 16000" in msg) == (b is cp_esp32s3), msg  # the RP2040 stops at 8388
        c["wifi"]["connect_timeout_ms"] = 8000 - WDT_LOOP_MARGIN_MS
        _ok(c, b)
        c["wifi"]["connect_timeout_ms"] = 15000
        c["watchdog_ms"] = 0
        _ok(c, b)
    # MicroPython's join returns at once: only sleep mode bounds it
    c = _board_good(pico_w)
    c["wifi"]["connect_timeout_ms"] = 15000
    _ok(c, pico_w)
