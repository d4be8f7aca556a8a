# Start-up shared by the entry points (main.py on MicroPython, cp/code.py on
# CircuitPython): keep a contiguous run of heap for the large buffers, start the App,
# report a failure in one message and return, so the board stays reachable (REPL,
# USB drive) instead of crash-looping.

import gc
import sys

from sensorfw import unload


def reserve_for_buffers(cfg):
    """A contiguous run of heap for the large buffers (queue block and RAM slots, sample
    ring, frame encoder), taken before the firmware's modules load and fragment the heap:
    on a 32-bit board with ~110 KB free, a 4 KB block can fail with 40 KB free in 3.5 KB
    pieces. App hands it back just before it allocates those buffers, one after the other."""
    from sensorfw.core.config import buffer_bytes

    n = 0
    for key, size in buffer_bytes(cfg)[1]:
        if key != "queue.flash_frames":  # the flash index grows in small pieces
            n += size
    if sys.maxsize > 0xFFFFFFFF:
        n = n * 3 // 2  # buffer_bytes counts 4-byte pointers; the unix port's are 8
    gc.collect()
    try:
        return [bytearray(n)]
    except MemoryError:
        return None  # App then allocates where it can, and reports if it cannot


def run(board, cfg, where, ota=None):
    """Start the firmware with the validated cfg and run it; None if it cannot start.
    where: what the user edits to fix a start-up problem (config.json, settings.toml);
    ota: (slot, on trial, ota.json state) from the A/B loader, None without ota.json."""
    reserve = reserve_for_buffers(cfg)
    unload("sensorfw.core.config")
    board.configure_net(cfg["wifi"])  # the join runs while the firmware starts
    try:
        from sensorfw.core.app import App

        app = App(board, cfg, reserve, ota)
        reserve = None
        cfg = None  # the App keeps what it needs; free the rest
    except (OSError, ValueError) as e:
        # e.g. the IMU does not answer: report and stay on the REPL
        print("START ERROR: %s" % e)
        return None
    except MemoryError:
        cfg = None
        gc.collect()
        print("START ERROR: out of memory at start-up (%d bytes free): lower sample.ring_rows," % gc.mem_free())
        print("queue.ram_frames or queue.block_bytes in %s; the REPL stays available." % where)
        return None
    gc.collect()
    app.run()
    return app
