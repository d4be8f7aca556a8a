"""A connected board, through mpremote's serial transport (the real one, used as a library).

Every path given to the board is relative: on a board the current directory is the flash
root, so ``lib/x.py`` is ``/lib/x.py``; on the virtual board (tools/vboard) it is the flash
directory, and an absolute path would name the host's file system.
"""

from __future__ import annotations

import ast
import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from tools.flash.errors import FlashError

BOARD_MANIFEST = "edgeline-manifest.json"
BOARD_MANIFEST_FORMAT = 1
#: bytes per read command; mpremote's own default
CHUNK_SIZE = 256
#: bytes per write command when the board has binascii: sent as base64 (4/3 of the size,
#: where mpremote's repr() of .mpy data is 2-4x); 684 characters for the board to hold
WRITE_CHUNK = 512

# One line per entry so a board never builds a large string. Directories get size -1.
# os.stat() for the size: the unix port's ilistdir() gives no size field.
_WALK = """\
import os
def _el_walk(d):
    for e in os.ilistdir(d or '.'):
        p = d + '/' + e[0] if d else e[0]
        if e[1] & 0x4000:
            print(repr((p, -1)))
            _el_walk(p)
        else:
            print(repr((p, os.stat(p)[6])))
_el_walk('')
del _el_walk
"""

_INFO = """\
import sys
print(repr((sys.platform, getattr(sys.implementation, '_mpy', 0), \
'.'.join(str(v) for v in sys.implementation.version[:3]), sys.implementation.name)))
"""

#: MicroPython native architecture codes (bits 10.. of sys.implementation._mpy)
MPY_ARCH_NAMES = (
    "none",
    "x86",
    "x64",
    "armv6",
    "armv6m",
    "armv7m",
    "armv7em",
    "armv7emsp",
    "armv7emdp",
    "xtensa",
    "xtensawin",
    "rv32imc",
    "rv64imc",
)


@dataclass(frozen=True)
class BoardInfo:
    platform: str  # sys.platform: "esp32", "rp2", "linux" (unix port / virtual board)
    mpy: int  # sys.implementation._mpy
    version: str  # MicroPython version, e.g. "1.29.0"
    implementation: str  # "micropython" or "circuitpython"

    @property
    def mpy_version(self) -> tuple[int, int]:
        """(.mpy format version, sub-version) the board loads."""
        return self.mpy & 0xFF, (self.mpy >> 8) & 3

    @property
    def arch(self) -> str:
        code = self.mpy >> 10
        return MPY_ARCH_NAMES[code] if code < len(MPY_ARCH_NAMES) else f"arch{code}"


def _fail(action: str, port: str, exc: BaseException) -> FlashError:
    detail = str(exc).strip().splitlines()
    last = detail[-1] if detail else type(exc).__name__
    return FlashError(f"{action} on {port} failed: {last}")


