"""Sessions on the generated broker configuration, on a real Mosquitto (tests/gateway/site_broker.py):
no credential can take over another client's session, and QoS 1 messages queued for the
gateway's persistent session survive behind QoS 0 traffic."""

from __future__ import annotations

import itertools
import socket
from pathlib import Path
from typing import Any

import pytest

from gateway.ingest import FrameQueue, MQTTIngest, RawFrame
from gateway.runner import mqtt_settings
from tests.gateway.mqtt_util import Client
from tests.gateway.site_broker import SiteBroker
from tests.support.waiting import wait_until

USERS = {"gateway": "gw-secret-1", "pump-1": "pump-pw-1", "pump-2": "pump-pw-2", "monitor": "mon-pw-1"}


def _count_disconnects(client: Client) -> list[Any]:
    seen: list[Any] = []
    client.c.on_disconnect = lambda c, u, flags, rc, props: seen.append(rc)
    return seen


def _ingest(broker: SiteBroker, *, data_qos: int = 1) -> MQTTIngest:
    """The gateway's own MQTT client (persistent session), as `run` builds it."""
    g = broker.config.gateway
    return MQTTIngest(mqtt_settings(broker.config), FrameQueue(10_000), prefix=g.prefix, site=g.site, data_qos=data_qos)


def _frames_until(ingest: MQTTIngest, *, topic: str, payload: bytes) -> list[RawFrame]:
    """Frames the ingest received up to and including (topic, payload)."""
    out: list[RawFrame] = []
    for _ in range(200):
        out += ingest.queue.get_batch(10_000, timeout=0.05)
        if any(f.topic == topic and f.payload == payload for f in out):
            return out
    raise TimeoutError(f"{topic} {payload!r} never reached the gateway; got {len(out)} frames")


def _wait_for_log(broker: SiteBroker, *texts: str, timeout: float = 10.0) -> None:
    """Until the broker's log holds one of ``texts``."""
    try:
        wait_until(lambda: any(text in broker.log_text() for text in texts), timeout, f"the broker to log {texts}")
    except TimeoutError:
        raise TimeoutError(f"the broker never logged {texts}:\n{broker.log_text()}") from None


def test_a_device_credential_cannot_take_over_another_clients_session(tmp_path: Path) -> None:
    with SiteBroker(tmp_path, users=USERS) as broker:
        gateway = _ingest(broker)
        gateway.start()
        assert gateway.connected.wait(10)
        host, port = broker.device_host, broker.device_port
        pump1 = Client(host, port, client_id="pump-1", username="pump-1", password="pump-pw-1")
        pump1_drops = _count_disconnects(pump1)
        pump1.subscribe("el/s1/pump-1/cmd")
        # pump-2's credential on the device listener and a local tool's on the loopback one,
        # each with pump-1's client id, the gateway's configured one and the gateway's username.
        intruders = (("pump-2", "pump-pw-2", host, port), ("monitor", "mon-pw-1", broker.host, broker.port))
        victim_ids = ("pump-1", mqtt_settings(broker.config).client_id, "gateway")
        for (user, password, i_host, i_port), victim_id in itertools.product(intruders, victim_ids):
            intruder = Client(i_host, i_port, client_id=victim_id, username=user, password=password)
            assert not intruder.connect_rc.is_failure  # it gets in, as itself
            # Round trips through both victims after the intruder's CONNACK: a session taken
            # over is closed before that CONNACK is sent, so its client would see the close first.
            marker = f"{user} as {victim_id}".encode()
            pump1.publish("el/s1/pump-1/event", marker)
            frames = _frames_until(gateway, topic="el/s1/pump-1/event", payload=marker)
            assert [f.payload for f in frames if f.topic.endswith("/event")] == [marker]
            gateway.publish("el/s1/pump-1/cmd", marker)
            assert pump1.wait_for(lambda t, p, m=marker: p == m)[1] == marker
            intruder.close()
        assert pump1_drops == [] and gateway.disconnects == 0 and gateway.connects == 1
        assert "already connected, closing old connection" not in broker.log_text()
        pump1.close()
        gateway.stop()


@pytest.mark.parametrize("data_qos", [0, 1])
def test_qos1_messages_queued_for_the_away_gateway_are_all_delivered(tmp_path: Path, data_qos: int) -> None:
    """A mix of QoS 0 and QoS 1 publishes while the gateway is away loses no QoS 1 message.

    With Mosquitto 2.0.11 and `queue_qos0_messages true`, 20 of these 40 EVENT frames were lost.
    """
    n_events, data_per_event = 40, 5
    with SiteBroker(tmp_path, users=USERS) as broker:
        first = _ingest(broker, data_qos=data_qos)
        first.start()
        assert first.connected.wait(10)
        first.stop()  # SUBSCRIBE went out before DISCONNECT on the same connection
        # Its session is offline now (the broker names it by its username, or by its client id
        # under a configuration without use_username_as_clientid).
        ids = ("gateway", mqtt_settings(broker.config).client_id)
        _wait_for_log(broker, *(f"Client {i} disconnected." for i in ids))
        dev = Client(
            broker.device_host, broker.device_port, client_id="pump-1", username="pump-1", password="pump-pw-1"
        )
        # No Nagle: a QoS 0 publish would hold the next one back for the broker's delayed ACK.
        sock = dev.c.socket()
        assert isinstance(sock, socket.socket)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sent_qos1_data: list[bytes] = []
        for i in range(n_events):
            for j in range(data_per_event):
                payload = f"data {i}.{j}".encode()
                qos = j % 2  # devices publish DATA at QoS 1; a QoS 0 publisher in the mix
                dev.publish("el/s1/pump-1/data", payload, qos=qos)
                if qos == 1:
                    sent_qos1_data.append(payload)
            dev.publish("el/s1/pump-1/event", f"event {i}".encode(), qos=1)
        dev.close()
        # The gateway restarts: a new client, the same persistent session.
        second = _ingest(broker, data_qos=data_qos)
        second.start()
        last = f"event {n_events - 1}".encode()
        frames = _frames_until(second, topic="el/s1/pump-1/event", payload=last)
        second.stop()
        events = [f.payload for f in frames if f.topic.endswith("/event")]
        data = [f.payload for f in frames if f.topic.endswith("/data")]
        assert events == [f"event {i}".encode() for i in range(n_events)]
        # data_qos 1: every QoS 1 DATA was kept for the session; QoS 0 ones are not queued.
        # data_qos 0: DATA reaches the gateway at QoS 0 and is not kept while it is away.
        assert data == (sent_qos1_data if data_qos == 1 else [])
