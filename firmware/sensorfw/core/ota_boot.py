# The firmware's side of the A/B loader (otaslots.py): what the slot running is, its version
# for BIRTH, the confirmation of a trial and the report of a rollback. Loaded at start-up
# only when ota.json exists, and when a trial is confirmed or a rollback reported.

from array import array

from sensorfw.core.app import log
from shared_protocol import ota
from shared_protocol.encode import encode_event

MANIFEST = "fw.manifest"  # a slot's manifest (shared_protocol/ota.py format)


def slot_path(app, slot, name=""):
    """Path of `name` in `slot` ("" = the flash root) on the board's flash."""
    d = app.board.flash_dir
    if slot:
        d = d + "/" + slot
    return d + "/" + name if name else d


def manifest_header(path):
    """(version, counter) of a manifest file, read line by line; None without one."""
    version = None
    try:
        with open(path) as f:
            for i in range(3):
                line = f.readline().rstrip("\n")
                key, value = ota.parse_header_line(i, line)
                if key == "version":
                    version = value
                elif key == "counter":
                    return version, value
    except (OSError, ValueError):
        pass
    return None


def setup(app, slot, trial, st, trial_s):
    """At start-up: the slot running, its version, the trial (and how long it may run
    unconfirmed), a rollback to report."""
    app.slot = slot
    if slot:
        head = manifest_header(slot_path(app, slot, MANIFEST))
        if head is not None:
            app.fw_version = head[0]
    app.trial = trial
    if trial:
        app.trial_until = app.clock.ticks_add(app.clock.ticks_ms(), trial_s * 1000)
        log("firmware %s in /%s/ on trial (start %d)" % (app.fw_version, slot, st.get("starts", 0)))
    code = st.get("rolled_back", 0)
    if code:
        app.ota_note = (code, st.get("transfer", 0))


def answer(app, transfer, result, offset):
    """Queue the EVENT that answers a CMD_OTA (shared_protocol/ota.py answer_events)."""
    pairs = ota.answer_events(transfer, result, offset)
    n = len(pairs)
    now = app.clock.ticks_ms()
    codes = bytearray(n)
    times = array("I", [now] * n)
    vals = array("i", [0] * n)
    for i in range(n):
        codes[i] = pairs[i][0]
        vals[i] = pairs[i][1]
    size = encode_event(app.out_buf, app.boot, app.next_seq(), now, 0, codes, times, vals, n)
    app.queue_frame(app.out_buf, size)


def report(app):
    """After connecting: tell the gateway the update was rolled back, once."""
    import otaslots as loader

    code, transfer = app.ota_note
    app.ota_note = None
    log("firmware update %d rolled back (%s): running %s" % (transfer, ota.RESULT_NAMES[code], app.fw_version))
    answer(app, transfer, code, 0)
    st = loader.read_state()
    if st is not None and st.get("rolled_back", 0):
        st["rolled_back"] = 0
        loader.write_state(st)


def expire(app):
    """Not confirmed within ota_trial_s: restart (a start the loader counts; the third
    rolls back)."""
    log("firmware %s in /%s/ not confirmed within ota_trial_s: restarting" % (app.fw_version, app.slot))
    app.trial = False
    app.shutdown()
    app.board.reset()


def confirm(app):
    """The gateway stored data of this boot of the trial firmware: make its slot the active
    one and answer CONFIRMED."""
    import otaslots as loader

    app.trial = False
    app.trial_seq = -1
    st = loader.read_state()
    if st is None or st.get("trial", "") != app.slot:
        return
    st["active"] = app.slot
    st["trial"] = ""
    st["starts"] = 0
    loader.write_state(st)
    log("firmware %s in /%s/ confirmed" % (app.fw_version, app.slot))
    answer(app, st.get("transfer", 0), ota.CONFIRMED, 0)
