# A configuration change from the gateway (CMD_CONFIG {"set": {...}, "id": n}), and the
# older whole-config.json form. Loaded only when a CMD_CONFIG arrives.
#
# A change is checked with the shared table (shared_protocol/config_change.py, which the
# gateway checks with too), then the whole configuration with the change in it goes
# through the boot-time validation (core/config.py: the sensor's rates, buffer budget,
# ...). Only then is the file replaced, atomically (core/config_store.py), and the change
# applied: sample rate, batch and health interval at once, without a reboot, unless the
# new batch needs larger buffers than the running ones (then the board restarts into the
# saved file). Every outcome is acknowledged with an EVENT frame carrying the change id,
# the result and the values in force; it goes through the offline queue like any frame
# that takes a sequence number, so a reboot or an outage does not lose it.

from array import array

from sensorfw.core.app import log
from shared_protocol import config_change as cc
from shared_protocol.encode import encode_event


def run(app, obj):
    """Carry out a change object (already parsed from the CMD_CONFIG JSON)."""
    cid = cc.change_id(obj)
    if not cid:
        log("config change refused: 'id' must be 1..%d" % cc.MAX_CHANGE_ID)
        return  # nothing to acknowledge it with; the gateway never sends this
    changes = obj.get("set")
    err = cc.check_change(changes)
    cfg = None
    if err is None:
        err, cfg = _save(app, changes)
    if err is not None:
        log("config change %d refused (%s): %s" % (cid, cc.RESULT_NAMES[err[0]], err[1]))
        acknowledge(app, cid, err[0])
        return
    live = False
    try:
        live = _apply(app, cfg)
    except (OSError, ValueError) as e:  # the sensor did not take it: the saved file will
        log("config change %d: applying failed (%s): rebooting into the saved file" % (cid, e))
    log("config change %d applied%s: %r" % (cid, "" if live else ", rebooting", changes))
    if live:
        acknowledge(app, cid, cc.APPLIED)
    else:  # the values the restart will run with
        acknowledge(app, cid, cc.REBOOTING, (cfg["sample"]["rate_hz"], cfg["sample"]["batch"], cfg["health_s"]))
    if not live:
        app.shutdown()  # the acknowledgement is kept on flash and sent after the restart
        app.board.reset()


def _save(app, changes):
    """Validate the configuration with the changes in it, then replace the file:
    (None, validated configuration) or ((result code, message), None)."""
    from sensorfw.core.config import ConfigError, validate

    board = app.board
    toml = board.config_path.endswith(".toml")
    try:
        raw = _read_raw(board, toml)
        for key in changes:
            _put(raw, cc.path_of(key), changes[key])
        cfg = validate(raw, _base_dir(board, toml), board.needs_wifi, board.profile)
    except (ValueError, ConfigError) as e:  # ConfigError names the key, never a secret
        return (cc.INVALID, str(e)), None
    try:
        if toml:
            from sensorfw.cpport.settings import write_changes

            write_changes(board.config_path, changes)
        else:
            import json

            from sensorfw.core.config_store import replace

            replace(board.config_path, json.dumps(raw))
    except OSError as e:
        return (cc.STORAGE, "cannot write %s (%s)" % (board.config_path, e)), None
    return None, cfg


def _read_raw(board, toml):
    if toml:
        import os

        from sensorfw.cpport.settings import read

        return read(os.getenv)
    import json

    try:
        with open(board.config_path) as f:
            return json.load(f)
    except OSError:
        raise ValueError("cannot read %s" % board.config_path)


def _base_dir(board, toml):
    if toml:
        return board.flash_dir or "/"
    p = board.config_path
    return p.rsplit("/", 1)[0] if "/" in p else "."


def _put(raw, path, value):
    parts = path.split(".")
    d = raw
    for p in parts[:-1]:
        sub = d.get(p)
        if not isinstance(sub, dict):
            sub = {}
            d[p] = sub
        d = sub
    d[parts[-1]] = value


def _apply(app, cfg):
    """Put the validated configuration's rate, batch and health interval in force; False
    when the batch needs buffers other than the running ones (a reboot applies it)."""
    sc = cfg["sample"]
    batch = sc["batch"]
    if batch > app.encoder.max_samples or batch >= app.ring.rows:
        return False
    app.burst_rate_hz = sc["burst_rate_hz"]
    if sc["rate_hz"] != app.base_rate_hz or app.burst_until is not None:
        app.base_rate_hz = sc["rate_hz"]
        app.burst_until = None
        app.set_rate(sc["rate_hz"])  # drains the batch in progress, sends a BIRTH
    if batch != app.batcher.batch:
        app.batcher.drain(True)
        app.batcher.set_batch(batch)
    app.health_ms = cfg["health_s"] * 1000
    app.next_health = app.clock.ticks_add(app.clock.ticks_ms(), app.health_ms)
    return True


def values(app):
    """The settings in force, in table order (shared_protocol/config_change.SETTINGS)."""
    return (app.base_rate_hz, app.batcher.batch, app.health_ms // 1000)


def acknowledge(app, cid, result, now_in_force=None):
    """Queue the EVENT that answers change cid (see shared_protocol/config_change.py) with
    the settings in force (default: the running ones)."""
    pairs = cc.ack_events(cid, result, now_in_force or values(app))
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
    app.config_changes += 1
