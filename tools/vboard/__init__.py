"""Virtual board: the MicroPython unix port behind a pty, speaking the REPL like a real board."""

from __future__ import annotations

from tools.vboard.board import VirtualBoard, VirtualBoardError, find_micropython

__all__ = ["VirtualBoard", "VirtualBoardError", "find_micropython"]
