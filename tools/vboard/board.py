"""A virtual MicroPython board: the unix port behind a pseudo-terminal.

The host side is a pty whose slave path (``/dev/pts/N``) behaves like a board's USB serial
port: mpremote (or any terminal) opens it and talks to the friendly or raw REPL. Behind it
the supervisor runs ``micropython -i`` in the flash directory on a second pty, in raw mode.

What the unix port does not do by itself is done here:

* **Ctrl-C.** A board turns Ctrl-C into ``KeyboardInterrupt`` while code runs and reads it
  as a byte otherwise (at the prompt, or after ``micropython.kbd_intr(-1)``). The unix port
  catches SIGINT only while it runs code; at other times SIGINT would kill it. So the
  supervisor sends SIGINT when the interpreter has a SIGINT handler installed (Linux
  ``/proc/<pid>/status``, ``SigCgt``) and passes the byte on otherwise.
* **Soft reboot.** Ctrl-D on an empty friendly prompt makes the unix port exit, and Ctrl-D on
  an empty raw-REPL line makes it print ``OK`` and wait for a cooked line. The supervisor
  intercepts both and restarts the interpreter instead: ``MPY: soft reboot``, a fresh heap,
  ``boot.py`` then (friendly REPL only, as on the rp2 and esp32 ports) ``main.py``. After a
  reboot from the raw REPL the new interpreter is put back into the raw REPL, which is what
  mpremote waits for.
* **SystemExit out of main.py** (``sys.exit()``, ``machine.soft_reset()``) and any exit of
  the interpreter process reboot it the same way (back into the raw REPL when that was the
  mode). A ``main.py`` that exits again and again within a second is not run after the
  third time, so the REPL stays reachable.
* **Paths.** The working directory is the flash root, and ``sys.path`` is
  ``['', '.frozen', '<flash>/lib']`` like a board's ``['', '.frozen', '/lib']`` (absolute so
  that mpremote's ``mip`` finds a ``.../lib`` entry and installs into the flash directory).

Known differences from a board: ``print`` writes ``\\n`` rather than ``\\r\\n``; absolute
paths (``/lib/x``) name the host's file system, so tools must use relative paths (mpremote
``cp x :lib/x``); there is no ``machine.Pin`` and no network interface.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import termios
import threading
import time
import tty
from pathlib import Path
from types import TracebackType

CTRL_A = 0x01
CTRL_B = 0x02
CTRL_C = 0x03
CTRL_D = 0x04

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n>"
RAW_DONE = b"\x04>"  # end of a raw-REPL command: both EOF markers, then the prompt
FRIENDLY_PROMPT = b">>> "
SOFT_REBOOT = b"MPY: soft reboot\r\n"

_TAIL = 64  # bytes of child output kept to recognise prompts across reads
_PENDING_LIMIT = 1 << 16  # output kept for a slow or absent reader, like a UART FIFO (bytes)
_TRANSCRIPT_LIMIT = 1 << 20
_CRASH_WINDOW_S = 1.0
_CRASH_LIMIT = 3

# The bootstrap announces itself with MARKER_UP: from then on a Ctrl-C from the host becomes
# KeyboardInterrupt; before it (interpreter start-up) host input is held back.
_BOOTSTRAP = """\
import sys
sys.stdout.write("\\x1b]vboard;up\\x07")
def _vboard_run(name):
    try:
        f = open(name)
    except OSError:
        return
    with f:
        src = f.read()
    exec(compile(src, name, "exec"), globals())
try:
    _vboard_run("boot.py")
except Exception as e:
    sys.print_exception(e)
{main}
"""
# On a board, SystemExit out of main.py (sys.exit(), machine.soft_reset()) soft-resets it;
# the unix port would drop to its REPL instead, so main.py's SystemExit prints this marker
# (an OSC escape that terminals ignore) and the supervisor reboots the interpreter.
MARKER_PREFIX = b"\x1b]vboard;"
MARKER_END = b"\x07"
MARKER_UP = b"up"
MARKER_REBOOT = b"reboot"
_RUN_MAIN = """\
try:
    _vboard_run("main.py")