class Board:
    """A board reached over a serial port, in the raw REPL while connected."""

    def __init__(self, port: str, transport: Any) -> None:
        self.port = port
        self.transport = transport
        self._base64: bool | None = None  # whether the board has binascii.a2b_base64

    @classmethod
    def connect(cls, port: str, *, soft_reset: bool = True) -> Board:
        """Open ``port``, stop whatever runs (Ctrl-C), enter the raw REPL.

        ``soft_reset`` (mpremote's default) restarts the interpreter so the deploy runs on a
        clean heap, without running main.py.
        """
        try:
            transport = SerialTransport(port, baudrate=115200)
        except TransportError as exc:
            raise FlashError(
                f"cannot open {port}: {exc}. Check the port name (mpremote connect list), "
                "that the board is plugged in, and that no other program (a serial monitor, "
                "Thonny, another mpremote) holds the port"
            ) from None
        if transport.is_pty:
            # mpremote reads a pty (a virtual board) without checking for waiting bytes, so
            # a read blocks until data comes; a timeout keeps a silent board from hanging us.
            transport.serial.timeout = 10
        board = cls(port, transport)
        try:
            transport.enter_raw_repl(soft_reset=soft_reset)
        except TransportError as exc:
            transport.close()
            raise FlashError(
                f"no MicroPython raw REPL on {port} ({exc}). Is MicroPython flashed on the "
                "board (see docs/flashing.md)? A program that disabled Ctrl-C may need a "
                "reset: press the board's reset button and retry"
            ) from None
        return board

    def close(self) -> None:
        try:
            if self.transport.in_raw_repl:
                self.transport.exit_raw_repl()
        except OSError:
            pass
        self.transport.close()

    # ----------------------------------------------------------------- queries

    def exec(self, code: str) -> bytes:
        try:
            out = self.transport.exec(code)
        except TransportError as exc:
            raise _fail("running code", self.port, exc) from None
        return bytes(out)

    def info(self) -> BoardInfo:
        platform, mpy, version, name = ast.literal_eval(self.exec(_INFO).decode().strip())
        return BoardInfo(str(platform), int(mpy), str(version), str(name))

    def listing(self) -> dict[str, int]:
        """Every file and directory on the board: path -> size (-1 for a directory)."""
        out: dict[str, int] = {}
        for raw in self.exec(_WALK).decode().splitlines():
            line = raw.strip()
            if line:
                path, size = ast.literal_eval(line)
                out[str(path)] = int(size)
        return out

    def read(self, path: str) -> bytes:
        try:
            return bytes(self.transport.fs_readfile(path, chunk_size=CHUNK_SIZE))
        except (TransportError, OSError) as exc:
            raise _fail(f"reading {path}", self.port, exc) from None

    def sha256(self, path: str) -> str:
        """sha256 of a file, computed on the board (read back where it has no hashlib)."""
        try:
            return bytes(self.transport.fs_hashfile(path, "sha256")).hex()
        except (TransportError, OSError) as exc:
            raise _fail(f"hashing {path}", self.port, exc) from None

    def manifest(self, listing: dict[str, int]) -> dict[str, Any]:
        """The deploy manifest this tool left on the board ({} when there is none)."""
        if BOARD_MANIFEST not in listing:
            return {}
        try:
            doc = json.loads(self.read(BOARD_MANIFEST))
        except ValueError:
            return {}  # a torn manifest: every file is then treated as unknown and rewritten
        if not isinstance(doc, dict) or doc.get("format") != BOARD_MANIFEST_FORMAT:
            return {}
        return doc

    # ----------------------------------------------------------------- changes

    def mkdir(self, path: str) -> None:
        try:
            self.transport.fs_mkdir(path)
        except (TransportError, OSError) as exc:
            raise _fail(f"creating directory {path}", self.port, exc) from None

    def remove(self, path: str) -> None:
        try:
            self.transport.fs_rmfile(path)
        except (TransportError, OSError) as exc:
            raise _fail(f"removing {path}", self.port, exc) from None

    def write(self, path: str, data: bytes) -> None:
        """Write via a temporary name and rename: a reset mid-write never leaves half a file
        under the real name."""
        part = path + ".part"
        try:
            if self._base64 is None:
                try:
                    self.transport.exec("from binascii import a2b_base64")
                    self._base64 = True
                except TransportExecError:
                    self._base64 = False
            if self._base64:
                self._write_base64(part, data)
            else:
                self.transport.fs_writefile(part, data, chunk_size=CHUNK_SIZE)
            self.exec(f"import os\nos.rename({part!r}, {path!r})")
        except (TransportError, OSError) as exc:
            raise _fail(f"writing {path}", self.port, exc) from None

    def _write_base64(self, path: str, data: bytes) -> None:
        self.transport.exec(f"from binascii import a2b_base64 as _el_d\n_el_f = open({path!r}, 'wb')")
        for offset in range(0, len(data), WRITE_CHUNK):
            text = base64.b64encode(data[offset : offset + WRITE_CHUNK]).decode("ascii")
            self.transport.exec(f"_el_f.write(_el_d('{text}'))")
        self.transport.exec("_el_f.close()\ndel _el_f, _el_d")

    def soft_reset_and_run(self, *, follow_s: float = 0.0, out: Callable[[bytes], None] | None = None) -> bool:
        """Leave the raw REPL and soft-reset from the friendly REPL, so main.py runs.

        Returns whether the board confirmed the reboot. With ``follow_s`` the board's output
        is passed to ``out`` for that many seconds.
        """
        transport = self.transport
        try:
            transport.exit_raw_repl()
            transport.read_until(1, b">>> ", timeout=5)
            transport.serial.write(b"\x04")
            seen = transport.read_until(1, b"soft reboot\r\n", timeout=5)
        except (TransportError, OSError) as exc:
            raise _fail("soft reset", self.port, exc) from None
        ok = bool(seen.endswith(b"soft reboot\r\n"))
        if follow_s > 0 and out is not None:
            end = time.monotonic() + follow_s
            while time.monotonic() < end:
                waiting = transport.serial.in_waiting
                if waiting:
                    out(bytes(transport.serial.read(waiting)))
                else:
                    time.sleep(0.05)
        return ok

    def mip_install(self, package: str, *, index: str | None = None) -> None:
        """``mpremote mip install [--index URL] <package>`` through this connection.

        The host downloads from micropython-lib (or ``index``, e.g. a local mirror) and
        writes the files into the board's lib directory. Only for ``--umqtt-mip``: by
        default the libraries come pinned, in the build.
        """
        from mpremote.commands import CommandError
        from mpremote.main import State as MpremoteState
        from mpremote.main import argparse_mip
        from mpremote.mip import do_mip

        state = MpremoteState()
        state.transport = self.transport
        state._auto_soft_reset = False  # already in the raw REPL on a clean heap
        argv = ["install", package] if index is None else ["--index", index, "install", package]
        args = argparse_mip().parse_args(argv)
        hint = (
            "The host downloads it from the internet (or --mip-index URL). Without --umqtt-mip "
            "the pinned umqtt.simple (the one the tests run) is installed from the local archive, "
            "with no network"
        )
        try:
            do_mip(state, args)
        except CommandError as exc:
            raise FlashError(f"mip install {package} failed: {exc}. {hint}") from None
        except (TransportError, OSError) as exc:
            raise FlashError(f"mip install {package} on {self.port} failed: {exc}. {hint}") from None
