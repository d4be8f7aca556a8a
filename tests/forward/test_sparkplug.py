"""Sparkplug B output (``payload_format = "sparkplug"``): the gateway as an edge node, checked by an
independent host application (``sparkplug_host.py``, esio-spb-builder's decoder) on a real Mosquitto
with a real forwarder: births, aliases, seq, rebirth, schema changes, DDEATH, NDEATH, bdSeq across
restarts, kill -9 and store-and-forward."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from esio_spb_builder.core import sparkplug_b_pb2 as pb
from paho.mqtt.enums import CallbackAPIVersion

from gateway.forward import ForwardConfig, Forwarder
from gateway.forward.errors import ForwardConfigError
from tests.forward.helpers import Runner, forward_config, wait_until
from tests.forward.sparkplug_host import Message, SparkplugHost
from tests.support.mosquitto import Mosquitto

GROUP, NODE = "plant7", "gws"


def _birth(device: str, channels: list[list[Any]], at: float) -> dict[str, Any]:
    """A registry BIRTH record as the gateway forwards it (``control.py``)."""
    return {
        "event": "birth",
        "at": at,
        "device": device,
        "online": True,
        "state_reason": "birth",
        "state_at": at,
        "boot": 3,
        "fw_version": "1.4.0",
        "channels": channels,
        "births": 3,
        "first_seen": at - 100,
        "last_seen": at,
        "last_health": {"rssi": -61, "heap_free": 81234, "queue_depth": 0},
    }


AX = ["ax", "g", 0.001, 0.0, "h", 100.0]
TEMP = ["temp", "degC", 0.01, 0.0, "h", 1.0]
AY = ["ay", "g", 0.001, 0.0, "h", 100.0]


def _summary(device: str, end: float, channels: dict[str, float]) -> dict[str, Any]:
    stats = {name: {"min": v - 1, "max": v + 1, "mean": v, "std": 0.5} for name, v in channels.items()}
    return {"device": device, "start": end - 60, "end": end, "gaps": 0, "duplicates": 0, "count": 6000, "channels": stats, "site": "s1"}  # fmt: skip


def _alert(device: str, state: str, score: float, **extra: Any) -> dict[str, Any]:
    now = time.time()
    return {"device": device, "pipeline": "vib", "window_end": now, "score": score, "threshold": 0.8, "state": state, "model_version": "m1", "site": "s1", **extra}  # fmt: skip


def _count(kind: str, device: str | None = None, n: int = 1) -> Callable[[list[Message]], bool]:
    return lambda log: sum(1 for m in log if m.kind == kind and (device is None or m.device == device)) >= n


def _sparkplug(cloud: Mosquitto) -> dict[str, Any]:
    return forward_config(cloud, payload_format="sparkplug", sparkplug_group=GROUP)


def test_edge_node_session_births_aliases_rebirth_schema_change_deaths_and_restart(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    cloud = mosquitto_factory()
    host = SparkplugHost(cloud, GROUP, NODE)
    data = tmp_path / "data"
    fwd = Forwarder(ForwardConfig.from_dict(_sparkplug(cloud)), NODE, data)
    fwd.start()
    try:
        t0 = time.time()
        fwd.submit("registry", _birth("d1", [AX, TEMP], t0))
        fwd.submit("summary", _summary("d1", t0, {"ax": 0.02, "temp": 21.5}))
        fwd.submit("alert", _alert("d1", "raised", 0.97))
        fwd.submit("registry", {"type": "command_rejected", "topic": "edgeline/gws/cmd/x", "error": "bad"})
        fwd.submit("registry", _birth("d2", [TEMP], t0))
        host.wait_for(_count("DDATA", "d1", 2), "two DDATA of d1")
        host.wait_for(_count("NDATA"), "the gateway's own record as NDATA")
        epoch = fwd.status()["epoch"]

        log = host.messages()
        assert log[0].kind == "NBIRTH" and log[0].seq == 0
        bd_seq = log[0].values()["bdSeq"]
        # The alert overtakes the registry lane (lane priority): d1 is born with the alert's metrics
        # first, and born again with its channels when its BIRTH record comes.
        dbirth = next(m for m in host.messages("DBIRTH", "d1") if "Channels/ax/mean" in m.values())
        assert "Alerts/vib/score" in dbirth.values()
        mean = dbirth.metric("Channels/ax/mean")
        assert mean["datatype"] == 10 and mean["properties"] == {"engUnit": "g"}  # Double, unit as property
        assert dbirth.metric("Channels/temp/max")["properties"] == {"engUnit": "degC"}
        assert dbirth.values()["Device/fw_version"] == "1.4.0"
        assert dbirth.values()["Health/rssi"] == -61
        alert = next(m for m in host.messages("DDATA", "d1") if "Alerts/vib/score" in m.values()).values()
        assert alert["Alerts/vib/score"] == 0.97 and alert["Alerts/vib/active"] is True
        assert alert["Record/key"] == f"{NODE}/alert/{epoch}-1"  # the idempotency key rides along
        summary = next(m for m in host.messages("DDATA", "d1") if "Channels/ax/mean" in m.values()).values()
        assert summary["Channels/temp/mean"] == 21.5 and summary["Summary/count"] == 6000
        node = host.messages("NDATA")[0].values()
        assert json.loads(node["Gateway/Last Record/json"])["type"] == "command_rejected"

        # A host asks for a rebirth: NBIRTH (same bdSeq, seq 0) and the DBIRTHs again.
        before = len(host.messages())
        host.request_rebirth()
        host.wait_for(lambda m: _count("DBIRTH", "d2")(m[before:]), "the births after the rebirth request")
        again = host.messages()[before:]
        assert [m.kind for m in again[:3]] == ["NBIRTH", "DBIRTH", "DBIRTH"]
        assert again[0].values()["bdSeq"] == bd_seq

        # A new BIRTH with other channels: a DBIRTH with the new set before the next DDATA.
        before = len(host.messages())
        fwd.submit("registry", _birth("d1", [AX, AY], time.time()))
        fwd.submit("summary", _summary("d1", time.time(), {"ax": 0.03, "ay": 0.01}))
        host.wait_for(lambda m: _count("DDATA", "d1")(m[before:]), "a DDATA after the schema change")
        names = host.messages("DBIRTH", "d1")[-1].values()
        assert "Channels/ay/mean" in names and not any(n.startswith("Channels/temp/") for n in names)
        assert host.messages("DDATA", "d1")[-1].values()["Channels/ay/mean"] == 0.01

        # A field never seen before (the alert grows): the device is born again with it first.
        before = len(host.messages())
        fwd.submit("alert", _alert("d1", "cleared", 0.41, windows_over=4))
        got = host.wait_for(lambda m: _count("DDATA", "d1")(m[before:]), "the cleared alert")[before:]
        assert [m.kind for m in got] == ["DBIRTH", "DDATA"]
        assert got[1].values()["Alerts/vib/active"] is False and got[1].values()["Alerts/vib/windows_over"] == 4

        # Offline: DDEATH.  A late summary of it (from before it died) is historical, between a DBIRTH
        # and a DDEATH of its own: the device stays dead.
        before = len(host.messages())
        died = time.time()
        fwd.submit("registry", {"event": "offline", "reason": "silence", "device": "d1", "at": died})
        fwd.submit("summary", _summary("d1", died - 5, {"ax": 0.04, "ay": 0.02}))
        got = host.wait_for(lambda m: _count("DDEATH", "d1", 2)(m[before:]), "DDEATH, then the late summary")[before:]
        assert [m.kind for m in got] == ["DDEATH", "DBIRTH", "DDATA", "DDEATH"]
        assert all(x["historical"] for x in got[2].metrics)
        assert fwd.wait_drained(20)
        status = fwd.status()["sparkplug"]
        assert status["bdSeq"] == bd_seq and status["node_births"] == 2 and status["online"] == 1  # d2
    finally:
        fwd.stop()
    # A clean stop sends the NDEATH of this connection's bdSeq before disconnecting.
    host.wait_for(_count("NDEATH"), "the NDEATH of a clean stop")
    assert host.deaths == [bd_seq]

    # Restart: the next bdSeq (persisted), d2 born from the stored catalogue, d1 (offline) not.
    before = len(host.messages())
    fwd = Forwarder(ForwardConfig.from_dict(_sparkplug(cloud)), NODE, data)
    fwd.start()
    try:
        host.wait_for(lambda m: _count("DBIRTH", "d2")(m[before:]), "the births after a restart")
        got = host.messages()[before:]
        assert got[0].kind == "NBIRTH" and got[0].values()["bdSeq"] == (bd_seq + 1) % 256
        assert [m.device for m in got if m.kind == "DBIRTH"] == ["d2"]
        assert "Channels/temp/mean" in got[1].values()  # its definitions, values null until data
        assert got[1].metric("Channels/temp/mean")["null"]
    finally:
        fwd.stop()
        host.close()
    assert host.errors == []


def test_kill_9_sends_the_will_and_queued_records_follow_the_births_as_historical(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    cloud = mosquitto_factory()
    host = SparkplugHost(cloud, GROUP, NODE)
    data = tmp_path / "data"
    runner = Runner(tmp_path, _sparkplug(cloud), NODE, data)
    try:
        t0 = time.time()
        runner.submit_many([("registry", _birth("d1", [AX], t0)), ("summary", _summary("d1", t0, {"ax": 0.1}))])
        host.wait_for(_count("DDATA", "d1"), "the first DDATA")
        bd_seq = host.messages("NBIRTH")[0].values()["bdSeq"]
        runner.kill()  # no DISCONNECT: the broker sends the will
        host.wait_for(_count("NDEATH"), "the will (NDEATH)")
        assert host.deaths == [bd_seq] and not host.state.online

        runner = Runner(tmp_path, _sparkplug(cloud), NODE, data)
        host.wait_for(_count("NBIRTH", n=2), "the NBIRTH after the restart")
        assert host.messages("NBIRTH")[1].values()["bdSeq"] == (bd_seq + 1) % 256

        # Outage: records queued while the cloud is away go out after the births, flagged historical.
        cloud.stop()
        wait_until(lambda: runner.request("status", "status")["connection"]["state"] != "connected", "link down")
        runner.submit_many([("summary", _summary("d1", time.time(), {"ax": 0.5 + i})) for i in range(5)])
        assert runner.request("flush", "flushed")
        cloud.start()
        queued_values = [0.5, 1.5, 2.5, 3.5, 4.5]

        def queued(log: list[Message]) -> list[int]:
            return [
                i
                for i, m in enumerate(log)
                if m.kind == "DDATA" and m.values().get("Channels/ax/mean") in queued_values
            ]

        log = host.wait_for(lambda log: len(queued(log)) >= 5, "the queued summaries")
        assert runner.request("drain", "drained")
    finally:
        runner.stop()
        host.close()
    # After the outage: a new session (NBIRTH, DBIRTH of d1), then the queued records, historical.
    got = queued(log)
    nbirth = max(i for i, m in enumerate(log) if m.kind == "NBIRTH")
    assert len(host.messages("NBIRTH")) >= 3 and nbirth < min(got)
    assert any(m.kind == "DBIRTH" and m.device == "d1" for m in log[nbirth : min(got)])
    assert sorted({log[i].values()["Channels/ax/mean"] for i in got}) == queued_values  # (at least once)
    assert all(x["historical"] for i in got for x in log[i].metrics)
    assert host.errors == []


def test_the_host_flags_a_session_that_breaks_the_rules(mosquitto_factory: Callable[..., Mosquitto]) -> None:
    """The checks above are only worth something if the host sees a broken session: data before a
    birth, a seq gap, an alias it was never told, a name in DDATA."""
    cloud = mosquitto_factory()
    host = SparkplugHost(cloud, GROUP, "bad")
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bad-node")
    sender.connect(cloud.host, cloud.port, 5)
    sender.loop_start()

    def send(kind: str, device: str | None, seq: int, metrics: list[tuple[str | None, int | None, int]]) -> None:
        payload = pb.Payload()
        payload.timestamp, payload.seq = int(time.time() * 1000), seq
        for name, alias, datatype in metrics:
            m = payload.metrics.add()
            m.timestamp = payload.timestamp
            if name is not None:
                m.name = name
            if alias is not None:
                m.alias = alias
            if kind.endswith("BIRTH"):
                m.datatype = datatype
            m.long_value = 1
        topic = f"spBv1.0/{GROUP}/{kind}/bad" + (f"/{device}" if device else "")
        sender.publish(topic, payload.SerializeToString(), qos=1).wait_for_publish(10)

    try:
        send("DDATA", "x", 0, [(None, 1, 4)])  # before any NBIRTH
        send("NBIRTH", None, 0, [("bdSeq", None, 4), ("a", 1, 4)])  # no Node Control/Rebirth
        send("DDATA", "x", 1, [(None, 1, 4)])  # no DBIRTH of x
        send("DBIRTH", "x", 3, [("b", 1, 4)])  # seq gap, alias 1 taken by the node
        send("DDATA", "x", 4, [("b", 9, 4)])  # a name in DDATA, alias 9 unknown
        host.wait_for(lambda log: len(log) >= 5, "the five messages")
    finally:
        sender.disconnect()
        sender.loop_stop()
        host.close()
    text = "\n".join(host.errors)
    for expected in (
        "before any NBIRTH",
        "Node Control/Rebirth = false",
        "without a DBIRTH",
        "expected seq 2",
        "alias 1 of b is not unique",
        "carry the alias only",
        "alias 9 is not in the birth",
    ):
        assert expected in text, (expected, host.errors)


def test_a_group_id_that_is_not_one_topic_level_is_refused() -> None:
    with pytest.raises(ForwardConfigError, match=r"forward.sparkplug_group: expected a Sparkplug group id"):
        ForwardConfig.from_dict({"host": "h", "payload_format": "sparkplug", "sparkplug_group": "plant/7"})
