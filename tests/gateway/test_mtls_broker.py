"""Mutual TLS on the device listener: a real Mosquitto 2.0 run with the files `edgeline-gateway
broker-config` generates from a gateway.toml with [broker.tls] (tests/gateway/site_broker.py),
certificates from the fleet CA (tools/flash/pki.py), clients with CPython's ssl and paho-mqtt.

Also pins down what Mosquitto 2.0.11 does, which docs/gateway.md relies on: the username is the
certificate's CN whatever the client sends, no password is checked on that listener, the client
id is forced to the CN, a rewritten CRL is read on SIGHUP, and an expired CRL refuses everyone."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gateway.cli import main as gateway_cli
from tests.gateway.mqtt_util import Client
from tests.gateway.mtls_site import USERS, Site, make_site
from tests.support.waiting import wait_until
from tools.flash.pki import FleetCA


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    made = make_site(tmp_path_factory.mktemp("mtls"))
    with made.broker:
        yield made


def test_generated_listener_is_mutual_tls(site: Site) -> None:
    conf = (site.broker.conf_dir / "edgeline.conf").read_text()
    device_part = conf.split(f"listener {site.broker.device_port} ")[1].split("\n\n")[0]
    for line in ("require_certificate true", "use_identity_as_username true", f"crlfile {site.files / 'crl.pem'}"):
        assert line in device_part.splitlines(), device_part
    gateway_part = conf.split(f"listener {site.broker.port} ")[1].split("listener ")[0]
    assert "cafile" not in gateway_part and "require_certificate" not in gateway_part


def test_a_device_acts_only_as_its_certificate_says(site: Site) -> None:
    gw = site.gateway()  # the loopback listener still takes the gateway's password
    gw.subscribe("el/s1/#")
    pump1 = site.ca.issue_device("pump-1")
    # It claims another device's username, password and client id: the certificate decides.
    dev = site.device(pump1, client_id="pump-2", username="pump-2", password=USERS["pump-2"], protocol=mqtt.MQTTv5)
    try:
        assert not dev.connect_rc.is_failure
        dev.subscribe("el/s1/pump-1/cmd")
        # Mosquitto 2.0.11 grants the subscription and checks read access per message: another
        # device's commands are never delivered (below).
        dev.subscribe("el/s1/pump-2/cmd")
        ok = dev.publish("el/s1/pump-1/data", b"mine")
        forged = [dev.publish(t, b"forged") for t in ("el/s1/pump-2/data", "el/s1/pump-1/ack", "el/s2/pump-1/data")]
        assert not dev.puback_reason(ok).is_failure
        assert [dev.puback_reason(f).getName() for f in forged] == ["Not authorized"] * 3
        dev.publish("el/s1/pump-1/health", b"marker")
        gw.wait_for(lambda t, p: t == "el/s1/pump-1/health")
        got = gw.drain(settle=0.1)
        assert [(t, p) for t, p, _ in got if t.startswith("el/s1/pump-")] == [("el/s1/pump-1/data", b"mine")]
        # Commands: its own arrive, another device's never do.
        gw.publish("el/s1/pump-2/cmd", b"for-2")
        gw.publish("el/s1/pump-1/cmd", b"for-1")
        assert dev.wait_for(lambda t, p: True)[:2] == ("el/s1/pump-1/cmd", b"for-1")
        assert dev.drain(settle=0.1) == []
        # use_username_as_clientid: the session is the CN's, not the client id it asked for
        log = site.broker.log_text()
        assert "as pump-1 (p5" in log and "u'pump-1'" in log and "as pump-2 (p5" not in log
    finally:
        dev.close()
        gw.close()


def test_refused_without_certificate_from_another_ca_and_expired(site: Site, tmp_path: Path) -> None:
    assert site.attempt(site.ca.issue_device("pump-3")) == "accepted"
    assert site.attempt(None) == "tls: SSLV3_ALERT_HANDSHAKE_FAILURE"  # no certificate
    other = FleetCA.init(tmp_path / "other", "s1")
    assert site.attempt(other.issue_device("pump-3")) == "tls: TLSV1_ALERT_UNKNOWN_CA"
    expired = site.ca.issue_device("pump-3", days=1, not_before=datetime.now(UTC) - timedelta(days=2))
    assert site.attempt(expired) == "tls: SSLV3_ALERT_CERTIFICATE_EXPIRED"
    # No password is checked on the device listener: a wrong one changes nothing.
    dev = site.device(site.ca.issue_device("pump-4"), client_id="pump-4", username="pump-4", password="wrong-one")
    assert not dev.connect_rc.is_failure
    dev.close()
    # (a password alone never gets past TLS: the attempt without a certificate above), and the
    # gateway's loopback listener still checks passwords
    wrong = Client(site.broker.host, site.broker.port, client_id="x", username="gateway", password="wrong")
    assert wrong.connect_rc.is_failure
    wrong.close()


def test_revoked_certificate_is_refused_from_the_next_connect_after_a_reload(site: Site) -> None:
    lost, kept = site.ca.issue_device("lost-1"), site.ca.issue_device("kept-1")
    assert site.attempt(lost) == "accepted"
    revoked = site.ca.revoke("lost-1")
    site.ca.write_crl(site.files / "crl.pem")
    # Mosquitto reads its crlfile when it loads the listener: not refused yet...
    assert site.attempt(lost) == "accepted"
    gw = site.gateway()
    gw.subscribe("el/s1/lost-1/data")
    session = site.device(lost, client_id="lost-1")
    try:
        assert site.broker.proc is not None
        site.broker.proc.send_signal(signal.SIGHUP)  # what `systemctl reload mosquitto` sends
        # ...and refused from the first connect after it re-read the CRL on SIGHUP
        wait_until(lambda: site.attempt(lost, connect=False) != "accepted", 10, "the reloaded CRL")
        assert site.attempt(lost, connect=False) == "tls: SSLV3_ALERT_CERTIFICATE_REVOKED"
        assert site.attempt(kept) == "accepted"
        assert [e.serial for e in site.ca.issued() if e.revoked] == revoked
        # A session opened before the reload stays up (docs: restart Mosquitto to cut it).
        session.publish("el/s1/lost-1/data", b"still-open")
        assert gw.wait_for(lambda t, p: p == b"still-open")
    finally:
        session.close()
        gw.close()


def test_an_expired_crl_refuses_every_device_and_check_config_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = make_site(tmp_path, crl_issued_at=datetime.now(UTC) - timedelta(days=31))  # 30 days: over
    with site.broker:
        assert site.attempt(site.ca.issue_device("pump-1")) == "tls: SSLV3_ALERT_CERTIFICATE_EXPIRED"
        gw = site.gateway()  # the gateway's password listener is not affected
        gw.close()
    assert gateway_cli(["check-config", "--skip-models", "-c", str(site.broker.toml)]) == 0
    out = capsys.readouterr().out
    assert f"devices: mTLS (CA {site.files / 'ca.crt'}, CRL {site.files / 'crl.pem'} EXPIRED 1 days ago)" in out
    assert "warning: broker.tls.crl_file: the CRL expired" in out
    assert "Mosquitto refuses EVERY device certificate until it has a current one" in out
