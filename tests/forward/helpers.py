"""Helpers of the forwarder tests: a cloud-side collector, a forwarder subprocess, config builders."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.forward.queue import LANE_SHIFT, LANES, decode_body
from tests.support import waiting
from tests.support.mosquitto import Mosquitto
from tests.support.upy import ROOT


def forward_config(cloud: Mosquitto, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "host": cloud.host,
        "port": cloud.port,
        "backoff_min_s": 0.05,
        "backoff_max_s": 0.3,
        "keepalive_s": 5,
        "max_inflight": 32,
    }
    cfg.update(extra)
    return cfg


class Collector:
    """A persistent-session QoS 1 subscriber on the cloud broker that keeps every message in order."""

    def __init__(self, broker: Mosquitto, topic: str = "edgeline/+/+", *, raw: bool = False) -> None:
        self.raw = raw
        self.messages: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"collector-{uuid.uuid4().hex[:8]}", clean_session=False
        )
        self.client.reconnect_delay_set(0.05, 0.3)
        self.topic = topic
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect(broker.host, broker.port, 5)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("collector could not subscribe")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        value: Any = bytes(msg.payload)
        if not self.raw:
            with contextlib.suppress(ValueError):  # a bad command payload on the same broker: kept as bytes
                value = json.loads(msg.payload)
        with self._lock:
            self.messages.append((msg.topic, value))

    def snapshot(self) -> list[tuple[str, Any]]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> list[tuple[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            snap = self.snapshot()
            if predicate(snap):
                return snap
            time.sleep(0.02)
        raise AssertionError(f"collector: condition not met within {timeout} s; got {len(self.snapshot())} messages")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``predicate`` until it returns something true (the event), and return that."""
    return waiting.wait_until(predicate, timeout, what, poll=0.01)


def queue_rows(db_path: Path) -> list[tuple[str, int, dict[str, Any]]]:
    """(lane, seq, record) of every row committed to a queue file, read through a second connection
    (what a restarted forwarder would find)."""
    conn = sqlite3.connect(str(db_path), timeout=10)
    try:
        rows = conn.execute("SELECT id, seq, enc, body FROM records ORDER BY id").fetchall()
    finally:
        conn.close()
    return [(LANES[int(r[0]) >> LANE_SHIFT], int(r[1]), json.loads(decode_body(r[2], r[3]))) for r in rows]


def records(messages: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """The JSON envelopes received, without the collector's topics."""
    return [m for _t, m in messages if isinstance(m, dict) and "key" in m and "record" in m]


class Runner:
    """``python -m gateway.forward`` in its own process (so a test can kill -9 it)."""

    def __init__(self, tmp: Path, config: dict[str, Any], gateway_id: str, data_dir: Path, *extra: str) -> None:
        cfg_path = tmp / f"forward-{uuid.uuid4().hex[:6]}.json"
        cfg_path.write_text(json.dumps(config))
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.forward",
                "--config",
                str(cfg_path),
                "--gateway-id",
                gateway_id,
                "--data-dir",
                str(data_dir),
                *extra,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=str(ROOT),
            env=env,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        # Lines are read by a thread of their own, so that read_until() can give up after its timeout.
        self._out: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        self.ready = self.read_until("ready")

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(OSError, ValueError):
            for line in self.proc.stdout:
                self._out.put(line)
        self._out.put(None)  # end of the output: the process ended

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def submit_many(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(json.dumps({"lane": lane, "record": rec}) + "\n" for lane, rec in items))
        self.proc.stdin.flush()

    def read_until(self, key: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._out.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {key!r} line from the forwarder within {timeout} s") from None
            if line is None:
                self._out.put(None)
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"forwarder process ended (rc={self.proc.wait(10)}): {err}")
            obj = json.loads(line)
            self.lines.append(obj)
            if key in obj:
                return obj

    def request(self, op: str, key: str, **kw: Any) -> Any:
        self.send({"op": op, **kw})
        return self.read_until(key)[key]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._close_pipes()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.send({"op": "stop"})
            self.proc.wait(30)
        self._close_pipes()

    def _close_pipes(self) -> None:
        self._reader.join(10)  # the process has ended: its output ends too
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
