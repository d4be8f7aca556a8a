# settings.toml -> the firmware configuration, on CircuitPython.
#
# CircuitPython users configure a board in /settings.toml, read with os.getenv. Its
# values are integers or strings only, so numbers with a fraction and true/false are
# written as strings ("0.5", "true"); lists become numbered keys. One rule names every
# key (`key_of`): EDGELINE_ + the config path in capitals, dots as underscores, list
# items numbered from 0 (sensors[1].pin -> EDGELINE_SENSOR1_PIN). Wi-Fi uses
# CircuitPython's own keys, so the board also joins the network for the web workflow.
# The dict built here goes through the same validation as config.json on MicroPython
# (core/config.py); its messages are given back naming the settings.toml key.
# os.getenv gives an integer as an int on CircuitPython 8 and 9, and every value as a
# string on later releases: integers written as strings are read as integers.

# Keys that are not EDGELINE_ + the path: CircuitPython's own Wi-Fi keys, and what only the
# CircuitPython entry points read (code.py: the profile; boot.py: the USB-write pin).
OWN_KEYS = {
    "wifi.ssid": "CIRCUITPY_WIFI_SSID",
    "wifi.password": "CIRCUITPY_WIFI_PASSWORD",
    "circuitpython.board": "EDGELINE_BOARD",
    "circuitpython.usb_write_pin": "EDGELINE_USB_WRITE_PIN",
}

# Scalar paths; "sensors[]" / "outputs[]" are the fields of each list item.
TOP = (
    "device_id",
    "site",
    "topic_prefix",
    "wifi.ssid",
    "wifi.password",
    "wifi.connect_timeout_ms",
    "broker.host",
    "broker.port",
    "broker.user",
    "broker.password",
    "broker.keepalive_s",
    "broker.timeout_ms",
    "broker.tls.ca",
    "broker.tls.cert",
    "broker.tls.key",
    "broker.tls.server_name",
    "sample.rate_hz",
    "sample.batch",
    "sample.max_batch",
    "sample.ring_rows",
    "sample.delta",
    "sample.burst_rate_hz",
    "sample.event_ring",
    "queue.dir",
    "queue.ram_frames",
    "queue.flash_frames",
    "queue.block_bytes",
    "queue.segment_blocks",
    "queue.ack_timeout_s",
    "queue.publish_per_loop",
    "queue.seq_lease",
    "health_s",
    "backoff.min_ms",
    "backoff.max_ms",
    "watchdog_ms",
    "ota_trial_s",
    "sleep.enabled",
    "sleep.awake_samples",
    "sleep.sleep_ms",
    "sleep.ack_wait_ms",
    "circuitpython.board",
    "circuitpython.usb_write_pin",
)
SENSOR_FIELDS = (
    "type",
    "name",
    "pin",
    "unit",
    "scale",
    "offset",
    "mode",
    "edge",
    "pull",
    "debounce_ms",
    "sim_hz",
    "addr",
    "accel_range_g",
    "gyro_range_dps",
    "dlpf",
    "i2c.id",
    "i2c.scl",
    "i2c.sda",
    "i2c.freq",
)
OUTPUT_FIELDS = ("name", "pin", "active_high")
LISTS = (("sensors", "SENSOR", SENSOR_FIELDS), ("outputs", "OUTPUT", OUTPUT_FIELDS))
MAX_ITEMS = 8  # sensors and outputs each

BOOLS = ("sample.delta", "sleep.enabled", "active_high")
FLOATS = ("sample.rate_hz", "sample.burst_rate_hz", "scale", "offset", "sim_hz")
# Text values: never read as numbers, even when they are digits (a device id "0042")
STRINGS = (
    "device_id",
    "site",
    "topic_prefix",
    "wifi.ssid",
    "wifi.password",
    "broker.host",
    "broker.user",
    "broker.password",
    "broker.tls.ca",
    "broker.tls.cert",
    "broker.tls.key",
    "broker.tls.server_name",
    "queue.dir",
    "circuitpython.board",
    "type",
    "name",
    "unit",
    "mode",
    "edge",
    "pull",
)


def key_of(path):
    """settings.toml key of a config path: "broker.host" -> EDGELINE_BROKER_HOST,
    "sensors[1].i2c.scl" -> EDGELINE_SENSOR1_I2C_SCL."""
    if path in OWN_KEYS:
        return OWN_KEYS[path]
    for name, prefix, _fields in LISTS:
        if path.startswith(name + "["):
            i = path.index("]")
            rest = path[i + 2 :]
            return "EDGELINE_%s%s_%s" % (prefix, path[len(name) + 1 : i], rest.replace(".", "_").upper())
    return "EDGELINE_" + path.replace(".", "_").upper()


