"""The virtual board: the unix port behind a pty, driven by the real mpremote."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import serial

from tools.vboard import VirtualBoard

MPREMOTE = [sys.executable, "-m", "mpremote"]

COUNT_BOOTS = """\
with open("boots.txt", "a") as f:
    f.write("boot\\n")
print("main.py ran")
"""


def mpremote(port: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MPREMOTE, "connect", port, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def boots(flash: Path) -> int:
    path = flash / "boots.txt"
    return path.read_text().count("boot") if path.exists() else 0


class Console:
    """A terminal on the board's serial port: read up to a marker, keep the rest."""

    def __init__(self, port: serial.Serial) -> None:
        self.port = port
        self.buf = b""

    def write(self, data: bytes) -> None:
        self.port.write(data)

    def read_until(self, needle: bytes, timeout: float = 10) -> bytes:
        end = time.monotonic() + timeout
        while needle not in self.buf and time.monotonic() < end:
            self.buf += self.port.read(self.port.in_waiting or 1)
        assert needle in self.buf, self.buf
        cut = self.buf.index(needle) + len(needle)
        out, self.buf = self.buf[:cut], self.buf[cut:]
        return out

    def settle(self) -> None:
        """Wait for the REPL prompt after Ctrl-C, dropping what the board printed before it
        (a later read_until passes over any further prompts)."""
        self.read_until(b">>> ")


def test_mpremote_execs_and_copies_files(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(COUNT_BOOTS)
    local = tmp_path / "hello.txt"
    local.write_text("hello board\n")
    with VirtualBoard(flash) as board:
        assert board.wait_for_output(b"main.py ran")
        result = mpremote(
            board.port,
            "exec",
            "import os, sys; print(sorted(os.listdir()), sys.path[-1])",
            "+",
            "fs",
            "cp",
            str(local),
            ":hello.txt",
        )
        assert result.returncode == 0, result.stderr
        assert "['boots.txt', 'main.py']" in result.stdout
        assert result.stdout.split("\n")[0].endswith(str(flash.resolve() / "lib"))  # like a board's /lib
        assert (flash / "hello.txt").read_text() == "hello board\n"
        # mpremote soft-resets in the raw REPL: a fresh interpreter, main.py not run (as on a board)
        assert board.reboots == 1
        assert boots(flash) == 1


def test_soft_reboot_from_friendly_repl_runs_main_py(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(COUNT_BOOTS)
    (flash / "boot.py").write_text("print('boot.py ran')\n")
    with VirtualBoard(flash) as board, serial.Serial(board.port, 115200, timeout=0.1) as port:
        con = Console(port)
        assert board.wait_for_output(b"main.py ran")
        con.write(b"\r\x03")
        con.settle()
        con.write(b"x = 42\r")
        con.read_until(b"x = 42\r\n>>> ")
        con.write(b"\x04")  # Ctrl-D on an empty line: soft reboot
        out = con.read_until(b">>> ")
        assert b"MPY: soft reboot" in out
        assert out.index(b"boot.py ran") < out.index(b"main.py ran")
        assert boots(flash) == 2
        con.write(b"print(x)\r")  # the heap was cleared
        assert b"NameError" in con.read_until(b">>> ")
        # raw REPL: Ctrl-D on an empty line reboots into the raw REPL, without main.py
        con.write(b"\x01")
        con.read_until(b"raw REPL; CTRL-B to exit\r\n>")
        con.write(b"\x04")
        out = con.read_until(b"raw REPL; CTRL-B to exit\r\n>")
        assert b"soft reboot\r\n" in out
        assert boots(flash) == 2
        con.write(b"print(6 * 7)\x04")
        assert b"OK42" in con.read_until(b"\x04>")
        assert board.reboots == 2


def test_ctrl_c_interrupts_a_running_main_py(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text("import time\nprint('looping')\nwhile True:\n    time.sleep_ms(5)\n")
    with VirtualBoard(flash) as board:
        assert board.wait_for_output(b"looping")
        result = mpremote(board.port, "exec", "print('interrupted main.py')")
        assert result.returncode == 0, result.stderr
        assert "interrupted main.py" in result.stdout
        assert b"KeyboardInterrupt" in board.transcript()


def test_an_exiting_interpreter_reboots_and_a_crash_loop_stops(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(COUNT_BOOTS + "import sys\nsys.exit(1)\n")
    with VirtualBoard(flash) as board:
        assert board.wait_for_output(b"main.py keeps exiting")
        runs = boots(flash)
        assert runs == 3  # then main.py is no longer run and the REPL stays reachable
        result = mpremote(board.port, "exec", "print(1 + 1)")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "2"
        assert boots(flash) == runs


def test_command_line_prints_the_port(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    with subprocess.Popen(
        [sys.executable, "-m", "tools.vboard", "--flash", str(flash), "--heapsize", "110k"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    ) as proc:
        try:
            assert proc.stdout is not None
            port = proc.stdout.readline().strip()
            assert port.startswith("/dev/pts/"), port
            result = mpremote(port, "exec", "import gc; print(gc.mem_free() + gc.mem_alloc())")
            assert result.returncode == 0, result.stderr
            assert int(result.stdout.strip()) <= 110 * 1024
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0


def test_ctrl_c_is_a_byte_when_the_program_disabled_it(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    with VirtualBoard(flash) as board, serial.Serial(board.port, 115200, timeout=0.1) as port:
        con = Console(port)
        con.write(b"\r\x01")
        con.read_until(b"raw REPL; CTRL-B to exit\r\n>")
        con.write(
            b"import micropython, sys\nmicropython.kbd_intr(-1)\nprint('ready')\nprint(sys.stdin.buffer.read(1))\x04"
        )
        con.read_until(b"ready")
        con.write(b"\x03")
        assert b"b'\\x03'" in con.read_until(b"\x04>")
        assert board.reboots == 0  # the interpreter was not killed by the signal
