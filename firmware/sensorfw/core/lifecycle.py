# Rarely run parts of the application, loaded only when needed (RAM is scarce on a
# board): the deep-sleep cycle, the end of a bounded run, the statistics.


def run_sleep_cycle(app):
    """Wake, capture `awake_samples` while Wi-Fi joins, publish (waiting up to
    ack_wait_ms for the gateway's ACKs) or keep them on flash, leave the broker
    cleanly, put the sensors to sleep, save boot/seq, deep sleep."""
    board = app.board
    clock = app.clock
    cfg = app.sleep_cfg
    while app.sampler.samples < cfg["awake_samples"]:
        app.step()
        board.idle(app)
    app.stop_capture()
    app.batcher.drain(True)
    app.batcher.drain_events()
    # A Wi-Fi rejoin takes 1-3 s, longer than a typical awake window: wait for it
    # (up to wifi.connect_timeout_ms from the wake-up) instead of letting the link's
    # backoff, which counted the join as failed attempts, push the frames to flash.
    join_by = clock.ticks_add(app.t0, app.wifi_timeout_ms)
    while not board.net.isconnected() and clock.ticks_diff(join_by, clock.ticks_ms()) > 0:
        if app.wdt is not None:
            app.wdt.feed()
        board.idle(app)
    app.link.retry_now()
    deadline = clock.ticks_add(clock.ticks_ms(), cfg["ack_wait_ms"])
    while True:
        app.step()
        if app.link.up() and app.queue.depth() == 0:
            break
        if clock.ticks_diff(deadline, clock.ticks_ms()) <= 0:
            break
        board.idle(app)
    # DISCONNECT: the broker drops the session without publishing the will (DEATH),
    # which would otherwise mark the device dead at every sleep
    app.transport.disconnect()
    for r in app.readers:
        if hasattr(r, "sleep"):
            r.sleep()  # the MPU-6050 draws ~3.9 mA awake, ~5 uA asleep
    app.shutdown()  # unACKed frames go to flash and are replayed after the wake-up
    from sensorfw.core.state import save_for_sleep

    save_for_sleep(board, board.flash_dir, app.boot, app.seq)
    board.report(app)
    board.deepsleep(cfg["sleep_ms"], app.wdt)


def finish(app):
    """End of a bounded (simulated) run: drain what the link allows, then sync."""
    board = app.board
    app.stop_capture()
    app.batcher.drain(True)
    app.batcher.drain_events()
    board.drain(app)
    app.queue.sync()
    app.lease.close(app.seq)
    app.transport.close()
    board.report(app)


def stats(app):
    q = app.queue
    return {
        "boot": app.boot,
        "seq": app.seq,
        "samples": app.sampler.samples,
        "frames": app.batcher.frames,
        "published": app.published,
        "acks": app.acks,
        "queue_depth": q.depth(),
        "dropped": q.dropped,
        "torn": q.torn,
        "spilled": q.spilled,
        "loaded": q.loaded,
        "block_writes": q.block_writes,
        "overruns": app.sampler.overruns() + app.events.overruns,
        "connects": app.link.connects,
        "losses": app.link.losses,
        "births": app.births,
        "resend_requests": app.resend_requests,
        "loss_reported": app.loss_reported,
        "lease_writes": app.lease.writes,
        "commands": app.commands,
        "bad_frames": app.bad_frames,
        "rate_hz": app.rate_hz,
        "batch": app.batcher.batch,
        "health_s": app.health_ms // 1000,
        "config_changes": app.config_changes,
        "slips": app.sampler.slips,
        "missed": app.sampler.missed,
        "stale_ticks": app.sampler.stale,
        "fifo_overflows": app.sampler.fifo_overflows(),
        "sensor_errors": sensor_errors(app),
        "min_free_heap": app.min_free,
    }


def sensor_errors(app):
    n = 0
    for r in app.readers:
        n += getattr(r, "errors", 0)
    return n
