"""``python -m tests.deploy.dropin_broker ETC``, run inside a fresh network namespace that has the
device network's address (192.168.4.1) on its loopback: start Mosquitto with ETC/mosquitto/
mosquitto.conf (Debian's, which includes conf.d/ and so the shipped edgeline.conf), then connect
as the gateway on 127.0.0.1:1883 (password) and as a device on 192.168.4.1:8883 (its certificate,
ETC/pump-1/) and pass one frame through; a client without a certificate must be refused.
Prints one JSON line of what happened; exit 0 only if every step worked."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from pathlib import Path

from tests.gateway.mqtt_util import Client
from tests.support.mqtt_tls import try_connect
from tests.support.waiting import wait_until
from tools.mosquitto import MOSQUITTO, port_open

GATEWAY = ("127.0.0.1", 1883)
DEVICES = ("192.168.4.1", 8883)


def main() -> int:
    etc = Path(sys.argv[1])
    users = dict(line.split(":", 1) for line in (etc / "users.txt").read_text().split())
    proc = subprocess.Popen([MOSQUITTO, "-c", str(etc / "mosquitto" / "mosquitto.conf")], stderr=subprocess.PIPE)
    result: dict[str, object] = {}
    try:
        try:
            wait_until(lambda: port_open(*GATEWAY) and port_open(*DEVICES), 10, "both listeners")
        except TimeoutError:
            proc.kill()
            result["mosquitto_exit"] = proc.wait(5)
            result["stderr"] = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            return 1
        result["listening"] = True
        gw = Client(*GATEWAY, client_id="gateway", username="gateway", password=users["gateway"])
        gw.subscribe("el/plant1/#")
        ca = etc / "mosquitto" / "edgeline" / "ca.crt"
        device_tls = ssl.create_default_context(cafile=str(ca))
        device_tls.load_cert_chain(str(etc / "pump-1" / "pump-1.crt"), str(etc / "pump-1" / "pump-1.key"))
        dev = Client(*DEVICES, client_id="pump-1", tls=device_tls)
        dev.c.publish("el/plant1/pump-1/data", b"frame", qos=1)
        topic, payload, _ = gw.messages.get(timeout=10)
        result["delivered"] = [topic, payload.decode()]
        no_certificate = ssl.create_default_context(cafile=str(ca))
        result["without_certificate"] = try_connect(*DEVICES, no_certificate, server_hostname=DEVICES[0])
        for c in (gw, dev):
            c.close()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
