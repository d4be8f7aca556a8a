"""``edgeline-release publish``: a bundle to a gateway through the cloud broker, as retained
chunks and then the retained meta (format: gateway/updates/delivery.py). QoS 1, every PUBACK
awaited: when this returns, the broker holds the whole bundle for the gateway to fetch. The
chunks of the bundle it replaces (the previous retained meta of the same kind and name) are
then cleared, so the broker keeps one bundle per kind and name and gateway."""

from __future__ import annotations

import ssl
import threading
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.updates.bundle import BundleError, peek
from gateway.updates.delivery import DEFAULT_CHUNK, Meta, bundles_root, chunk_topic, meta_topic, parse_meta, split
from tools.release.errors import ReleaseError


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    timeout_s: float = 30.0


def parse_broker(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ReleaseError(f"--broker {text!r}: expected HOST:PORT, e.g. mqtt.example.com:8883")
    return host, int(port)


def _connect(broker: Broker) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    if broker.username is not None:
        password = None
        if broker.password_file is not None:
            try:
                password = broker.password_file.read_text().strip()
            except OSError as exc:
                raise ReleaseError(f"--password-file {broker.password_file}: cannot read ({exc.strerror})") from None
        client.username_pw_set(broker.username, password)
    if broker.ca_file is not None or broker.cert_file is not None:
        client.tls_set(
            ca_certs=str(broker.ca_file) if broker.ca_file else None,
            certfile=str(broker.cert_file) if broker.cert_file else None,
            keyfile=str(broker.key_file) if broker.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
    try:
        client.connect(broker.host, broker.port, keepalive=60)
    except (OSError, ssl.SSLError) as exc:
        raise ReleaseError(f"--broker {broker.host}:{broker.port}: cannot connect ({exc})") from None
    client.loop_start()
    return client


def retained(client: mqtt.Client, topic_filter: str, broker: Broker, probe_root: str) -> dict[str, bytes]:
    """The retained messages under ``topic_filter``: subscribed, then a probe message published
    to ourselves; the broker sends the retained ones right after the SUBACK, so before the probe."""
    found: dict[str, bytes] = {}
    probe = f"{probe_root}/_probe/{uuid.uuid4().hex}"
    subscribed, probed = threading.Event(), threading.Event()

    def on_message(c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == probe:
            probed.set()
        elif msg.retain and msg.payload:
            found[msg.topic] = bytes(msg.payload)

    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    client.subscribe([(topic_filter, 1), (probe, 1)])
    if not subscribed.wait(broker.timeout_s):
        raise ReleaseError(f"--broker {broker.host}:{broker.port}: no SUBACK within {broker.timeout_s:g} s")
    client.publish(probe, b"probe", qos=1)
    if not probed.wait(broker.timeout_s):
        raise ReleaseError(
            f"--broker {broker.host}:{broker.port}: cannot read retained messages (may this client subscribe to "
            f"{topic_filter}?)"
        )
    client.unsubscribe([topic_filter, probe])
    return found


def previous_meta(
    client: mqtt.Client, broker: Broker, *, gateway: str, topic_prefix: str, kind: str, name: str
) -> Meta | None:
    """The meta the broker holds for this kind and name now (the bundle a new one replaces)."""
    topic = meta_topic(topic_prefix, gateway, kind, name)
    payload = retained(client, topic, broker, bundles_root(topic_prefix, gateway)).get(topic)
    if payload is None:
        return None
    try:
        return parse_meta(kind, name, payload, 1 << 62)
    except BundleError:
        return None  # not ours to clean up


def publish_bundle(
    path: Path,
    broker: Broker,
    *,
    gateway: str,
    topic_prefix: str = "edgeline",
    chunk_size: int = DEFAULT_CHUNK,
    only_chunks: Collection[int] | None = None,
    with_meta: bool = True,
    clear_previous: bool = True,
) -> Meta:
    """Publish the bundle at ``path`` for ``gateway``, then clear the chunks of the one it replaces.
    ``only_chunks`` / ``with_meta`` publish a part (a transfer interrupted on the publisher's side;
    used by the tests)."""
    label = peek(path)
    if label is None:
        raise ReleaseError(f"{path}: not a release bundle (make one with edgeline-release pack)")
    kind, name = label
    meta, chunks = split(Path(path).read_bytes(), kind, name, chunk_size)
    client = _connect(broker)
    try:
        old = None
        if clear_previous and with_meta:
            old = previous_meta(client, broker, gateway=gateway, topic_prefix=topic_prefix, kind=kind, name=name)
        infos = [
            client.publish(chunk_topic(topic_prefix, gateway, meta, i), data, qos=1, retain=True)
            for i, data in enumerate(chunks)
            if only_chunks is None or i in only_chunks
        ]
        if with_meta:
            infos.append(
                client.publish(meta_topic(topic_prefix, gateway, kind, name), meta.to_json(), qos=1, retain=True)
            )
        _wait_acked(infos, broker)
        if old is not None and old.bundle_id != meta.bundle_id:  # an empty retained message clears the topic
            _wait_acked(
                [
                    client.publish(chunk_topic(topic_prefix, gateway, old, i), b"", qos=1, retain=True)
                    for i in range(old.chunks)
                ],
                broker,
            )
    finally:
        client.disconnect()
        client.loop_stop()
    return meta


def _wait_acked(infos: list[mqtt.MQTTMessageInfo], broker: Broker) -> None:
    for info in infos:
        info.wait_for_publish(broker.timeout_s)
        if not info.is_published():
            raise ReleaseError(
                f"--broker {broker.host}:{broker.port}: no PUBACK within {broker.timeout_s:g} s; publish again"
            )
