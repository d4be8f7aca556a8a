"""Mutual TLS on every hop of the demo, made the way a site makes it (docs/security.md).

- The site CA (`edgeline-flash ca`, tools/flash/pki.py) issues the local Mosquitto's server
  certificate and one client certificate per board. The boards get their files as the flash
  tool writes them: DER under ``certs/`` for MicroPython, PEM for CircuitPython.
- A second CA stands in for the cloud operator's. It issues the cloud broker's certificate, the
  gateway's client certificate (CN = the gateway id) and one for the demo's cloud-side observer.
- The local broker runs the configuration `edgeline-gateway broker-config` generates from the
  demo's gateway.toml, with ``[broker.tls]``. The demo's own observer (tools/demo/monitor.py)
  gets a read-only user on the loopback listener.

Keys are created mode 0600 in 0700 folders and are never printed.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from gateway import brokerconf
from gateway import config as config_mod
from tools.demo.scenario import DeviceSpec
from tools.flash.pki import DeviceCredentials, FleetCA, ServerFiles, private_dir, write_file
from tools.mosquitto import SiteMosquitto

SERVER_NAME = "gateway.demo"  # the local broker's name on the device network (SAN, server_name)
GATEWAY_USER = "gateway"  # the gateway's user on the loopback listener (mqtt.username)
MONITOR_USER = "demo-monitor"  # the demo's observer: reads every topic of the site, writes none
CLOUD_OBSERVER = "demo-cloud"  # the observer's identity toward the cloud broker
RELEASE_CLIENT = "demo-release"  # the release side's identity toward the cloud broker (edgeline-release publish)
# The board's files, as `edgeline-flash provision` writes them (DER) and, for CircuitPython,
# as the drive holds them (PEM).
MICROPYTHON_FILES = {"ca": "certs/ca.der", "cert": "certs/device.der", "key": "certs/device.key"}
CIRCUITPYTHON_FILES = {"ca": "certs/ca.pem", "cert": "certs/device.pem", "key": "certs/device-key.pem"}


@dataclass(frozen=True)
class ClientFiles:
    """A PEM certificate and its key (0600): a client of the cloud broker."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class DemoTLS:
    directory: Path
    site_ca: FleetCA
    broker: ServerFiles  # the local Mosquitto's certificate (site CA)
    crl: Path
    cloud_ca: FleetCA
    cloud: ServerFiles  # the cloud broker's certificate (cloud CA)
    gateway: ClientFiles  # the gateway's identity toward the cloud (cloud CA, CN = gateway id)
    observer: ClientFiles  # the demo's cloud-side observer (cloud CA)
    release: ClientFiles  # publishes the signed bundles (cloud CA)
    secrets_dir: Path  # loopback passwords (0600)

    def secret(self, user: str) -> Path:
        return self.secrets_dir / f"{user}.password"


def _private(path: Path, data: bytes) -> Path:
    return write_file(path, data, mode=0o600)


def _client(ca: FleetCA, name: str, out: Path) -> ClientFiles:
    creds = ca.issue_device(name)
    private_dir(out)
    return ClientFiles(
        cert=write_file(out / f"{name}.crt", creds.cert_pem), key=_private(out / f"{name}.key", creds.key_pem)
    )


def make(directory: Path, *, site: str, gateway_id: str) -> DemoTLS:
    """Both CAs and every certificate and password of the demo, under ``directory``."""
    private_dir(directory)
    site_ca = FleetCA.init(directory / "site-ca", site)
    broker = site_ca.issue_server(SERVER_NAME, directory / "local-broker", dns=[SERVER_NAME])
    crl = site_ca.write_crl(directory / "local-broker" / "crl.pem")
    cloud_ca = FleetCA.init(directory / "cloud-ca", "cloud")
    cloud = cloud_ca.issue_server("127.0.0.1", directory / "cloud-broker", ips=["127.0.0.1"])
    secrets_dir = private_dir(directory / "passwords")
    for user in (GATEWAY_USER, MONITOR_USER):
        _private(secrets_dir / f"{user}.password", (secrets.token_urlsafe(24) + "\n").encode())
    return DemoTLS(
        directory=directory,
        site_ca=site_ca,
        broker=broker,
        crl=crl,
        cloud_ca=cloud_ca,
        cloud=cloud,
        gateway=_client(cloud_ca, gateway_id, directory / "gateway"),
        observer=_client(cloud_ca, CLOUD_OBSERVER, directory / "observer"),
        release=_client(cloud_ca, RELEASE_CLIENT, directory / "release"),
        secrets_dir=secrets_dir,
    )