except SystemExit:
    sys.stdout.write("\\x1b]vboard;reboot\\x07")
"""


class VirtualBoardError(RuntimeError):
    """The virtual board could not be started or used."""


def find_micropython() -> str:
    """The unix-port binary: next to this interpreter (the project's venv), else on PATH."""
    beside = Path(sys.executable).parent / "micropython"
    if beside.is_file():
        return str(beside)
    found = shutil.which("micropython")
    if found is None:
        raise VirtualBoardError(
            "micropython (unix port) not found next to the Python interpreter or on PATH: "
            "run tools/setup.sh, or pass micropython=PATH"
        )
    return found


def _child_termios(fd: int) -> None:
    """Raw: no echo, no line editing, no output translation, no signals from the tty driver
    (the unix port switches to its own raw mode for REPL input and back to this one)."""
    attrs = termios.tcgetattr(fd)
    attrs[0] = 0  # iflag
    attrs[1] = 0  # oflag
    attrs[3] = 0  # lflag
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def _catches_sigint(pid: int) -> bool:
    """Whether process ``pid`` has a SIGINT handler installed (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signal.SIGINT - 1) & 1)
    except (OSError, ValueError):
        pass
    return False


def _set_nonblocking(fd: int) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)


class VirtualBoard:
    """The unix port as a board on a pty. Use as a context manager or call start()/stop().

    ``port`` is the path to hand to ``mpremote connect``. ``reboots`` counts interpreter
    restarts, ``bytes_from_host`` / ``bytes_to_host`` the serial traffic; ``transcript()`` returns what the interpreter printed (bounded), and
    ``wait_for_output(b"...")`` waits until something appears in it.
    """

    def __init__(
        self,
        flash_dir: str | os.PathLike[str],
        *,
        micropython: str | None = None,
        heapsize: str | None = None,
        run_main: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        self.flash_dir = Path(flash_dir).resolve()
        self.micropython = micropython or find_micropython()
        self.heapsize = heapsize
        self.run_main = run_main
        self._env = dict(os.environ if env is None else env)
        self._env["MICROPYPATH"] = ":.frozen:" + str(self.flash_dir / "lib")
        self.reboots = 0
        self.bytes_from_host = 0  # serial traffic, as a UART would carry it
        self.bytes_to_host = 0
        self._host_master = -1
        self._host_slave = -1
        self._child_master = -1
        self._child: subprocess.Popen[bytes] | None = None
        self._child_started = 0.0
        self._quick_exits = 0
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._to_host = bytearray()
        self._to_child = bytearray()
        self._tail = b""
        self._held = b""
        self._ready = False
        self._held_input = bytearray()
        self._prompt: str | None = None  # "raw" / "friendly" when idle at an empty prompt
        self._mode = "friendly"  # REPL mode last seen: what a reboot returns to
        self._raw_restart = False  # swallow the banner of a restarted child, then Ctrl-A
        self._lock = threading.Condition()
        self._transcript = bytearray()
        self._port = ""
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ public API

    @property
    def port(self) -> str:
        if not self._port:
            raise VirtualBoardError("virtual board not started")
        return self._port

    def start(self) -> VirtualBoard:
        if not self.flash_dir.is_dir():
            raise VirtualBoardError(f"flash directory {self.flash_dir} does not exist")
        self._host_master, self._host_slave = pty.openpty()
        tty.setraw(self._host_slave)
        _set_nonblocking(self._host_master)
        self._port = os.ttyname(self._host_slave)
        self._wake_r, self._wake_w = os.pipe()
        self._spawn(run_main=self.run_main)
        self._thread = threading.Thread(target=self._loop, name="vboard", daemon=True)
        self._thread.start()
        with self._lock:
            if not self._lock.wait_for(lambda: self._ready or self._error is not None, timeout=30):
                self.stop()
                raise VirtualBoardError(f"{self.micropython} did not start within 30 s")
        return self

    def stop(self) -> None:
        self._stopping = True
        if self._wake_w >= 0:
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._kill_child()
        for fd in (self._host_master, self._host_slave, self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._host_master = self._host_slave = self._wake_r = self._wake_w = -1

    def __enter__(self) -> VirtualBoard:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def transcript(self) -> bytes:
        """Everything the interpreter printed (the last MiB), including reboot notices."""
        with self._lock:
            return bytes(self._transcript)

    def wait_for_output(self, needle: bytes, timeout: float = 10.0, *, start: int = 0) -> bool:
        """Wait until ``needle`` appears in the transcript after offset ``start``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while needle not in self._transcript[start:]:
                left = deadline - time.monotonic()
                if left <= 0 or self._error is not None:
                    return False
                self._lock.wait(left)
            return True

    def wait_for_reboots(self, count: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.reboots < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True

    # ------------------------------------------------------------------ child process

    def _spawn(self, *, run_main: bool) -> None:
        master, slave = pty.openpty()
        _child_termios(slave)
        args = [self.micropython]
        if self.heapsize:
            args += ["-X", "heapsize=" + self.heapsize]
        code = _BOOTSTRAP.format(main=_RUN_MAIN if run_main else "")
        args += ["-i", "-c", code]
        try:
            self._child = subprocess.Popen(
                args,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=self.flash_dir,
                env=self._env,
                start_new_session=True,  # signals for our terminal do not reach it
                close_fds=True,
            )
        finally:
            os.close(slave)
        _set_nonblocking(master)
        self._child_master = master
        self._child_started = time.monotonic()
        self._tail = b""
        self._held = b""
        self._ready = False
        self._prompt = None
        self._to_child.clear()

    def _kill_child(self) -> None:
        child, self._child = self._child, None
        if child is not None and child.poll() is None:
            child.kill()
        if child is not None:
            child.wait()
        if self._child_master >= 0:
            os.close(self._child_master)
            self._child_master = -1

    def _reboot(self, *, raw: bool, notice: bytes, run_main: bool) -> None:
        self._kill_child()
        self._mode = "raw" if raw else "friendly"
        self._emit(notice)
        self._spawn(run_main=run_main and not raw)
        self._raw_restart = raw
        with self._lock:
            self.reboots += 1
            self._lock.notify_all()

    def _child_exited(self) -> None:
        """The interpreter ended on its own: reboot it like a board resetting."""
        child = self._child
        if child is not None and child.poll() is None:  # asked to reboot by MARKER_REBOOT
            child.kill()
        code = child.wait() if child is not None else 0
        lived = time.monotonic() - self._child_started
        self._quick_exits = self._quick_exits + 1 if lived < _CRASH_WINDOW_S else 0
        run_main = self.run_main and code != -signal.SIGINT
        if self._quick_exits >= _CRASH_LIMIT:
            run_main = False
            self._emit(b"\r\nvboard: main.py keeps exiting the interpreter; not running it at boot\r\n")
        if self._mode == "raw":
            self._reboot(raw=True, notice=b"\r\n" + SOFT_REBOOT, run_main=False)
        else:
            self._reboot(raw=False, notice=b"\r\n" + SOFT_REBOOT, run_main=run_main)

    # ------------------------------------------------------------------ I/O loop

    def _emit(self, data: bytes) -> None:
        """Queue output for the host and record it in the transcript."""
        self._to_host += data
        if len(self._to_host) > _PENDING_LIMIT:  # nobody reads: drop the oldest, like a FIFO
            del self._to_host[: len(self._to_host) - _PENDING_LIMIT]
        with self._lock:
            self._transcript += data
            if len(self._transcript) > _TRANSCRIPT_LIMIT:
                del self._transcript[: len(self._transcript) - _TRANSCRIPT_LIMIT]
            self._lock.notify_all()

    def _from_child(self, data: bytes) -> None:
        """Strip the bootstrap's markers out of the child's output and act on them."""
        data = self._held + data
        self._held = b""
        while data:
            start = data.find(MARKER_PREFIX)
            if start < 0:
                # keep back a tail that may be the beginning of a marker
                cut = data.rfind(b"\x1b", max(0, len(data) - len(MARKER_PREFIX) + 1))
                if cut >= 0 and MARKER_PREFIX.startswith(data[cut:]):
                    data, self._held = data[:cut], data[cut:]
                self._from_child_text(data)
                return
            end = data.find(MARKER_END, start)
            if end < 0:
                self._from_child_text(data[:start])
                self._held = data[start:]
                return
            self._from_child_text(data[:start])
            word = data[start + len(MARKER_PREFIX) : end]
            data = data[end + len(MARKER_END) :]
            if word == MARKER_REBOOT:
                self._child_exited()
                return
            if word == MARKER_UP:
                with self._lock:
                    self._ready = True
                    self._lock.notify_all()
                held, self._held_input = bytes(self._held_input), bytearray()
                if held:
                    self._from_host(held)

    def _from_child_text(self, data: bytes) -> None:
        if not data:
            return
        if self._raw_restart:
            # A reboot from the raw REPL: hide the friendly banner, then re-enter raw mode.
            self._tail = (self._tail + data)[-_TAIL:]
            if self._tail.endswith(FRIENDLY_PROMPT):
                self._raw_restart = False
                self._tail = b""
                self._to_child.append(CTRL_A)
            return
        self._tail = (self._tail + data)[-_TAIL:]
        if self._tail.endswith(RAW_BANNER) or self._tail.endswith(RAW_DONE):
            self._prompt = self._mode = "raw"
        elif self._tail.endswith(FRIENDLY_PROMPT):
            self._prompt = self._mode = "friendly"
        else:
            self._prompt = None
        self._emit(data)

    def _from_host(self, data: bytes) -> None:
        if not self._ready:  # the interpreter is starting: hold input, as a UART FIFO would
            self._held_input += data
            del self._held_input[:-_PENDING_LIMIT]
            return
        start = 0
        for i, byte in enumerate(data):
            prompt = self._prompt
            if byte == CTRL_D and prompt is not None:
                self._to_child += data[start:i]
                start = i + 1
                if prompt == "raw":
                    self._reboot(raw=True, notice=b"OK\r\n" + SOFT_REBOOT, run_main=False)
                else:
                    self._reboot(raw=False, notice=b"\r\n" + SOFT_REBOOT, run_main=self.run_main)
                self._quick_exits = 0
            elif byte == CTRL_A and prompt is not None:
                self._prompt = "raw"
            elif byte == CTRL_B and prompt == "raw":
                self._prompt = "friendly"
            elif byte == CTRL_C:
                child = self._child
                if prompt is None and child is not None and _catches_sigint(child.pid):
                    self._to_child += data[start:i]  # code is running: interrupt it
                    start = i + 1
                    os.kill(child.pid, signal.SIGINT)
            else:
                self._prompt = None
        self._to_child += data[start:]

    def _loop(self) -> None:
        try:
            self._run_loop()
        except BaseException as exc:  # surfaced through wait_for_output() returning False
            self._error = exc
            with self._lock:
                self._lock.notify_all()

    def _run_loop(self) -> None:
        while not self._stopping:
            readers = [self._wake_r, self._host_master, self._child_master]
            writers = []
            if self._to_host:
                writers.append(self._host_master)
            if self._to_child:
                writers.append(self._child_master)
            readable, writable, _ = select.select(readers, writers, [], 0.5)
            if self._stopping:
                return
            if self._child_master in readable:
                try:
                    data = os.read(self._child_master, 4096)
                except OSError as exc:  # EIO: every holder of the child's pty is gone
                    if exc.errno not in (errno.EIO, errno.EBADF):
                        raise
                    data = b""
                if data:
                    self._from_child(data)
                else:
                    self._child_exited()
                    continue
            if self._host_master in readable:
                try:
                    data = os.read(self._host_master, 4096)
                except BlockingIOError:
                    data = b""
                if data:
                    self.bytes_from_host += len(data)
                    self._from_host(data)
            if self._host_master in writable and self._to_host:
                try:
                    n = os.write(self._host_master, self._to_host)
                    del self._to_host[:n]
                    self.bytes_to_host += n
                except BlockingIOError:
                    pass
            if self._child_master in writable and self._to_child:
                try:
                    n = os.write(self._child_master, self._to_child)
                    del self._to_child[:n]
                except BlockingIOError:
                    pass