class SettingsError(ValueError):
    pass


def _convert(path, field, v):
    """settings.toml holds int and str: turn "0.5" / "true" into what config.json would hold."""
    key = key_of(path)
    if field in BOOLS or path in BOOLS:
        if v in (0, 1):
            return v == 1
        if isinstance(v, str) and v.lower() in ("true", "false"):
            return v.lower() == "true"
        raise SettingsError('settings.toml: %s must be 1, 0, "true" or "false", got %r' % (key, v))
    if isinstance(v, str) and (field in FLOATS or path in FLOATS):
        try:
            return float(v)
        except ValueError:
            raise SettingsError('settings.toml: %s must be a number (a string such as "12.5"), got %r' % (key, v))
    if isinstance(v, str) and field not in STRINGS and path not in STRINGS:
        t = v.strip()
        if t and (t.isdigit() or (t[0] == "-" and t[1:].isdigit())):
            return int(t)  # an integer, as a string (os.getenv on newer CircuitPython)
    return v


def _put(d, path, field, v):
    parts = field.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = _convert(path, field, v)


def read(getenv):
    """The raw configuration (as config.json would hold it) from getenv(key) (os.getenv)."""
    raw = {}  # type: dict[str, object]
    for path in TOP:
        v = getenv(key_of(path))
        if v is not None:
            _put(raw, path, path, v)
    for name, _prefix, fields in LISTS:
        items = []  # type: list[dict[str, object] | None]
        for i in range(MAX_ITEMS):
            item = {}  # type: dict[str, object]
            for f in fields:
                path = "%s[%d].%s" % (name, i, f)
                v = getenv(key_of(path))
                if v is not None:
                    _put(item, path, f, v)
            if item:
                while len(items) < i:
                    items.append(None)  # a gap in the numbering: validation names it
                items.append(item)
        if items:
            raw[name] = items
    return raw


def _paths(raw):
    out = list(TOP)
    for name, _prefix, fields in LISTS:
        for i in range(len(raw.get(name) or ())):
            out.append("%s[%d]" % (name, i))
            for f in fields:
                out.append("%s[%d].%s" % (name, i, f))
    out.extend(("sensors", "outputs", "wifi", "broker", "broker.tls"))
    out.sort(key=len, reverse=True)
    return out


def explain(msg, raw):
    """A core/config.py message, naming settings.toml keys instead of config.json paths."""
    msg = msg.replace("config.json", "settings.toml")
    for path in _paths(raw):
        if path in ("sensors", "outputs"):
            key = "EDGELINE_%s0_TYPE ..." % ("SENSOR" if path == "sensors" else "OUTPUT")
        elif path == "broker.tls":
            key = "EDGELINE_BROKER_TLS_*"
        elif path in ("wifi", "broker"):
            continue
        elif path.endswith("]"):
            key = key_of(path + ".x")[:-2]
        else:
            key = key_of(path)
        msg = msg.replace("'%s'" % path, key)
    return msg


def _line(path, value):
    """The settings.toml line of a config path's value (as the flash tool writes it)."""
    if path in FLOATS or isinstance(value, float):
        return '%s = "%r"' % (key_of(path), float(value))
    return "%s = %d" % (key_of(path), value)


def write_changes(path, changes):
    """Write remote configuration changes ({key: value}, keys of
    shared_protocol/config_change.SETTINGS) into settings.toml at path, atomically:
    each key's line is replaced, or added before the first [table]. Other lines are kept
    as they are. Raises OSError."""
    from sensorfw.core.config_store import replace
    from shared_protocol.config_change import path_of

    with open(path) as f:
        lines = f.read().split("\n")
    end = len(lines)
    for i in range(len(lines)):
        if lines[i].strip().startswith("["):
            end = i  # os.getenv reads top-level keys only
            break
    while end > 0 and not lines[end - 1].strip():
        end -= 1  # new keys go after the last one, not after trailing blank lines
    for key in changes:
        cpath = path_of(key)
        name = key_of(cpath)
        new = _line(cpath, changes[key])
        for i in range(end):
            t = lines[i].strip()
            if t.startswith(name) and t[len(name) :].lstrip().startswith("="):
                lines[i] = new
                break
        else:
            lines.insert(end, new)
            end += 1
    replace(path, "\n".join(lines))


def load(getenv, base_dir="/", needs_wifi=True, profile=None):
    """Validated configuration from settings.toml; raises ConfigError naming the key."""
    from sensorfw.core.config import ConfigError, validate

    try:
        raw = read(getenv)
    except SettingsError as e:
        raise ConfigError(str(e))
    try:
        return validate(raw, base_dir, needs_wifi, profile)
    except ConfigError as e:
        raise ConfigError(explain(str(e), raw))
