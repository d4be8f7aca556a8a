"""Mutual TLS between the firmware and Mosquitto (real micropython processes, a real broker
that requires a client certificate and takes its CN as the username, certificates from the
fleet CA of tools/flash/pki.py).

Frames arrive over TLS and decode; a broker certificate with the wrong name or from another
CA is refused by the board, which says why and keeps retrying with backoff while capture
goes on into its queue: once the broker (or the board's files) is right, every queued frame
arrives. A broker restart mid-stream costs a TLS reconnect and no sequence number."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography import x509

from shared_protocol import BIRTH, DATA, DEATH, FLAG_HISTORICAL
from shared_protocol.np_decode import decode_data
from tests.firmware.gateway_stub import GatewayStub
from tests.firmware.simdevice import SimDevice, base_config
from tests.firmware.tls_site import SERVER_NAME, TLSSite
from tools.flash.devices import firmware_validator
from tools.flash.pki import FleetCA

FAILED = "MQTT connect failed"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[TLSSite]:
    s = TLSSite(tmp_path / "site")
    yield s
    s.stop()


def _gateway(site: TLSSite) -> GatewayStub:
    # on the plain loopback listener; a durable session, as the real gateway's, so frames
    # that arrive while a restarted broker waits for it are kept
    return GatewayStub(site.broker.host, site.broker.port, persistent=True).start()


def _seqs(gw: GatewayStub, boot: int) -> list[int]:
    """Distinct sequence numbers of every sequenced frame of that boot the gateway got."""
    with gw.lock:
        return sorted({r.frame.seq for r in gw.frames if r.frame.boot == boot and r.frame.type != DEATH})


def _config(site: TLSSite, **broker: Any) -> dict[str, Any]:
    return base_config(
        site.tls_port,
        broker=site.broker_config(**broker),
        sample={"rate_hz": 50, "batch": 10},
        queue={"ram_frames": 4, "ack_timeout_s": 3},
    )


@pytest.mark.parametrize("board", ["esp32_devkit", "pico_w"])
def test_frames_arrive_over_mutual_tls(board: str, site: TLSSite, flash: Callable[[str], Path]) -> None:
    site.start()
    gw = _gateway(site)
    f = flash("dev1")
    site.provision(f, "dev1")
    dev = SimDevice(f, _config(site), EDGELINE_SIM_BOARD=board)
    try:
        rc = dev.run(timeout=60, EDGELINE_SIM_DURATION_S=3, EDGELINE_SIM_DRAIN_S=5)
    finally:
        gw.stop()
    assert rc == 0, dev.text()
    st = dev.stats()
    assert FAILED not in dev.text()
    # every frame ACKed over the TLS session (a second one only after a stall past the 1 s broker timeout)
    assert st["connects"] == 1 + st["losses"] and st["queue_depth"] == 0, st
    # the broker took the username from the certificate: the CN is the device id
    assert "as dev1 (p2, c1, k10, u'dev1')" in site.broker.log_text()
    data = gw.first_copies(DATA)
    assert len(data) == st["frames"] >= 10
    blocks = [decode_data(r.raw, gw.schemas["dev1"]) for r in data]
    values = np.concatenate([b.values for b in blocks])
    assert 0.9 < values[:, 2].mean() < 1.1  # the simulated IMU sits upright: az ~ +1 g
    assert _seqs(gw, st["boot"]) == list(range(st["seq"]))
    assert st["losses"] > 0 or not any(r.frame.flags & FLAG_HISTORICAL for r in data)
    # the board's clock (2000-01-01 after an ESP32's power-on, 2021-01-01 on a Pico W) was
    # moved to the device certificate's start: mbedTLS does not find the broker's "not yet valid"
    start = x509.load_der_x509_certificate((f / "certs" / "device.der").read_bytes()).not_valid_before_utc
    assert st["rtc"] == [start.year, start.month, start.day, start.weekday(), start.hour, start.minute, start.second, 0]


def test_wrong_server_name_refused_until_the_broker_shows_the_right_certificate(
    site: TLSSite, flash: Callable[[str], Path]
) -> None:
    site.serve(site.ca.issue_server("other.plant1", site.dir / "other-server", dns=["other.plant1"]))
    site.start()
    gw = _gateway(site)
    f = flash("dev1")
    site.provision(f, "dev1")
    stop = f / "stop"
    dev = SimDevice(f, _config(site)).start(EDGELINE_SIM_STOP_FILE=stop, EDGELINE_SIM_DRAIN_S=10)
    try:
        out = dev.wait_for_output(lambda t: t.count(FAILED) >= 3, what="three refused connects")
        assert f"TLS handshake with {SERVER_NAME} failed: the broker's certificate was refused" in out
        assert "Common Name (CN) does not match" in out
        assert "check broker.tls.ca and broker.tls.server_name" in out
        assert not gw.of(BIRTH, DATA)  # nothing got through
        site.broker.stop()
        site.serve(site.server)  # the certificate for gateway.plant1
        site.broker.start()
        gw.wait_for(lambda g: len(g.of(DATA)) >= 8, timeout=30, what="DATA after the fix")
        stop.touch()
        rc = dev.wait(timeout=60)
    finally:
        dev.kill()
        gw.stop()
    assert rc == 0, dev.text()
    st = dev.stats()
    assert st["connects"] == 1 and st["dropped"] == 0 and st["queue_depth"] == 0, st
    assert "MQTT connected after" in dev.text()
    # capture went on while the broker was refused: those frames were queued, and arrived
    assert _seqs(gw, st["boot"]) == list(range(st["seq"]))
    assert st["spilled"] > 0  # more than the 4 RAM slots waited: the queue went to flash


def test_wrong_ca_refused_then_queued_frames_arrive_once_the_board_has_the_right_ca(
    site: TLSSite, tmp_path: Path, flash: Callable[[str], Path]
) -> None:
    site.start()
    gw = _gateway(site)
    f = flash("dev1")
    site.provision(f, "dev1", trust=FleetCA.init(tmp_path / "other-ca", "s2"))
    stop = f / "stop"
    dev = SimDevice(f, _config(site))
    try:
        dev.start(EDGELINE_SIM_STOP_FILE=stop)
        out = dev.wait_for_output(lambda t: t.count(FAILED) >= 3, what="three refused connects")
        assert "not correctly signed by the trusted CA" in out
        stop.touch()
        assert dev.wait(timeout=30) == 0, dev.text()
        first = dev.stats()
        assert first["frames"] >= 3 and first["queue_depth"] > 0 and first["connects"] == 0, first
        assert not gw.of(BIRTH, DATA)
        # the board gets the site CA (the flash tool's job), and starts again
        (f / "certs" / "ca.der").write_bytes(site.ca.cert_der)
        stop.unlink()
        dev.start(EDGELINE_SIM_STOP_FILE=stop, EDGELINE_SIM_DRAIN_S=10)
        gw.wait_for(lambda g: len(g.of(DATA)) >= first["frames"] + 3, timeout=30, what="DATA of both boots")
        stop.touch()
        rc = dev.wait(timeout=60)
    finally:
        dev.kill()
        gw.stop()
    assert rc == 0, dev.text()
    assert _seqs(gw, first["boot"]) == list(range(first["seq"]))  # the first boot's queue, all of it
    replayed = [r for r in gw.of(DATA) if r.frame.boot == first["boot"]]
    assert all(r.frame.flags & FLAG_HISTORICAL for r in replayed)
    st = dev.stats()
    assert st["boot"] == first["boot"] + 1 and st["queue_depth"] == 0, st


def test_broker_restart_reconnects_over_tls_without_gaps(site: TLSSite, flash: Callable[[str], Path]) -> None:
    site.start()
    gw = _gateway(site)
    f = flash("dev1")
    site.provision(f, "dev1")
    stop = f / "stop"
    dev = SimDevice(f, _config(site)).start(EDGELINE_SIM_STOP_FILE=stop, EDGELINE_SIM_DRAIN_S=10)
    try:
        gw.wait_for(lambda g: len(g.of(DATA)) >= 5, what="first DATA frames")
        site.broker.stop()
        dev.wait_for_output(lambda t: t.count(FAILED) >= 2, what="reconnects refused while the broker is away")
        site.broker.start()
        dev.wait_for_output(lambda t: "MQTT connected after" in t, timeout=30, what="the TLS reconnect")
        n = len(gw.of(DATA))
        gw.wait_for(lambda g: len(g.of(DATA)) >= n + 5, what="DATA after the restart")
        stop.touch()
        rc = dev.wait(timeout=60)
    finally:
        dev.kill()
        gw.stop()
    assert rc == 0, dev.text()
    st = dev.stats()
    assert st["connects"] == 2 and st["losses"] == 1, st
    assert st["dropped"] == 0 and st["queue_depth"] == 0, st
    assert _seqs(gw, st["boot"]) == list(range(st["seq"]))
    assert site.broker.log_text().count("u'dev1'") >= 2  # both sessions authenticated by the certificate


@pytest.mark.parametrize(
    ("broker", "message"),
    [
        ({"user": "dev1"}, "'broker.user' cannot be used with 'broker.tls'"),
        ({"password": "x"}, "'broker.password' cannot be used with 'broker.tls'"),
        ({"tls": {"ca": "a", "cert": "b", "key": "c", "cafile": "d"}}, "'broker.tls.cafile' is not a known key"),
        ({"tls": {"ca": "a", "cert": "b"}}, "'broker.tls.key' must be a string"),
        ({"tls": "yes"}, "'broker.tls' must be an object with ca, cert and key"),
    ],
)
def test_config_refuses_a_wrong_tls_section(broker: dict[str, Any], message: str) -> None:
    tls = {"ca": "certs/ca.der", "cert": "certs/device.der", "key": "certs/device.key"}
    cfg = base_config(1, broker={"tls": tls, **broker})
    with pytest.raises(ValueError, match=r"config\.json: ") as err:
        firmware_validator()(cfg, False)
    assert message in str(err.value)
    assert "'x'" not in str(err.value)  # a password is never echoed


def test_config_tls_defaults_and_watchdog_budget() -> None:
    tls = {"ca": "certs/ca.der", "cert": "certs/device.der", "key": "certs/device.key"}
    cfg = base_config(1, broker={"host": "gw.local", "tls": tls})
    del cfg["broker"]["port"]
    out: Any = firmware_validator()(cfg, False)
    assert out["broker"]["port"] == 8883
    assert out["broker"]["tls"] == {**tls, "server_name": "gw.local"}
    plain: Any = firmware_validator()(base_config(1), False)
    assert plain["broker"]["tls"] is None
    # Pico W: the handshake's arithmetic counts against the watchdog (TLS_HANDSHAKE_MS)
    wifi = {"ssid": "plant", "password": "secret"}
    pico = base_config(1, broker={"tls": tls, "timeout_ms": 2000}, watchdog_ms=7000, wifi=wifi, sensors=[])
    pico["sensors"] = [{"type": "analog", "pin": 26}]
    with pytest.raises(ValueError, match=r"at least 2 x broker.timeout_ms \+ 4000 = 8000") as err:
        firmware_validator(arch="armv6m")(pico, True)
    assert "TLS handshake" in str(err.value)
    pico["watchdog_ms"] = 8000
    firmware_validator(arch="armv6m")(pico, True)
    # Pico W: mbedTLS's record buffers are on the MicroPython heap and count in its budget
    pico["queue"] = {"block_bytes": 24576}
    with pytest.raises(ValueError, match="HEAP_BUDGET") as err:
        firmware_validator(arch="armv6m")(pico, True)
    assert "broker.tls 22170 B" in str(err.value)
    del pico["broker"]["tls"]
    pico["broker"]["port"] = 1883
    firmware_validator(arch="armv6m")(pico, True)  # the same buffers without TLS fit
