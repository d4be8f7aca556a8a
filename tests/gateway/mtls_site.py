"""A site whose device listener is mutual TLS: a fleet CA (tools/flash/pki.py), the broker's
certificate, key and CRL, and a real Mosquitto started with the files `edgeline-gateway
broker-config` generates from a gateway.toml with [broker.tls] (tests/gateway/site_broker.py)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tests.gateway.mqtt_util import Client
from tests.gateway.site_broker import SiteBroker
from tests.support.mqtt_tls import client_context, try_connect
from tools.flash.pki import DeviceCredentials, FleetCA

SERVER = "gateway.s1"
USERS = {"gateway": "gw-secret-1", "pump-2": "pump-2-password"}


@dataclass
class Site:
    ca: FleetCA
    broker: SiteBroker
    files: Path  # the broker's TLS files: ca.crt, server.crt, server.key, crl.pem
    pem: Path  # PEM copies of device credentials for CPython's ssl

    def context(self, creds: DeviceCredentials | None) -> ssl.SSLContext:
        return client_context(self.files / "ca.crt", creds, self.pem)

    def attempt(self, creds: DeviceCredentials | None, *, connect: bool = True) -> str:
        """One connection: "accepted" or why not (connect=False: the TLS handshake only, so
        no session of that device is taken over)."""
        ctx = client_context(self.files / "ca.crt", creds, self.pem)
        return try_connect(
            self.broker.device_host, self.broker.device_port, ctx, server_hostname=SERVER, connect=connect
        )

    def device(self, creds: DeviceCredentials, **kwargs: object) -> Client:
        ctx = client_context(self.files / "ca.crt", creds, self.pem)
        ctx.check_hostname = True
        return Client(self.broker.device_host, self.broker.device_port, tls=ctx, **kwargs)  # type: ignore[arg-type]

    def gateway(self) -> Client:
        return Client(
            self.broker.host, self.broker.port, client_id="gateway", username="gateway", password=USERS["gateway"]
        )


def make_site(workdir: Path, *, crl_issued_at: datetime | None = None) -> Site:
    ca = FleetCA.init(workdir / "ca", "s1")
    files = workdir / "broker-tls"
    ca.issue_server(SERVER, files, ips=["127.0.0.1"])
    ca.write_crl(files / "crl.pem", issued_at=crl_issued_at)
    tls = "".join(
        f'{key} = "{files / name}"\n'
        for key, name in (
            ("ca_file", "ca.crt"),
            ("cert_file", "server.crt"),
            ("key_file", "server.key"),
            ("crl_file", "crl.pem"),
        )
    )
    broker = SiteBroker(workdir / "site", users=USERS, extra_toml="[broker.tls]\n" + tls)
    return Site(ca, broker, files, workdir / "pem")
