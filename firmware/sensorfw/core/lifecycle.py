# Rarely run parts of the application, loaded only when needed (RAM is scarce on a
# board): the deep-sleep cycle, the end of a bounded run, the statistics.


def run_sleep_cycle(app):
    """Wake, capture `awake_samples`, publish (waiting up to ack_wait_ms for the
    gateway's ACKs) or keep them on flash, save boot/seq, deep sleep."""
    board = app.board
    clock = app.clock
    cfg = app.sleep_cfg
    while app.sampler.samples < cfg["awake_samples"]:
        app.step()
        board.idle(app)
    board.stop_timer(app.timer)
    app.batcher.drain(True)
    app.batcher.drain_events()
    deadline = clock.ticks_add(clock.ticks_ms(), cfg["ack_wait_ms"])
    while clock.ticks_diff(deadline, clock.ticks_ms()) > 0:
        app.step()
        if app.link.up() and app.queue.depth() == 0:
            break
        board.idle(app)
    app.shutdown()  # unACKed frames go to flash and are replayed after the wake-up
    from sensorfw.core.state import save_for_sleep

    save_for_sleep(board, board.flash_dir, app.boot, app.seq)
    board.report(app)
    board.deepsleep(cfg["sleep_ms"])


def finish(app):
    """End of a bounded (simulated) run: drain what the link allows, then sync."""
    board = app.board
    board.stop_timer(app.timer)
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
        "slips": app.sampler.slips,
        "min_free_heap": app.min_free,
    }
