"""Vibration devices publishing real frames in real time, for the status page tests.

Each device is a ``tests.support.simdevice.SimDevice`` (the real encoder) with the MPU-6050
channels the committed vibration model takes (ax..gz, 100 Hz, 32 samples a frame) and the
firmware's own signal generator (``sensorfw.boards.sim_signals.Vibration``), so the gateway
scores its windows. A device may develop a bearing fault for a span of the run (an alert that
is raised, then cleared). A thread paces the frames at the devices' real rate.
"""

from __future__ import annotations

import sys
import threading
import time
from array import array
from dataclasses import dataclass, field

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from shared_protocol import ST_INT16
from shared_protocol.topics import PUBLISH_OPTIONS
from tests.support.simdevice import SimDevice
from tests.support.upy import ROOT

sys.path.insert(0, str(ROOT / "firmware"))
from sensorfw.boards.sim_signals import Vibration

RATE_HZ = 100.0
NS = 32
CHANNELS = [(n, "g", 1 / 16384, 0.0, ST_INT16, RATE_HZ) for n in ("ax", "ay", "az")] + [
    (n, "deg/s", 1 / 131, 0.0, ST_INT16, RATE_HZ) for n in ("gx", "gy", "gz")
]
MODEL = ROOT / "models" / "vibration_anomaly_int8.json"


@dataclass
class FedDevice:
    sim: SimDevice
    signal: Vibration
    fault: tuple[float, float] | None = None  # seconds after start: bearing fault from, to
    frames: int = 0
    raw: array = field(default_factory=lambda: array("h", [0] * (NS * len(CHANNELS))))  # type: ignore[type-arg]


class Feeder:
    def __init__(
        self,
        port: int,
        devices: list[str],
        *,
        site: str = "s1",
        faults: dict[str, tuple[float, float]] | None = None,
        health_s: float = 1.0,
    ) -> None:
        self.port = port
        self.health_s = health_s
        self.devices = [
            FedDevice(
                SimDevice(name, site=site, channels=list(CHANNELS), nsamples=NS),
                Vibration(rate_hz=RATE_HZ, seed=11 + i),
                (faults or {}).get(name),
            )
            for i, name in enumerate(devices)
        ]
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"feeder-{port}")
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="feeder", daemon=True)
        self.started = 0.0

    def _publish(self, d: FedDevice, kind: str, payload: bytes) -> None:
        qos, retain = PUBLISH_OPTIONS[kind]
        self.client.publish(d.sim.topic(kind), payload, qos=qos, retain=retain)

    def start(self) -> Feeder:
        self.client.connect("127.0.0.1", self.port, 30)
        self.client.loop_start()
        for d in self.devices:
            self._publish(d, "birth", d.sim.birth())
            self._publish(d, "health", d.sim.health(queue_depth=0, rssi=-55 - len(d.sim.device)))
        self.started = time.monotonic()
        self.thread.start()
        return self

    def _run(self) -> None:
        period = NS / RATE_HZ
        next_frame = self.started
        next_health = self.started + self.health_s
        while not self.stop_event.is_set():
            now = time.monotonic()
            t = now - self.started
            if now >= next_frame:
                for d in self.devices:
                    faulty = d.fault is not None and d.fault[0] <= t < d.fault[1]
                    if faulty != (d.signal.kind == "bearing"):
                        d.signal.set_fault("bearing" if faulty else "none", 0.8)
                    d.signal.fill_raw(d.raw, NS)
                    block = np.asarray(d.raw, dtype=np.int16).reshape(NS, len(CHANNELS))
                    self._publish(d, "data", d.sim.data(block))
                    d.frames += 1
                next_frame += period
            if now >= next_health:
                for d in self.devices:
                    self._publish(d, "health", d.sim.health(uptime_s=int(t), queue_depth=0, rssi=-60))
                next_health += self.health_s
            # pacing the devices' clock (not waiting for a result): the next frame is due then
            self.stop_event.wait(max(0.0, min(next_frame, next_health) - time.monotonic()))

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread.is_alive():
            self.thread.join(5.0)
        self.client.loop_stop()
        self.client.disconnect()