def provision_board(tls: DemoTLS, spec: DeviceSpec, flash: Path) -> dict[str, str]:
    """A new key and certificate for the board, written to its flash; the ``broker.tls`` block
    of its configuration (server name checked against the local broker's certificate)."""
    creds: DeviceCredentials = tls.site_ca.issue_device(spec.device_id)
    if spec.circuitpython:
        files, ca, cert, key = CIRCUITPYTHON_FILES, creds.ca_pem, creds.cert_pem, creds.key_pem
    else:
        files, ca, cert, key = MICROPYTHON_FILES, creds.ca_der, creds.cert_der, creds.key_der
    private_dir(flash / "certs")
    write_file(flash / files["ca"], ca)
    write_file(flash / files["cert"], cert)
    _private(flash / files["key"], key)
    return {**files, "server_name": SERVER_NAME}


def gateway_toml(tls: DemoTLS, *, local: tuple[str, int], device: tuple[str, int], conf_dir: Path) -> str:
    """The gateway.toml sections of mutual TLS: the loopback user, the broker's files (for
    `broker-config`) and the gateway's identity toward the cloud."""
    return f"""
[mqtt]
host = "{local[0]}"
port = {local[1]}
username = "{GATEWAY_USER}"
password_file = "{tls.secret(GATEWAY_USER)}"

# The local Mosquitto's configuration comes from these (`edgeline-gateway broker-config`):
# devices connect to the device listener with their certificates; the CN is their username.
[broker]
device_address = "{device[0]}"
device_port = {device[1]}
password_file = "{conf_dir / "edgeline.passwd"}"
acl_file = "{conf_dir / "edgeline.acl"}"

[broker.tls]
ca_file = "{tls.broker.ca}"
cert_file = "{tls.broker.cert}"
key_file = "{tls.broker.key}"
crl_file = "{tls.crl}"
"""


def forward_tls_toml(tls: DemoTLS) -> str:
    return f"""
[forward.tls]
ca_file = "{tls.cloud.ca}"
cert_file = "{tls.gateway.cert}"
key_file = "{tls.gateway.key}"
"""


def local_broker(tls: DemoTLS, workdir: Path, gateway_config: Path) -> SiteMosquitto:
    """The local Mosquitto with the generated configuration of ``gateway_config``, plus the
    demo observer's read-only user."""
    config = config_mod.load(gateway_config)
    conf_dir = config.broker.acl_file.parent
    files = brokerconf.generate(config)
    site = f"{config.gateway.prefix}/{config.gateway.site}"
    acl = (
        files.acl
        + f"\n# The demo's observer (tools/demo/monitor.py): reads the site.\nuser {MONITOR_USER}\ntopic read {site}/#\n"
    )
    brokerconf.write(brokerconf.BrokerFiles(conf=files.conf, acl=acl), conf_dir)
    if config.broker.device_address is None:
        raise ValueError("the demo's gateway.toml has no broker.device_address")
    broker = SiteMosquitto(
        workdir,
        conf_dir=conf_dir,
        port=config.mqtt.port,
        device=(config.broker.device_address, config.broker.device_port),
    )
    for user in (GATEWAY_USER, MONITOR_USER):
        password = tls.secret(user).read_text().strip()
        broker.add_password(config.broker.password_file, user, password)
    return broker


def cloud_listener(tls: DemoTLS) -> str:
    """The cloud broker's one listener: TLS, a client certificate from the cloud CA required,
    its CN the username."""
    return "\n".join(
        [
            f"cafile {tls.cloud.ca}",
            f"certfile {tls.cloud.cert}",
            f"keyfile {tls.cloud.key}",
            "require_certificate true",
            "use_identity_as_username true",
        ]
    )


_CONNECTION = re.compile(r"New connection from (\S+) on port (\d+)\.")
_CLIENT = re.compile(r"New client connected from (\S+) as (\S+) \(.*u'([^']*)'\)")


def tls_sessions(log: str, port: int) -> dict[str, str]:
    """From a Mosquitto log: client id -> username of the sessions opened on ``port``."""
    ports: dict[str, int] = {}
    sessions: dict[str, str] = {}
    for line in log.splitlines():
        m = _CONNECTION.search(line)
        if m is not None:
            ports[m.group(1)] = int(m.group(2))
            continue
        m = _CLIENT.search(line)
        if m is not None and ports.get(m.group(1)) == port:
            sessions[m.group(2)] = m.group(3)
    return sessions
