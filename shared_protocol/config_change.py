"""Remote configuration of a device (all runtimes): the one table of the settings a
gateway may change, the change argument of CMD_CONFIG and the acknowledgement the
device answers with. The gateway checks a change with this table before it sends it;
the firmware checks it again with the same table (then with its whole-config
validation) before it writes anything. A board loads this module only when a
CMD_CONFIG arrives. Layouts: docs/protocol.md, "Configuration changes".

Change: CMD_CONFIG whose JSON object has a "set" key,
    {"set": {"sample_rate_hz": 50, "batch": 32}, "id": 1234}
(any other JSON object is the older whole-config.json form).

Acknowledgement: an EVENT frame (sequenced, queued and ACKed like every EVENT) whose
events carry status codes in the channel byte instead of a channel index. BIRTH has at
most 64 channels, so codes 0xF0..0xFF never name a channel:
    (EV_CONFIG, ticks, change id), (EV_CONFIG_RESULT, ticks, result),
    then per setting i of SETTINGS (EV_SETTING + i, ticks, its value after the change)
A v1 gateway that does not know the codes stores and ACKs the frame like any EVENT.
"""

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


EV_STATUS_MIN = 0xF0  # EVENT channel bytes from here on are status codes, not channels
EV_SETTING = 0xF0  # + index in SETTINGS: the setting's value (integer, in SETTINGS units)
EV_CONFIG_RESULT = 0xFE  # value: a RESULT code
EV_CONFIG = 0xFF  # value: the change id; first event of an acknowledgement

MAX_CHANGE_ID = 0x7FFFFFFF  # ids travel as an EVENT's i32 value: 1..2**31-1

# Settable keys, in wire order (the acknowledgement's code of key i is EV_SETTING + i:
# append only). (key, config.json path, integer?, low, high, factor): a value is checked
# against low..high in the key's own unit; the acknowledgement carries round(value x
# factor) as an integer (the sample rate in mHz). The ranges are those of the firmware's
# config.json validation (core/config.py reads them from here).
SETTINGS = (
    ("sample_rate_hz", "sample.rate_hz", False, 0.01, 2000, 1000),
    ("batch", "sample.batch", True, 1, 1024, 1),
    ("health_interval_s", "health_s", True, 1, 86400, 1),
)

# Result of a change (EV_CONFIG_RESULT); below REFUSED_MIN it was applied.
APPLIED = 0  # in force now, and saved
REBOOTING = 1  # saved; the device restarts to apply it (new buffer sizes)
REFUSED_MIN = 2
UNKNOWN_KEY = 2  # a key this firmware cannot change
OUT_OF_RANGE = 3  # a value of the wrong type or outside the table's range
INVALID = 4  # the whole config.json refused it (e.g. a rate the sensor cannot make)
STORAGE = 5  # the configuration file could not be written
MALFORMED = 6  # "set" is not an object of settings, or the id is not 1..2**31-1
RESULT_NAMES = ("applied", "rebooting", "unknown_key", "out_of_range", "invalid", "storage", "malformed")

_INT = const(2)


def setting(key):
    """(index, path, integer, low, high, factor) of a settable key, or None."""
    i = 0
    while i < len(SETTINGS):
        s = SETTINGS[i]
        if s[0] == key:
            return i, s[1], s[_INT], s[3], s[4], s[5]
        i += 1
    return None


def path_of(key):
    """The config.json path of a settable key (ValueError for another key)."""
    s = setting(key)
    if s is None:
        raise ValueError("unknown key %r" % (key,))
    return s[1]


def keys():
    """The settable keys, in table order."""
    return [s[0] for s in SETTINGS]


def check_value(key, value):
    """None when value is valid for key, else (result code, message)."""
    s = setting(key)
    if s is None:
        return UNKNOWN_KEY, "unknown key %r: settable keys are %s" % (key, ", ".join(keys()))
    lo, hi = s[3], s[4]
    if s[2]:
        ok = isinstance(value, int) and not isinstance(value, bool)
        what = "an integer"
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        what = "a number"
    if not ok or not (lo <= value <= hi):
        return OUT_OF_RANGE, "%s must be %s %s..%s, got %r" % (key, what, lo, hi, value)
    return None


def check_change(changes):
    """None when every (key, value) of the dict changes is valid, else (result code, message)
    for the first that is not."""
    if not isinstance(changes, dict) or not changes:
        return MALFORMED, "'set' must be a non-empty object of settings"
    for key in changes:
        err = check_value(key, changes[key])
        if err is not None:
            return err
    return None


def is_change(obj):
    """True for the change form of a CMD_CONFIG object, False for the whole-config form."""
    return isinstance(obj, dict) and "set" in obj


def change_id(obj):
    """The change id of a change object, or 0 when it has none that is valid."""
    cid = obj.get("id")
    if isinstance(cid, int) and not isinstance(cid, bool) and 1 <= cid <= MAX_CHANGE_ID:
        return cid
    return 0


def change_arg(cid, changes):
    """CMD_CONFIG argument bytes of a change (raises ValueError for a bad id or change)."""
    import json

    if not (isinstance(cid, int) and 1 <= cid <= MAX_CHANGE_ID):
        raise ValueError("change id must be 1..%d, got %r" % (MAX_CHANGE_ID, cid))
    err = check_change(changes)
    if err is not None:
        raise ValueError(err[1])
    return json.dumps({"set": changes, "id": cid}).encode()


def wire_value(index, value):
    """The acknowledgement's integer for a value of setting index (the rate in mHz)."""
    return int(value * SETTINGS[index][5] + 0.5)


def ack_events(cid, result, values):
    """The (code, value) pairs of an acknowledgement: values holds the current value of
    every setting, in table order (None: not known, left out)."""
    out = [(EV_CONFIG, cid), (EV_CONFIG_RESULT, result)]
    i = 0
    while i < len(values):
        if values[i] is not None:
            out.append((EV_SETTING + i, wire_value(i, values[i])))
        i += 1
    return out


def read_ack(events):
    """A decoded EVENT's events [(channel, ticks, value), ...] -> None when it is not an
    acknowledgement, else {"id", "result" (name), "code", "config" {key: value}}. Unknown
    codes (settings of a newer firmware) are left out."""
    if not events or events[0][0] != EV_CONFIG:
        return None
    out = {"id": events[0][2], "result": "unknown", "code": -1, "config": {}}
    for ch, _ticks, value in events[1:]:
        if ch == EV_CONFIG_RESULT:
            out["code"] = value
            out["result"] = RESULT_NAMES[value] if 0 <= value < len(RESULT_NAMES) else "unknown"
        elif EV_SETTING <= ch < EV_SETTING + len(SETTINGS):
            s = SETTINGS[ch - EV_SETTING]
            out["config"][s[0]] = value if s[5] == 1 else value / s[5]
    return out
