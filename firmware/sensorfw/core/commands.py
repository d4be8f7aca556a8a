# Commands from the gateway (CMD frames). Imported only when a command arrives,
# so its code costs no RAM on a board that never gets one.

from sensorfw.core.app import log
from shared_protocol import (
    CMD_CONFIG,
    CMD_OTA,
    CMD_RAW_BURST,
    CMD_REBIRTH,
    CMD_REBOOT,
    CMD_RESEND,
    CMD_SET_BATCH,
    CMD_SET_OUTPUT,
    CMD_SET_RATE,
)
from shared_protocol.cmd_args import arg_values


def run(app, cmd_id, op, arg):
    """Run one command on `app`; an unknown op or a bad argument is logged and ignored."""
    log("command %d op %d" % (cmd_id, op))
    try:
        values = arg_values(op, arg)  # the op's fields in table order; None for CONFIG, RESEND
    except ValueError as e:  # BadField: an op this firmware does not know, or a wrong length
        log("command %d ignored: %s" % (cmd_id, e))
        return
    if op == CMD_SET_RATE:
        rate = values[0] / 1000
        if 0 < rate <= 2000:
            app.base_rate_hz = rate
            app.burst_until = None
            app.set_rate(rate)
        else:
            log("SET_RATE refused: %r Hz outside (0, 2000]" % rate)
    elif op == CMD_SET_BATCH:
        b = values[0]
        try:
            app.batcher.drain(True)
            app.batcher.set_batch(b)
        except ValueError as e:
            log("SET_BATCH refused: %s" % e)
    elif op == CMD_REBOOT:
        app.shutdown()
        app.board.reset()
    elif op == CMD_RAW_BURST:
        # full-rate raw data for a while (e.g. for a vibration spectrum), then back
        secs = values[0]
        app.burst_until = app.clock.ticks_add(app.clock.ticks_ms(), secs * 1000)
        app.set_rate(app.burst_rate_hz)
    elif op == CMD_SET_OUTPUT:
        # actuator end of the local alert loop: drive output idx, for dur ms (0 = hold)
        idx, val, dur = values
        if idx < len(app.outputs):
            app._set_output(idx, val)
            app._out_until[idx] = app.clock.ticks_add(app.clock.ticks_ms(), dur) if dur else None
        else:
            log("SET_OUTPUT refused: no output %d (have %d)" % (idx, len(app.outputs)))
    elif op == CMD_REBIRTH:
        app.rebirth()
    elif op == CMD_CONFIG:
        config(app, arg)
    elif op == CMD_RESEND:
        from sensorfw.core.resend import answer

        try:
            answer(app, arg)
        except ValueError as e:  # a malformed range list (BadField)
            log("CMD_RESEND refused: %s" % e)
    elif op == CMD_OTA:
        from sensorfw.core.ota import run as ota

        ota(app, arg)


def config(app, arg):
    """CMD_CONFIG: a change of some settings (core/config_change.py), or a whole new
    config.json (the older form): validated, stored atomically, then a reboot into it."""
    import json

    try:
        obj = json.loads(arg)
    except ValueError as e:
        log("CMD_CONFIG refused: not JSON (%s)" % e)
        return
    from shared_protocol.config_change import is_change

    if is_change(obj):
        from sensorfw.core.config_change import run as change

        change(app, obj)
        return
    if app.board.config_path.endswith(".toml"):
        log("CMD_CONFIG refused: a whole config.json cannot replace settings.toml; send a change ('set')")
        return
    from sensorfw.core.config import ConfigError, validate

    try:
        validate(obj, app.board.flash_dir, app.board.needs_wifi, app.board.profile)
    except (ValueError, ConfigError) as e:
        log("CMD_CONFIG refused: %s" % e)
        return
    from sensorfw.core.config_store import replace

    replace(app.board.config_path, json.dumps(obj))
    log("new config.json written: rebooting")
    app.shutdown()
    app.board.reset()
