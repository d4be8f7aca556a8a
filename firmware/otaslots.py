# The A/B loader's logic, shared by both entry points: main.py (MicroPython) and code.py
# (CircuitPython). It sits at the flash root beside them and, like them, is never sent
# over the air (a firmware bundle leaves it out), so it imports nothing from a slot until
# it has picked one.
#
# ota.json (flash root) says which firmware runs: the confirmed slot ("active": "a" or
# "b", "" for the code at the flash root) and a slot on trial after an update ("trial").
# No ota.json: the flat layout of a freshly flashed board (code at the root). A trial
# start is counted in ota.json BEFORE the trial firmware runs; an exception out of the
# trial firmware rolls back at once, a third start without confirmation rolls back too
# (a hang the watchdog reset, a crash loop, a power cut); the firmware reports the
# rollback to its gateway after it connects (sensorfw/core/ota_boot.py). ota.json is only
# ever replaced whole (a temporary file renamed over it: atomic on littlefs and POSIX; on
# FAT, CircuitPython's CIRCUITPY, the rename cannot replace, so the old file is removed
# first and a reset in that gap leaves the complete ota.json.tmp, which is read instead),
# so a reset leaves the old state or the new one.

import sys

STATE = "ota.json"
MAX_TRIAL_STARTS = 2  # a trial slot started this often without confirming is rolled back
# shared_protocol/ota.py values (a slot's module may not be imported before the slot is
# picked; tests/firmware/test_fw_ota.py checks they match)
ROLLED_BACK_CRASH = 10
ROLLED_BACK_UNCONFIRMED = 11
EXIT_RESET = 4  # the simulations' reset (boards/sim.py, cpsim's microcontroller.reset)


def read_state():
    """The A/B state (a dict), or None for the flat layout."""
    import json

    for name in (STATE, STATE + ".tmp"):  # .tmp: a replace on FAT cut after the removal
        try:
            with open(name) as f:
                st = json.load(f)
        except OSError:
            continue
        except ValueError:
            print("OTA: %s is unreadable: running the code at the flash root" % name)
            return None
        if name != STATE:  # finish that replace, so the next write_state keeps a whole copy
            import os

            os.rename(name, STATE)
        return st
    return None


def write_state(st):
    """Replace ota.json atomically."""
    import json
    import os

    tmp = STATE + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(st))
    try:
        os.rename(tmp, STATE)
    except OSError:  # FAT: a rename does not replace (read_state covers the gap)
        os.remove(STATE)
        os.rename(tmp, STATE)


def roll_back(st, code):
    """Drop the trial slot, keep the active one, remember why (reported after connect)."""
    print("OTA: trial firmware in /%s/ rolled back (%d)" % (st.get("trial", ""), code))
    st["trial"] = ""
    st["starts"] = 0
    st["rolled_back"] = code
    write_state(st)


def pick(st):
    """(slot to run, on trial): a trial start is written down before it runs."""
    if st is None:
        return "", False
    trial = st.get("trial", "")
    if trial:
        if st.get("starts", 0) >= MAX_TRIAL_STARTS:
            roll_back(st, ROLLED_BACK_UNCONFIRMED)
        else:
            st["starts"] = st.get("starts", 0) + 1
            write_state(st)
            return trial, True
    return st.get("active", ""), False


def slot_dir(slot):
    import os

    cwd = os.getcwd()
    return (cwd if cwd.endswith("/") else cwd + "/") + slot


def reset():
    if sys.platform == "linux":
        sys.exit(EXIT_RESET)
    # each import exists on one runtime only (the type checks see one set of stubs)
    try:
        import machine  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # CircuitPython
        import microcontroller  # type: ignore[import-not-found,unused-ignore]

        microcontroller.reset()
    machine.reset()


def run(entry, lib=""):
    """Pick the slot, put its code first on sys.path (the slot's folder + lib) and run
    main(slot, trial, state) of the module `entry` from there."""
    st = read_state()
    slot, trial = pick(st)
    if slot:
        sys.path.insert(0, slot_dir(slot) + lib)
    try:
        app = __import__(entry, None, None, ("main",)).main(slot, trial, st)
    except Exception as e:
        if not _failed(slot, trial, e):
            raise
        return None
    if app is None:  # a trial that cannot start (a config it refuses, no memory) goes too
        _failed(slot, trial, None)
    return app


def _failed(slot, trial, e):
    """The firmware did not start (e: what it raised): a trial not confirmed meanwhile is
    rolled back and the board restarts into the active slot. False otherwise."""
    if not trial:
        return False
    st = read_state()
    if st is None or st.get("trial", "") != slot:  # confirmed before it ended
        return False
    print("OTA: the trial firmware %s" % ("did not start" if e is None else "raised: %r" % (e,)))
    roll_back(st, ROLLED_BACK_CRASH)
    reset()
    return True
