"""The CircuitPython firmware over mutual TLS: MiniMQTT with is_ssl and an ssl.SSLContext
built the CircuitPython way (PEM files by path, the CA as a PEM string), on the strict
CircuitPython `ssl` of the simulation (firmware/cpsim/ssl.py), against a real Mosquitto that
requires a client certificate and takes its CN as the username."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from shared_protocol import BIRTH, DATA, EVENT, HEALTH
from shared_protocol.np_decode import decode_data
from tests.circuitpython.cpdevice import CPDevice, cp_config
from tests.firmware.gateway_stub import GatewayStub
from tests.firmware.tls_site import SERVER_NAME, TLSSite

PEM_FILES = {"ca": "certs/ca.pem", "cert": "certs/device.pem", "key": "certs/device-key.pem"}


def test_frames_arrive_over_mutual_tls(tmp_path: Path, flash: Callable[[str], Path]) -> None:
    site = TLSSite(tmp_path / "site").start()
    gw = GatewayStub(site.broker.host, site.broker.port).start()
    drive = flash("cp1")
    creds = site.ca.issue_device("cp1")
    (drive / "certs").mkdir()
    (drive / PEM_FILES["ca"]).write_bytes(creds.ca_pem)
    (drive / PEM_FILES["cert"]).write_bytes(creds.cert_pem)
    fd = os.open(drive / PEM_FILES["key"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(creds.key_pem)
    broker = {**site.broker_config(), "tls": {**PEM_FILES, "server_name": SERVER_NAME}}
    # a small queue: on the Pico W mbedTLS's ~24 KB count in the 32 KB buffer budget
    queue = {"ram_frames": 2, "flash_frames": 64, "block_bytes": 1024}
    dev = CPDevice(drive, cp_config(site.tls_port, "cp1", broker=broker, queue=queue))
    try:
        dev.power_on()
        rc = dev.run(timeout=60, EDGELINE_SIM_DURATION_S=3, EDGELINE_SIM_DRAIN_S=5)
    finally:
        gw.stop()
        site.stop()
    assert rc == 0, dev.text()
    st = dev.stats()
    # every frame ACKed over the TLS session (a second one only after a stall past the 1 s broker timeout)
    assert st["runtime"] == "circuitpython" and st["connects"] == 1 + st["losses"], st
    assert st["queue_depth"] == 0 and st["dropped"] == 0, st
    assert "as cp1 (p2, c1, k10, u'cp1')" in site.broker.log_text()  # the CN is the username
    data = gw.first_copies(DATA)
    assert len(data) == st["frames"] >= 8
    values = [decode_data(r.raw, gw.schemas["cp1"]).values for r in data]
    assert all(v.shape[1] == 6 for v in values)
    seqs = sorted({r.frame.seq for r in gw.frames if r.frame.type in (BIRTH, DATA, EVENT, HEALTH)})
    assert seqs == list(range(st["seq"]))
