"""`edgeline-gateway broker-config`: the Mosquitto configuration and ACL generated from gateway.toml
(gateway/brokerconf.py), the shipped files in deploy/mosquitto/, and the listeners on a real broker."""

from __future__ import annotations

import socket
import stat
import struct
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from gateway import brokerconf, config
from gateway.cli import main
from gateway.config import BrokerSection, BrokerTLS, ConfigError
from shared_protocol.topics import DEVICE_KINDS, GATEWAY_KINDS
from tests.gateway.mqtt_util import Client
from tests.gateway.site_broker import SiteBroker
from tests.support.upy import ROOT

EXAMPLE = ROOT / "gateway.example.toml"
DEPLOY = ROOT / "deploy" / "mosquitto"


def test_shipped_files_are_the_generated_output_for_the_example_config() -> None:
    files = brokerconf.generate(config.load(EXAMPLE))
    fix = "regenerate: edgeline-gateway broker-config -c gateway.example.toml --out-dir deploy/mosquitto"
    assert (DEPLOY / brokerconf.CONF_NAME).read_text() == files.conf, fix
    assert (DEPLOY / brokerconf.ACL_NAME).read_text() == files.acl, fix


def test_acl_names_the_site_and_follows_the_protocol_kinds() -> None:
    acl = brokerconf.generate(config.load(EXAMPLE)).acl
    rules = [line for line in acl.splitlines() if line and not line.startswith("#")]
    device_rules = [r for r in rules if r.startswith("pattern ")]
    assert device_rules == [f"pattern write el/plant1/%u/{k}" for k in DEVICE_KINDS] + [
        f"pattern read el/plant1/%u/{k}" for k in GATEWAY_KINDS
    ]
    assert not [r for r in rules if "/+/%u" in r or r.split()[-1].startswith("el/+")], rules


def test_broker_config_cli_writes_private_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "edgeline.acl").write_text("stale")
    (out / "edgeline.acl").chmod(0o644)
    assert main(["broker-config", "-c", str(EXAMPLE), "--out-dir", str(out)]) == 0
    files = brokerconf.generate(config.load(EXAMPLE))
    assert (out / "edgeline.conf").read_text() == files.conf and (out / "edgeline.acl").read_text() == files.acl
    assert sorted(p.name for p in out.iterdir()) == ["edgeline.acl", "edgeline.conf"]
    for p in out.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    printed = capsys.readouterr().out
    assert "sudo install -m 644" in printed and "/etc/mosquitto/edgeline.acl" in printed
    # A new directory is private too.
    assert main(["broker-config", "-c", str(EXAMPLE), "--out-dir", str(tmp_path / "new")]) == 0
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700


