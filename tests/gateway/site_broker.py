"""Mosquitto run as on a Pi, with the files `edgeline-gateway broker-config` generates.

The main configuration is Debian's /etc/mosquitto/mosquitto.conf (pid file, persistence
location, log file, ``include_dir``) with its paths in the test's directory; the included
directory holds ``edgeline.conf`` and ``edgeline.acl`` exactly as the command wrote them from a
gateway.toml. That TOML differs from a Pi's only in what a test needs: loopback addresses, free
ports, and files in the test's directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Self

from gateway import config as config_mod
from gateway.cli import main as cli_main
from gateway.config import Config
from tools.mosquitto import BrokerError, SiteMosquitto, free_port


def _toml_value(value: object) -> str:
    return json.dumps(value)  # strings, numbers and lists of strings read the same in TOML


class SiteBroker(SiteMosquitto):
    """A Mosquitto for site ``s1``: gateway listener ``.host``/``.port``, device listener
    ``.device_host``/``.device_port``; ``.toml`` the gateway.toml, ``.config`` its Config.

    ``users`` go into the generated password file (``broker.password_file``); the gateway
    user's password also into ``gateway.secret`` (mode 600, ``mqtt.password_file``).
    """

    kind = "mosquitto"

    def __init__(
        self,
        workdir: Path,
        *,
        users: dict[str, str] | None = None,
        site: str = "s1",
        prefix: str = "el",
        broker: dict[str, object] | None = None,
        extra_toml: str = "",
    ) -> None:
        port = free_port()
        device_port = free_port()
        while device_port == port:
            device_port = free_port()
        super().__init__(workdir, conf_dir=Path(workdir) / "mosquitto", port=port, device=("127.0.0.1", device_port))
        self.toml = self.dir / "gateway.toml"
        secret = self.dir / "gateway.secret"
        table: dict[str, object] = {
            "device_address": self.device_host,
            "device_port": self.device_port,
            "password_file": str(self.conf_dir / "edgeline.passwd"),
            "acl_file": str(self.conf_dir / "edgeline.acl"),
            **(broker or {}),
        }
        table = {k: v for k, v in table.items() if v is not None}
        self.toml.write_text(
            f'[gateway]\nid = "gw1"\nsite = "{site}"\nprefix = "{prefix}"\n'
            f'data_dir = "{self.dir / "data"}"\nstatus_interval_s = 0.2\n'
            f'[mqtt]\nhost = "{self.host}"\nport = {self.port}\nusername = "gateway"\n'
            f'password_file = "{secret}"\n'
            "[broker]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in table.items()) + extra_toml
        )
        if cli_main(["broker-config", "-c", str(self.toml), "--out-dir", str(self.conf_dir)]) != 0:
            raise BrokerError(f"broker-config failed for {self.toml}")
        self.config: Config = config_mod.load(self.toml)
        self.password_file = self.config.broker.password_file
        for user, password in (users or {}).items():
            self.add_user(user, password)
            if user == self.config.mqtt.username:
                secret.write_text(password + "\n")
                secret.chmod(0o600)

    def add_user(self, user: str, password: str) -> None:
        self.add_password(self.password_file, user, password)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
