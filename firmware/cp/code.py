# CircuitPython entry point: pick the board profile, read settings.toml, run the firmware.
#
# On a board, CircuitPython runs this file from CIRCUITPY with lib/ (sensorfw,
# shared_protocol, the pinned Adafruit libraries) on sys.path. On the unix port
# (sys.platform == "linux") the CircuitPython simulation board is used:
#   MICROPYPATH=firmware/cpsim:firmware:<repo root>:.cache/cp-lib micropython firmware/cp/code.py
# A bad setting or a drive the code cannot write prints one message and returns, so the
# board stays reachable (REPL, USB drive) instead of crash-looping.

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


def writable():
    """The code may write CIRCUITPY only after boot.py remounted it (then the USB host
    may not): the offline queue and the sequence lease live there."""
    import storage

    return not storage.getmount("/").readonly


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


def main():
    try:
        board = make_board()
    except OSError as e:
        print("BOARD ERROR: %s" % e)
        return None
    if not writable():
        print("DRIVE ERROR: CIRCUITPY is read-only to this code, so the offline queue cannot")
        print("be kept. boot.py gives the code write access unless the USB-write pin is held")
        print("at reset (docs/circuitpython.md); press reset without holding it.")
        return None
    cfg = load_config(board)
    if cfg is None:
        unload("sensorfw.core.config")
        return None
    from sensorfw.start import run

    return run(board, cfg, "settings.toml")


main()
