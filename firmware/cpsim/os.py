# CircuitPython's `os` on the unix port: the port's own module, with getenv() reading
# settings.toml on the CIRCUITPY drive (EDGELINE_SIM_DIR) as CircuitPython does: only
# top-level `KEY = "string"` and `KEY = integer` lines count; anything else gives None.
# As on CircuitPython releases from 2026 on, every value comes back as a string (an
# integer too); releases 8 and 9 gave integers as int, which the firmware also takes.
# The simulator's own EDGELINE_SIM_* settings come from the process environment.
# rename() is FAT's (CIRCUITPY): it does not replace an existing file (FatFs f_rename
# answers FR_EXIST, an OSError), where the unix port's would.
import sys

_mod = sys.modules.pop("os", None)
sys.path, _saved = [p for p in sys.path if not p.endswith("cpsim")], sys.path
import os as _port  # noqa: E402
from os import *  # noqa: E402, F403

sys.path = _saved
if _mod is not None:
    sys.modules["os"] = _mod

_ESC = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "b": "\b", "f": "\f"}


def _string(s):
    out = []
    i = 1
    while i < len(s):
        ch = s[i]
        if ch == '"':
            rest = s[i + 1 :].strip()
            if rest and rest[0] != "#":
                return None
            return "".join(out)
        if ch == "\\":
            i += 1
            e = s[i : i + 1]
            if e == "u":
                out.append(chr(int(s[i + 1 : i + 5], 16)))
                i += 4
            elif e in _ESC:
                out.append(_ESC[e])
            else:
                return None
        else:
            out.append(ch)
        i += 1
    return None


def _value(v):
    v = v.strip()
    if v.startswith('"'):
        return _string(v)
    v = v.split("#")[0].strip()
    try:
        return str(int(v, 0))
    except ValueError:
        return None


def getenv(key, default=None):
    if key.startswith("EDGELINE_SIM_"):
        v = _port.getenv(key)
        return default if v is None else v
    d = _port.getenv("EDGELINE_SIM_DIR") or "."
    try:
        with open(d + "/settings.toml") as f:
            text = f.read()
    except OSError:
        return default
    for line in text.split("\n"):
        line = line.strip()
        if line.startswith("["):
            break  # tables are not read
        if "=" not in line or line.startswith("#"):
            continue
        k, v = line.split("=", 1)
        if k.strip() == key:
            v = _value(v)
            return default if v is None else v
    return default


def rename(old, new):
    try:
        _port.stat(new)
    except OSError:
        return _port.rename(old, new)
    raise OSError(17)  # EEXIST
