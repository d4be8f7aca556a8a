"""A real software TPM 2.0 (Debian's ``swtpm``) for the tests, on free loopback ports.

Each instance has its own state directory, so its seeds, and hence its storage key, are its own:
a key or a sealed blob made by one instance cannot be loaded by another, as with two real TPMs.
The TPM is powered on and started up by swtpm itself (``--flags not-need-init,startup-clear``).
Clients reach it with the TCTI string :attr:`Swtpm.tcti` (the ``swtpm`` TCTI of libtss2 talks to
the command port and, for power and locality, to the control port right after it).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.support.waiting import wait_until
from tools.mosquitto import port_open

SWTPM = shutil.which("swtpm") or "/usr/bin/swtpm"


class SwtpmError(RuntimeError):
    """swtpm could not be started."""


def _two_free_ports(host: str) -> int:
    """A port P such that P and P + 1 are both free (the command and the control port)."""
    for _ in range(50):
        with socket.socket() as a, socket.socket() as b:
            a.bind((host, 0))
            port = int(a.getsockname()[1])
            if port >= 65535:
                continue
            try:
                b.bind((host, port + 1))
            except OSError:
                continue
            return port
    raise SwtpmError("no two adjacent free loopback ports")


class Swtpm:
    """``swtpm socket --tpm2`` in a child process; stopped by its pid."""

    def __init__(self, workdir: Path, host: str = "127.0.0.1") -> None:
        self.dir = Path(workdir)
        self.state_dir = self.dir / "state"
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.host = host
        self.port = _two_free_ports(host)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def tcti(self) -> str:
        return f"swtpm:host={self.host},port={self.port}"

    def start(self, timeout: float = 10.0) -> Self:
        if not Path(SWTPM).exists():
            raise SwtpmError("swtpm is not installed: `tools/setup_tpm.sh --test` installs it")
        log = self.dir / "swtpm.log"
        cmd = [
            SWTPM,
            "socket",
            "--tpm2",
            "--server",
            f"type=tcp,port={self.port},bindaddr={self.host}",
            "--ctrl",
            f"type=tcp,port={self.port + 1},bindaddr={self.host}",
            "--tpmstate",
            f"dir={self.state_dir}",
            "--flags",
            "not-need-init,startup-clear",
            "--log",
            f"file={log},level=1",
        ]
        with open(self.dir / "stderr.log", "ab") as err:
            self.proc = subprocess.Popen(cmd, stdout=err, stderr=err)

        def listening() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise SwtpmError(f"swtpm exited with {self.proc.returncode}: {(self.dir / 'stderr.log').read_text()}")
            # The control port: a probe on the command port would take swtpm's only client slot.
            return port_open(self.host, self.port + 1)

        try:
            wait_until(listening, timeout, f"swtpm's control port {self.host}:{self.port + 1}")
        except TimeoutError as exc:
            self.stop()
            raise SwtpmError(str(exc)) from None
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
