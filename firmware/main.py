# Board entry point: pick the board, load config.json, run the firmware.
#
# On the unix port (sys.platform == "linux") the simulation board is used:
#   MICROPYPATH=firmware:<repo root>:.cache/upy-lib micropython firmware/main.py
# A bad or missing configuration prints one message naming the key and returns,
# so a real board stays reachable on the REPL instead of crash-looping.

import sys

from sensorfw import unload

try:
    import micropython

    micropython.alloc_emergency_exception_buf(128)
except (ImportError, AttributeError):
    pass


def make_board():
    if sys.platform == "linux":
        from sensorfw.boards import sim

        return sim.make_board()
    from sensorfw.port.board import Board

    if sys.platform == "esp32":
        from sensorfw.boards import esp32_devkit

        return Board(esp32_devkit)
    if sys.platform == "rp2":
        from sensorfw.boards import pico_w

        return Board(pico_w)
    raise OSError("no board profile for platform %r" % sys.platform)


def load_config(board):
    """Validated configuration, or None after printing what is wrong. The board profile
    adds its pin roles, watchdog maximum and heap budget (the simulation of a board has
    the same profile as the board)."""
    from sensorfw.core.config import ConfigError, load

    try:
        return load(board.config_path, board.needs_wifi, board.profile)
    except ConfigError as e:
        print("CONFIG ERROR: %s" % e)
        print("Fix config.json (e.g. with the flash tool) and reset; the REPL stays available.")
        return None


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
    import gc

    gc.collect()
    try:
        return [bytearray(n)]
    except MemoryError:
        return None  # App then allocates where it can, and reports if it cannot


def main():
    board = make_board()
    cfg = load_config(board)
    reserve = None if cfg is None else reserve_for_buffers(cfg)
    unload("sensorfw.core.config")
    if cfg is None:
        return None
    board.configure_net(cfg["wifi"])  # the join runs while the firmware starts
    import gc

    try:
        from sensorfw.core.app import App

        app = App(board, cfg, reserve)
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
        print("queue.ram_frames or queue.block_bytes in config.json; the REPL stays available.")
        return None
    gc.collect()
    app.run()
    return app


if __name__ == "__main__":
    main()
