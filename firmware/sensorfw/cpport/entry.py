# The CircuitPython firmware's start: pick the board profile, read settings.toml, run the
# firmware. code.py at the drive's root (the A/B loader, otaslots.py) calls main() once it
# has put the lib/ folder of the slot to run first on sys.path.
#
# A bad setting prints one message and returns, so the board stays reachable (REPL, USB
# drive) instead of crash-looping.

import os
import sys

from sensorfw import unload

PROFILES = {"raspberry_pi_pico_w": "cp_pico_w"}  # board.board_id -> boards/<profile>.py


def profile_name():
    """EDGELINE_BOARD in settings.toml, else from board.board_id."""
    name = os.getenv("EDGELINE_BOARD")
    if name:
        return name
    import board

    bid = board.board_id
    if bid in PROFILES:
        return PROFILES[bid]
    if "esp32s3" in bid:
        return "cp_esp32s3"
    raise OSError("no board profile for %r: set EDGELINE_BOARD in settings.toml (cp_pico_w, cp_esp32s3)" % bid)


def make_board():
    name = profile_name()
    if name not in ("cp_pico_w", "cp_esp32s3"):
        raise OSError("EDGELINE_BOARD = %r: use cp_pico_w or cp_esp32s3" % name)
    profile = __import__("sensorfw.boards." + name, None, None, ("NAME",))
    if sys.platform == "linux":
        from sensorfw.boards.cp_sim import SimBoard

        return SimBoard(profile)
    from sensorfw.cpport.board import Board

    return Board(profile)


def load_config(board):
    from sensorfw.core.config import ConfigError
    from sensorfw.core.config_store import recover
    from sensorfw.cpport.settings import load

    if recover(board.config_path):  # a change of settings.toml that a reset cut short
        print("settings.toml: an interrupted change was finished or dropped")
    unload("sensorfw.core.config_store")
    try:
        return load(os.getenv, board.flash_dir or "/", board.needs_wifi, board.profile)
    except ConfigError as e:
        print("CONFIG ERROR: %s" % e)
        print("Fix settings.toml (e.g. with the flash tool) and save: the board restarts.")
        return None


def main(slot="", trial=False, ota=None):
    """Run the firmware of `slot` ("" = the drive's root; trial: not confirmed yet; ota:
    the loader's state from ota.json, None without one)."""
    try:
        board = make_board()
    except OSError as e:
        print("BOARD ERROR: %s" % e)
        return None
    cfg = load_config(board)
    if cfg is None:
        unload("sensorfw.core.config")
        return None
    from sensorfw.start import run

    return run(board, cfg, "settings.toml", (slot, trial, ota) if ota is not None else None)
