"""A site with mutual TLS for firmware tests: a fleet CA (tools/flash/pki.py), a real Mosquitto
with a plain loopback listener for the test's own clients (the gateway stub) and a device
listener that requires a client certificate and takes its CN as the username, and the
per-device ACL patterns of gateway/brokerconf.py (a device writes and reads only under its
own id)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from shared_protocol.topics import DEVICE_KINDS, GATEWAY_KINDS
from tools.flash.pki import FleetCA, ServerFiles
from tools.mosquitto import Mosquitto, free_port

SERVER_NAME = "gateway.plant1"
BOARD_FILES = {"ca": "certs/ca.der", "cert": "certs/device.der", "key": "certs/device.key"}


def tls_listener(port: int, ca: Path, live: Path, crl: Path | None = None) -> str:
    """The device listener: the broker's certificate from ``live`` (server.crt, server.key),
    client certificates checked against ``ca``, the CN taken as the username."""
    lines = [
        f"listener {port} 127.0.0.1",
        f"cafile {ca}",
        f"certfile {live / 'server.crt'}",
        f"keyfile {live / 'server.key'}",
        "require_certificate true",
        "use_identity_as_username true",
    ]
    if crl is not None:
        lines.append(f"crlfile {crl}")
    return "\n".join(lines)


def device_acl(site: str, prefix: str = "el") -> str:
    """Anonymous clients (the plain listener: the test's gateway stub) read and write the
    site; every other user only its own device topics."""
    return "\n".join(
        [
            f"topic readwrite {prefix}/{site}/#",
            *(f"pattern write {prefix}/{site}/%u/{kind}" for kind in DEVICE_KINDS),
            *(f"pattern read {prefix}/{site}/%u/{kind}" for kind in GATEWAY_KINDS),
        ]
    )


class TLSSite:
    """The CA in ``workdir/ca``, the broker's certificate (CN and SAN ``SERVER_NAME``) and
    a Mosquitto in ``workdir/broker`` (not started: ``start()``)."""

    def __init__(self, workdir: Path, site: str = "s1") -> None:
        self.dir = workdir
        self.site = site
        self.ca = FleetCA.init(workdir / "ca", site)
        self.server = self.ca.issue_server(SERVER_NAME, workdir / "server", dns=[SERVER_NAME])
        self.live = workdir / "live"
        self.serve(self.server)
        self.tls_port = free_port()
        self.broker = Mosquitto(
            workdir / "broker",
            acl=device_acl(site),
            extra_conf=tls_listener(self.tls_port, self.ca.directory / "ca.crt", self.live),
        )

    def serve(self, server: ServerFiles) -> None:
        """The certificate the broker shows from its next start (a restart swaps it)."""
        self.live.mkdir(mode=0o700, exist_ok=True)
        (self.live / "server.crt").write_bytes(server.cert.read_bytes())
        fd = os.open(self.live / "server.key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(server.key.read_bytes())

    def start(self) -> TLSSite:
        self.broker.start()
        return self

    def stop(self) -> None:
        self.broker.kill()

    def provision(self, flash: Path, device_id: str, *, trust: FleetCA | None = None) -> None:
        """Write the device's key, certificate and CA to its flash as the flash tool does
        (DER, the key 0600 from creation). ``trust``: the device gets another CA than the
        one that signed the broker's certificate (a board set up for another site)."""
        creds = self.ca.issue_device(device_id)
        (flash / "certs").mkdir(parents=True, exist_ok=True)
        (flash / BOARD_FILES["ca"]).write_bytes((trust or self.ca).cert_der)
        (flash / BOARD_FILES["cert"]).write_bytes(creds.cert_der)
        fd = os.open(flash / BOARD_FILES["key"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(creds.key_der)

    def broker_config(self, server_name: str = SERVER_NAME, **over: Any) -> dict[str, Any]:
        """config.json's broker section for a device of this site over mutual TLS."""
        return {
            "host": "127.0.0.1",
            "port": self.tls_port,
            "timeout_ms": 1000,
            "keepalive_s": 10,
            "tls": {**BOARD_FILES, "server_name": server_name},
            **over,
        }
