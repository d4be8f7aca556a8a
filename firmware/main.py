# Board entry point: pick the board, load config.json, run the firmware.
#
# On the unix port (sys.platform == "linux") the simulation board is used:
#   MICROPYPATH=firmware:<repo root>:.cache/upy-lib micropython firmware/main.py
# A bad or missing configuration prints one message naming the key and returns,
# so a real board stays reachable on the REPL instead of crash-looping.

import sys

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
    """Validated configuration, or None after printing what is wrong."""
    from sensorfw.core.config import ConfigError, load

    try:
        return load(board.config_path, board.needs_wifi)
    except ConfigError as e:
        print("CONFIG ERROR: %s" % e)
        print("Fix config.json (e.g. with the flash tool) and reset; the REPL stays available.")
        return None


def _unload(name):
    # free a module only needed at boot (its code lives in RAM on a board)
    sys.modules.pop(name, None)
    pkg, _, leaf = name.rpartition(".")
    parent = sys.modules.get(pkg)
    if parent is not None and leaf in parent.__dict__:
        delattr(parent, leaf)


def main():
    board = make_board()
    cfg = load_config(board)
    _unload("sensorfw.core.config")
    if cfg is None:
        return None
    if board.needs_wifi:
        board.net.configure(cfg["wifi"])
    from sensorfw.core.app import App

    try:
        app = App(board, cfg)
        cfg = None  # the App keeps what it needs; free the rest
    except (OSError, ValueError) as e:
        # e.g. the IMU does not answer: report and stay on the REPL
        print("START ERROR: %s" % e)
        return None
    import gc

    gc.collect()
    app.run()
    return app


if __name__ == "__main__":
    main()
