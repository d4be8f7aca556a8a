"""The retained BIRTH/DEATH rule (docs/protocol.md, "MQTT topics") with the real firmware on
the unix port and a real Mosquitto: after the connection dies and the device reconnects within
the same boot, a new subscriber finds a retained BIRTH and no retained DEATH ("up"); after the
device dies for good, it finds the DEATH ("down")."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from shared_protocol import BIRTH, DEATH
from shared_protocol.decode import decode
from shared_protocol.topics import topic
from tests.firmware.gateway_stub import GatewayStub
from tests.firmware.simdevice import SimDevice, base_config
from tools.demo.linkcut import LinkCut
from tools.mosquitto import Mosquitto


def retained(broker: Mosquitto, device: str) -> dict[str, bytes]:
    """What a new subscriber gets on the device's death and birth topics. DEATH is subscribed
    first: its retained copy, if any, arrives before BIRTH's, which a live device always has."""
    death, birth = topic("el", "s1", device, "death"), topic("el", "s1", device, "birth")
    got: dict[str, bytes] = {}
    done = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2)

    def on_message(client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            got[msg.topic.rsplit("/", 1)[1]] = bytes(msg.payload)
            if msg.topic == birth:
                done.set()

    c.on_message = on_message
    c.connect(broker.host, broker.port, 5)
    c.loop_start()
    try:
        c.subscribe(death, 1)
        c.subscribe(birth, 1)
        assert done.wait(10), "no retained BIRTH"
    finally:
        c.loop_stop()
        c.disconnect()
    return got


def test_reconnect_within_a_boot_leaves_no_retained_death(
    mosquitto: Mosquitto, gateway: GatewayStub, flash: Any
) -> None:
    link = LinkCut((mosquitto.host, mosquitto.port))
    link.start()
    cfg = base_config(link.port, sample={"rate_hz": 20, "batch": 10}, health_s=60)
    dev = SimDevice(Path(flash("dev1")), cfg).start(EDGELINE_SIM_DURATION_S=120)
    try:
        gateway.wait_for(lambda g: len(g.of(BIRTH)) >= 1, what="the first BIRTH")
        link.cut()  # the connection dies without DISCONNECT: the broker publishes the will
        gateway.wait_for(lambda g: len(g.of(DEATH)) >= 1, what="the last will")
        link.restore()
        gateway.wait_for(lambda g: len([r for r in g.of(BIRTH) if not r.retained]) >= 2, what="the second BIRTH")
        births = [r.frame for r in gateway.of(BIRTH)]
        assert births[-1].boot == births[0].boot  # the same boot: a reconnect, not a reboot
        kept = retained(mosquitto, "dev1")
        assert "death" not in kept, "a retained DEATH while the device is up"
        assert decode(kept["birth"]).seq == births[-1].seq
        # Gone for good (killed): its will is retained, so a new subscriber learns "down".
        dev.kill()
        link.cut()
        gateway.wait_for(lambda g: len(g.of(DEATH)) >= 2, what="the will after the kill")
        kept = retained(mosquitto, "dev1")
        assert decode(kept["death"]).boot == births[-1].boot
    finally:
        dev.kill()
        link.cut()
