"""What an operator sees of a running gateway: ``--version``; ``status`` that exits non-zero once
the gateway stopped, died or hangs; no traceback when the reader of a pipe goes away; INFO lines
for births, deaths, silence, gaps and devices coming back. Real gateway processes, real Mosquitto."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.eventlog import Throttled
from gateway.status import not_running
from tests.support.gateway_proc import GatewayProcess
from tests.support.mosquitto import Mosquitto
from tests.support.simdevice import SimDevice
from tests.support.upy import ROOT
from tests.support.waiting import wait_until


def _cli(*args: str, stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=ROOT,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
    )


def test_version_comes_from_the_package_metadata() -> None:
    r = _cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"edgeline-gateway {version('edgeline')}", r


def test_status_exits_non_zero_once_the_gateway_stopped_or_died(tmp_path: Path, mosquitto: Mosquitto) -> None:
    gw = GatewayProcess(tmp_path, mosquitto.port).start()
    try:
        r = _cli("status", "-c", str(gw.config))
        assert r.returncode == 0 and " running (status" in r.stdout, r
        assert json.loads(_cli("status", "--json", "-c", str(gw.config)).stdout)["running"] is True
        assert gw.stop() == 0
        r = _cli("status", "-c", str(gw.config))
        assert r.returncode == 1 and " NOT RUNNING (status" in r.stdout, r
        assert "the gateway is NOT running: it stopped" in r.stderr
        # kill -9 leaves a status that says "running": the process is gone.
        gw.start()
        pid = gw.proc.pid if gw.proc is not None else 0
        gw.kill()
        r = _cli("status", "-c", str(gw.config))
        assert r.returncode == 1 and f"its process {pid} is gone" in r.stderr, r
        r = _cli("status", "--json", "-c", str(gw.config))
        assert r.returncode == 1 and json.loads(r.stdout)["running"] is False
    finally:
        gw.kill()


def test_a_stale_heartbeat_means_a_hung_gateway() -> None:
    now = time.time()
    alive = {"pid": os.getpid(), "written_at": now - 1, "status_interval_s": 5.0, "running": True}
    assert not_running(alive, now) is None
    assert "16 s old (rewritten every 5 s): it hangs" in str(not_running({**alive, "written_at": now - 16}, now))
    slow = {**alive, "status_interval_s": 60.0, "written_at": now - 170}
    assert not_running(slow, now) is None  # three intervals
    assert "it stopped" in str(not_running({**alive, "running": False}, now))


def test_no_traceback_when_the_pipe_reader_goes_away(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """`edgeline-gateway status | head -0`: the reader exits before the output is written."""
    gw = GatewayProcess(tmp_path, mosquitto.port).start()
    try:
        read, write = os.pipe()
        os.close(read)
        try:
            r = _cli("status", "-c", str(gw.config), stdout=write)
        finally:
            os.close(write)
        assert r.returncode == 128 + signal.SIGPIPE and r.stderr == "", r.stderr
    finally:
        gw.kill()


def test_info_lines_for_birth_gap_death_silence_and_return(tmp_path: Path, mosquitto: Mosquitto) -> None:
    gw = GatewayProcess(tmp_path, mosquitto.port, extra_toml="[registry]\noffline_after_s = 1\n").start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pump-1")
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()

    def send(kind: str, payload: bytes) -> None:
        pub.publish(dev.topic(kind), payload, qos=1).wait_for_publish(5)

    def logged(text: str) -> bool:
        return text in gw.log.read_text()

    try:
        dev = SimDevice("pump-1", site="s1")
        send("birth", dev.birth())
        send("data", dev.data())
        dev.seq += 3  # three frames never sent
        send("data", dev.data())
        wait_until(lambda: logged("INFO gateway.control: device pump-1: BIRTH boot 1 firmware 1.2.3"), 20, "BIRTH")
        wait_until(lambda: logged("device pump-1: 1 sequence gap(s), 3 frame(s) missing"), 20, "the gap")
        send("death", dev.death())
        wait_until(lambda: logged("INFO gateway.control: device pump-1: offline (DEATH)"), 20, "the DEATH")
        send("data", dev.data())
        wait_until(lambda: logged("INFO gateway.pipeline: device pump-1: online again"), 20, "the device back")
        wait_until(lambda: logged("device pump-1: offline (silent for"), 20, "the silence")
    finally:
        pub.disconnect()
        pub.loop_stop()
        gw.kill()


def test_throttled_lines_count_what_they_stand_for() -> None:
    lines: list[str] = []

    class Capture:
        def info(self, msg: str, *args: object) -> None:
            lines.append(msg % args)

    now = [100.0]
    gaps = Throttled(Capture(), "device %s: %d gap(s), %d frame(s) missing, in %.0f s", clock=lambda: now[0])  # type: ignore[arg-type]
    gaps.note("a", 2)
    for _ in range(50):
        now[0] += 0.1
        gaps.note("a", 1)
        gaps.note("b", 5)
    assert lines == ["device a: 1 gap(s), 2 frame(s) missing, in 0 s", "device b: 1 gap(s), 5 frame(s) missing, in 0 s"]
    now[0] = 111.0
    gaps.note("a", 1)
    assert lines[-1] == "device a: 51 gap(s), 51 frame(s) missing, in 11 s"
