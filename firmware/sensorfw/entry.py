# The MicroPython firmware's start: pick the board, load config.json, run the firmware.
# main.py at the flash root (the A/B loader) calls main() once it has put the slot to run
# first on sys.path.
#
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

    _recover(board.config_path)
    try:
        return load(board.config_path, board.needs_wifi, board.profile)
    except ConfigError as e:
        print("CONFIG ERROR: %s" % e)
        print("Fix config.json (e.g. with the flash tool) and reset; the REPL stays available.")
        return None


def _recover(path):
    """Finish or drop a replacement of the config file that a reset cut short."""
    from sensorfw.core.config_store import recover

    done = recover(path)
    unload("sensorfw.core.config_store")
    if done:
        print("config: an interrupted change of %s was found: %s" % (path, done))


def main(slot="", trial=False, ota=None):
    """Run the firmware of `slot` ("" = the flash root; trial: not confirmed yet; ota: the
    loader's state from ota.json, None without one)."""
    board = make_board()
    cfg = load_config(board)
    if cfg is None:
        unload("sensorfw.core.config")
        return None
    from sensorfw.start import run

    return run(board, cfg, "config.json", (slot, trial, ota) if ota is not None else None)
