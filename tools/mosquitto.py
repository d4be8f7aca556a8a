"""A real Mosquitto broker with its own config on a free loopback port, stop/restart on demand.

The broker is never the system service: each instance gets its own directory with a generated
``mosquitto.conf``, an optional password file and ACL, its own persistence file and log.
``stop()`` / ``start()`` keep the port and the persistence, so fault tests can take the broker
away and bring the same one back.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


class BrokerError(RuntimeError):
    """The broker could not be started or stopped."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class BrokerProcess:
    """A broker in a child process, listening on a loopback port that stays the same across
    ``stop()`` / ``start()``. Subclasses say how to run it (``command()``) and where it logs."""

    kind = "broker"

    def __init__(self, workdir: Path, *, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / f"{self.kind}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> Self:
        if self.running:
            return self
        with open(self.dir / "stderr.log", "ab") as stderr:  # the child keeps its own copy
            self.proc = subprocess.Popen(self.command(), stdout=stderr, stderr=stderr)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(
                    f"{self.kind} exited with {self.proc.returncode} on port {self.port}:\n"
                    + (self.dir / "stderr.log").read_text(errors="replace")
                    + self.log_text()
                )
            if port_open(self.host, self.port):
                return self
            time.sleep(0.02)
        self.kill()
        raise BrokerError(f"{self.kind} did not listen on {self.host}:{self.port} within {timeout} s")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM): persistent sessions and retained messages are saved."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        # Wait until the port is really free before anyone restarts on it.
        deadline = time.monotonic() + timeout
        while port_open(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a power cut would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> Self:
        self.stop()
        return self.start()

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state}>"


class Mosquitto(BrokerProcess):
    """One Mosquitto process on 127.0.0.1 with a generated configuration."""

    kind = "mosquitto"

    def __init__(
        self,
        workdir: Path,
        *,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        persistence: bool = True,
        extra_conf: str = "",
        port: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        if not os.path.exists(MOSQUITTO):
            raise BrokerError("mosquitto is not installed: `make test` installs it, or `apt-get install mosquitto`")
        super().__init__(workdir, port=port, host=host)
        self.users = dict(users or {})
        self.acl = acl
        self.persistence = persistence
        self.extra_conf = extra_conf
        self.conf_path = self.dir / "mosquitto.conf"
        self._write_config()

    # -- configuration ---------------------------------------------------------------
    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if self.users else 'true'}",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp true",
            # Tests queue many QoS 1 messages for offline persistent clients.
            "max_queued_messages 100000",
            "max_inflight_messages 100",
            # Small frames and alerts must not wait for Nagle's algorithm (and the peer's delayed
            # ACK, 40 ms on Linux): send each packet at once.
            "set_tcp_nodelay true",
        ]
        if os.geteuid() == 0:
            # As root, Mosquitto would switch to the "mosquitto" user, which cannot read this
            # test's files; stay as the user that owns them.
            lines.append("user root")
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.dir}/", "autosave_interval 1"]
        if self.users:
            pw_path = self.dir / "passwd"
            pw_path.write_text("")
            pw_path.chmod(0o600)
            for user, password in self.users.items():
                subprocess.run([MOSQUITTO_PASSWD, "-b", str(pw_path), user, password], check=True, capture_output=True)
            lines.append(f"password_file {pw_path}")
        if self.acl is not None:
            acl_path = self.dir / "acl"
            acl_path.write_text(self.acl)
            acl_path.chmod(0o600)
            lines.append(f"acl_file {acl_path}")
        if self.extra_conf:
            lines.append(self.extra_conf)
        self.conf_path.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [MOSQUITTO, "-c", str(self.conf_path)]


# /etc/mosquitto/mosquitto.conf of Debian bookworm's mosquitto 2.0.11, paths replaced.
DEBIAN_MAIN_CONF = """\
pid_file {dir}/mosquitto.pid
persistence true
persistence_location {dir}/
log_dest file {log}
include_dir {conf_dir}
"""


class SiteMosquitto(BrokerProcess):
    """Mosquitto run as on a Pi: Debian's main configuration (paths in ``workdir``) including
    ``conf_dir``, which holds what `edgeline-gateway broker-config` generated (``edgeline.conf``
    and its ACL, password and TLS files). ``port`` is the gateway's loopback listener
    (``mqtt.port``), ``device`` the device listener (``broker.device_address``, ``device_port``)."""

    kind = "mosquitto"

    def __init__(self, workdir: Path, *, conf_dir: Path, port: int, device: tuple[str, int]) -> None:
        super().__init__(workdir, port=port)
        self.conf_dir = conf_dir
        self.device_host, self.device_port = device
        main_conf = DEBIAN_MAIN_CONF.format(dir=self.dir, log=self.log_path, conf_dir=conf_dir)
        if os.geteuid() == 0:
            # As root Mosquitto would switch to the "mosquitto" user, which cannot read these
            # files; on a Pi it does switch (Debian's unit starts it as root).
            main_conf += "user root\n"
        self.main_conf = self.dir / "mosquitto.conf"
        self.main_conf.write_text(main_conf)

    def add_password(self, password_file: Path, user: str, password: str) -> None:
        """Add ``user`` to ``password_file`` (created mode 600), as `add-device` does."""
        if not password_file.exists():
            password_file.touch(mode=0o600)
        subprocess.run([MOSQUITTO_PASSWD, "-b", str(password_file), user, password], check=True, capture_output=True)

    def command(self) -> list[str]:
        return [MOSQUITTO, "-c", str(self.main_conf)]

    def start(self, timeout: float = 10.0) -> Self:
        super().start(timeout)
        # Both listeners are open before Mosquitto serves either; wait for the second one too.
        deadline = time.monotonic() + timeout
        while not port_open(self.device_host, self.device_port):
            if time.monotonic() > deadline or not self.running:
                raise BrokerError(f"device listener {self.device_host}:{self.device_port} not open:\n{self.log_text()}")
            time.sleep(0.05)
        return self
