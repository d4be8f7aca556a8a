"""``python -m tools.vboard --flash DIR``: run a virtual board and print its serial port path."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from tools.vboard.board import VirtualBoard, VirtualBoardError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.vboard",
        description="Run the MicroPython unix port as a board on a pseudo-terminal. "
        "Connect with: mpremote connect <printed path>",
    )
    parser.add_argument("--flash", required=True, help="directory used as the board's flash")
    parser.add_argument(
        "--heapsize", help="MicroPython heap size, e.g. 256k (the firmware needs about 184k on the 64-bit unix port)"
    )
    parser.add_argument("--micropython", help="unix-port binary (default: the venv's)")
    parser.add_argument("--no-main", action="store_true", help="do not run main.py at boot (REPL only)")
    args = parser.parse_args(argv)
    board = VirtualBoard(
        args.flash,
        micropython=args.micropython,
        heapsize=args.heapsize,
        run_main=not args.no_main,
    )
    try:
        board.start()
    except VirtualBoardError as exc:
        print(f"vboard: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print(board.port, flush=True)
    print(f"vboard: flash {board.flash_dir}; Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        done.wait()
    finally:
        board.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
