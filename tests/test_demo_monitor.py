"""The demo's monitor counts each DATA frame (boot, seq) once, whatever frames come between.

A LOSS frame (the answer to CMD_RESEND) does not use up a sequence number: it carries the
next one the device will use, so the DATA frame after it has the same (boot, seq). That
DATA frame is new, not a repeat: the monitor once took it for one and so counted one
frame's readings fewer than the gateway (tank-03 after its firmware update in the demo).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from shared_protocol import LOSS_UNUSED, ST_INT16
from shared_protocol.decode import decode
from tests.support.mosquitto import Mosquitto
from tests.support.simdevice import SimDevice
from tests.support.waiting import wait_until
from tools.demo.monitor import Monitor

U32_MAX = 0xFFFFFFFF
TANK = [("level", "m", 0.001, 0.0, ST_INT16, 10.0), ("flow", "l/min", 0.01, 0.0, ST_INT16, 10.0)]


def test_data_after_a_loss_is_counted_once_and_a_resent_frame_is_a_repeat(mosquitto: Mosquitto, tmp_path: Path) -> None:
    dev = SimDevice("tank-03", channels=list(TANK), nsamples=20)
    dev.reboot()  # boot 2: the board came back from its reset, its BIRTH is seq 0
    birth = dev.birth()
    monitor = Monitor(
        local=(mosquitto.host, mosquitto.port),
        cloud=(mosquitto.host, mosquitto.port),
        prefix=dev.prefix,
        site=dev.site,
        status=tmp_path / "status.json",
    )
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="board")
    try:
        pub.connect(mosquitto.host, mosquitto.port)
        pub.loop_start()
        # Retained, so the monitor gets it whenever its subscription is in place.
        pub.publish(dev.topic("birth"), birth, qos=1, retain=True).wait_for_publish(5)
        wait_until(lambda: "tank-03" in monitor.devices, 10, "the monitor to see the BIRTH")

        block = np.full((20, 2), 1500, dtype=np.int16)  # 1.5 m, 15 l/min
        first = dev.data(block)
        # The gateway asked for the tail of boot 1: the board answers that it ended at 269.
        loss = dev.loss([(1, 269, U32_MAX, LOSS_UNUSED)])
        second = dev.data(block)
        assert decode(loss).seq == decode(second).seq  # one number, two frames, by design
        sent = [("data", first), ("loss", loss), ("data", second), ("data", second), ("health", dev.health())]
        for kind, frame in sent:
            pub.publish(dev.topic(kind), frame, qos=1).wait_for_publish(5)
        view = monitor.devices["tank-03"]
        wait_until(lambda: view.frames == 1 + len(sent), 10, "the monitor to see every frame")

        assert view.data_frames == 2
        assert view.repeated_frames == 1  # the second copy of `second`: its ACK was late
        assert view.readings == 2 * 20 * 2
        assert view.missing_seqs() == 0
    finally:
        pub.disconnect()
        pub.loop_stop()
        monitor.stop()
