# Board entry point: the A/B loader. It is never replaced over the air, so it stays small
# and imports nothing from a slot until it has picked one.
#
# ota.json (flash root) says which firmware runs: the confirmed slot ("active": "a" or
# "b", "" for the code at the flash root) and a slot on trial after an update ("trial").
# No ota.json: the flat layout of a freshly flashed board (code at the root). A trial
# start is counted in ota.json BEFORE the trial firmware runs; an exception out of the
# trial firmware rolls back at once, a third start without confirmation rolls back too
# (a hang the watchdog reset, a crash loop, a power cut); the firmware reports the
# rollback to its gateway after it connects (core/ota_boot.py). ota.json is only ever
# replaced whole (write a temporary file, rename over: atomic on littlefs and POSIX), so
# a reset leaves the old state or the new one.
#
# On the unix port (sys.platform == "linux") the simulation board is used:
#   MICROPYPATH=firmware:<repo root>:.cache/upy-lib micropython firmware/main.py

import sys

STATE = "ota.json"
MAX_TRIAL_STARTS = 2  # a trial slot started this often without confirming is rolled back
# shared_protocol/ota.py values (a slot's module may not be imported before the slot is
# picked; tests/firmware/test_fw_ota.py checks they match)
ROLLED_BACK_CRASH = 10
ROLLED_BACK_UNCONFIRMED = 11
EXIT_RESET = 4  # the simulation's machine.reset (boards/sim.py)


def read_state():
    """The A/B state (a dict), or None for the flat layout."""
    import json

    try:
        with open(STATE) as f:
            return json.load(f)
    except OSError:
        return None
    except ValueError:
        print("OTA: %s is unreadable: running the code at the flash root" % STATE)
        return None


def write_state(st):
    """Replace ota.json atomically."""
    import json
    import os

    tmp = STATE + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(st))
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
    import machine

    machine.reset()


def main():
    st = read_state()
    slot, trial = pick(st)
    if slot:
        sys.path.insert(0, slot_dir(slot))
    try:
        from sensorfw.entry import main as run

        app = run(slot, trial, st)
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


if __name__ == "__main__":
    main()