BASE: dict[str, Any] = {
    "gateway": {"id": "g", "site": "s", "data_dir": "/tmp/x"},
    "mqtt": {"username": "gateway"},
    "broker": {"device_address": "192.168.4.1"},
}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"broker": {}}, "broker.device_address: missing; set the gateway's address on the device network"),
        ({"broker": {"device_address": "0.0.0.0"}}, "broker.device_address: 0.0.0.0 would listen on every interface"),
        ({"broker": {"device_address": "::"}}, "broker.device_address: :: would listen on every interface"),
        ({"broker": {"device_address": "pi.local"}}, "broker.device_address: expected the IP address"),
        (
            {"broker": {"device_address": "192.168.4.1", "device_interface": "wlan0"}},
            "broker.device_interface: set broker.device_address or broker.device_interface, not both",
        ),
        ({"broker": {"device_interface": "wlan 0"}}, "broker.device_interface: expected a network interface name"),
        ({"broker": {"device_address": "10.0.0.1", "device_port": 0}}, "broker.device_port: expected 1..65535"),
        (
            {"broker": {"device_address": "127.0.0.1"}},
            "broker.device_port: 127.0.0.1:1883 is already the gateway's listener",
        ),
        ({"broker": {"device_adress": "10.0.0.1"}}, "broker.device_adress: unknown key"),
        (
            {"broker": {"device_address": "10.0.0.1", "acl_file": "/etc/my acl"}},
            "broker.acl_file: '/etc/my acl' must not contain spaces",
        ),
        (
            {"broker": {"device_address": "10.0.0.1", "monitor_users": ["gateway"]}},
            "broker.monitor_users: 'gateway' is the gateway's mqtt.username",
        ),
        (
            {"broker": {"device_address": "10.0.0.1", "monitor_users": ["a\nuser x"]}},
            "broker.monitor_users: 'a\\nuser x' is not a valid user",
        ),
        (
            {"broker": {"device_address": "10.0.0.1", "max_queued_messages": 0}},
            "broker.max_queued_messages: expected 1..10000000",
        ),
        ({"mqtt": {"username": "gateway", "host": "192.168.4.1"}}, "mqtt.host: the generated broker listens"),
        ({"mqtt": {}}, "mqtt.username: missing; the broker refuses anonymous clients"),
        ({"mqtt": {"username": "gw\ntopic readwrite #"}}, "mqtt.username: 'gw\\ntopic readwrite #' must be 1-32"),
    ],
)
def test_broker_settings_errors_name_the_key(patch: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        brokerconf.generate(config.from_dict({**BASE, **patch}))
    assert message in str(exc.value)


def test_broker_config_cli_error_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = tmp_path / "g.toml"
    toml.write_text(EXAMPLE.read_text().replace('device_address = "192.168.4.1"', 'device_address = "0.0.0.0"'))
    assert main(["broker-config", "-c", str(toml), "--out-dir", str(tmp_path / "out")]) == 2
    assert "broker.device_address: 0.0.0.0 would listen on every interface" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_every_broker_key_is_documented_and_in_the_example() -> None:
    docs = (ROOT / "docs" / "gateway.md").read_text()
    example = EXAMPLE.read_text()
    for f in fields(BrokerSection):
        assert f"`broker.{f.name}`" in docs, f.name
        if f.name != "tls":  # a table: [broker.tls]
            assert f"{f.name} = " in example, f.name
    assert "[broker.tls]" in example
    for f in fields(BrokerTLS):
        assert f"`broker.tls.{f.name}`" in docs, f.name
        assert f"\n{f.name} = " in example, f.name
    assert "edgeline-gateway broker-config" in docs


def test_example_devices_use_mutual_tls_on_8883() -> None:
    cfg = config.load(EXAMPLE)
    assert cfg.broker.tls is not None and cfg.broker.device_port == 8883
    conf = brokerconf.generate(cfg).conf
    device_part = conf.split("listener 8883 192.168.4.1\n")[1].split("\n\n")[0].splitlines()
    assert [line for line in device_part if not line.startswith("#")] == [
        "use_username_as_clientid true",
        "cafile /etc/mosquitto/edgeline/ca.crt",
        "certfile /etc/mosquitto/edgeline/server.crt",
        "keyfile /etc/mosquitto/edgeline/server.key",
        "crlfile /etc/mosquitto/edgeline/crl.pem",
        "require_certificate true",
        "use_identity_as_username true",
    ]
    plain = config.from_dict(BASE)
    assert plain.broker.tls is None and plain.broker.device_port == 1883
    assert "require_certificate" not in brokerconf.generate(plain).conf


TLS_FILES = {"ca_file": "ca.crt", "cert_file": "server.crt", "key_file": "server.key", "crl_file": "crl.pem"}


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({k: v for k, v in TLS_FILES.items() if k != "crl_file"}, "broker.tls.crl_file: missing; [broker.tls] needs"),
        ({}, "broker.tls.ca_file: missing"),
        ({**TLS_FILES, "capath": "/etc/ssl"}, "broker.tls.capath: unknown key"),
        ({**TLS_FILES, "key_file": "my key.pem"}, "broker.tls.key_file: 'my key.pem' must not contain spaces"),
        ({**TLS_FILES, "ca_file": ""}, "broker.tls.ca_file: expected a non-empty string"),
    ],
)
def test_broker_tls_errors_name_the_key(tls: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config.from_dict({**BASE, "broker": {**BASE["broker"], "tls": tls}})
    assert message in str(exc.value)


def test_broker_tls_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    cfg = config.from_dict({**BASE, "broker": {**BASE["broker"], "tls": TLS_FILES}}, base_dir=tmp_path)
    assert cfg.broker.tls == BrokerTLS(*(tmp_path / name for name in TLS_FILES.values()))


def _listening(ports: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket on these ports, from /proc/net/tcp{,6}."""
    found: set[tuple[str, int]] = set()
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) not in ports:  # 0A: LISTEN
                continue
            # The kernel prints each 32-bit word of the address in host byte order.
            words = [int(addr_hex[i : i + 8], 16) for i in range(0, len(addr_hex), 8)]
            found.add((socket.inet_ntop(family, struct.pack(f"={len(words)}I", *words)), int(port_hex, 16)))
    return found


def test_listeners_bind_only_loopback_and_the_device_address(tmp_path: Path) -> None:
    with SiteBroker(tmp_path, users={"pump-1": "pump-pw-1"}) as broker:
        assert _listening({broker.port, broker.device_port}) == {
            ("127.0.0.1", broker.port),
            ("127.0.0.1", broker.device_port),
        }
        conf = (broker.conf_dir / "edgeline.conf").read_text()
        assert f"listener {broker.port} 127.0.0.1\n" in conf
        assert f"listener {broker.device_port} 127.0.0.1\n" in conf
        dev = Client(
            broker.device_host, broker.device_port, client_id="pump-1", username="pump-1", password="pump-pw-1"
        )
        dev.close()


def test_device_listener_on_an_interface(tmp_path: Path) -> None:
    """broker.device_interface: the listener takes that interface's addresses, not every one."""
    broker = SiteBroker(
        tmp_path, users={"pump-1": "pump-pw-1"}, broker={"device_address": None, "device_interface": "lo"}
    )
    with broker:
        assert _listening({broker.device_port}) <= {("127.0.0.1", broker.device_port), ("::1", broker.device_port)}
        assert ("127.0.0.1", broker.device_port) in _listening({broker.device_port})
        dev = Client(
            broker.device_host, broker.device_port, client_id="pump-1", username="pump-1", password="pump-pw-1"
        )
        dev.close()
