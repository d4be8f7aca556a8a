"""Firmware over the air: the full firmware sent over MQTT to a board, beside what a USB-serial
deploy of the same bytes costs at best.

The release is the flash tool's real build for the ESP32 (tools/flash/build.py, xtensawin: every
file `edgeline-release pack firmware` takes, i.e. all but the loader's main.py/boot.py), packed and
signed as a firmware bundle and installed on the real gateway process (`update.install` on its
control socket). The gateway's rollout sends it (CMD_OTA, [updates.firmware] defaults: 512-byte
chunks, 4 in flight) over a real Mosquitto to the real firmware on the MicroPython unix port,
whose connection runs through a counting TCP relay. The board is told it is a native build (the
manifest's arch), so it takes, writes and checks every byte exactly as an ESP32 would; the time is
from the gateway's record of its BEGIN to the board's reset into the new slot (every file on flash
and checked, the slot set on trial). The board is stopped there: an xtensawin slot cannot run on
the unix port.

Figures per round:
- time and bytes on the wire both ways (TCP payload at the relay: MQTT headers, CMD frames and
  the board's answers, plus its own DATA at 5 Hz meanwhile);
- baseline: the same payload bytes at 115200 baud, 8N1 (11,520 B/s), the best a USB-serial
  deploy (mpremote cp, esptool) can do, without its protocol's overhead;
- the same MQTT transfer with the relay throttled to 11,520 B/s each way: OTA over a link as
  slow as that serial line. Rounds of the two MQTT modes are interleaved.

    .venv/bin/python -m bench.bench_ota [--quick]
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import cli
from bench.bench_tls import Conn, CountingRelay

ROOT = Path(__file__).resolve().parent.parent
SERIAL_BPS = 115_200 / 10  # bytes per second at 115200 baud, 8N1 (start + 8 data + stop bits)
NAME = "sensorfw-native"


class ThrottledRelay(CountingRelay):
    """The counting relay, each direction paced to ``rate`` bytes per second (None: as fast as
    the sockets go), in slices of at most 256 bytes as a serial line would pass them."""

    def __init__(self, upstreams: dict[str, tuple[str, int]], rate: float | None) -> None:
        self.rate = rate
        super().__init__(upstreams)

    def _pump(self, src: socket.socket, dst: socket.socket, conn: Conn, up: bool) -> None:
        if self.rate is None:
            super()._pump(src, dst, conn, up)
            return
        free_at = time.monotonic()
        with contextlib.suppress(OSError):
            while data := src.recv(256):
                if up:
                    conn.up += len(data)
                else:
                    conn.down += len(data)
                free_at = max(free_at, time.monotonic()) + len(data) / self.rate
                time.sleep(max(0.0, free_at - time.monotonic()))
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


class Site:
    """Mosquitto, the gateway process with [updates], a release key, the device's OTA key."""

    def __init__(self, work: Path) -> None:
        from tests.gateway.mqtt_util import Client
        from tools.mosquitto import Mosquitto
        from tools.release.keys import keygen, load_private_key

        self.work = work
        self.broker = Mosquitto(work / "broker", persistence=False).start()
        key_path, pub, _kid = keygen(work / "keys" / "release")
        self.release_key = load_private_key(key_path)
        self.devices_dir = work / "ca" / "devices"
        self.data_dir = work / "gw"
        self.config = work / "gateway.toml"
        self.config.write_text(
            f"""
[gateway]
id = "gw-bench"
site = "s1"
data_dir = "{self.data_dir}"
status_interval_s = 0.5

[mqtt]
host = "127.0.0.1"
port = {self.broker.port}

[updates]
enabled = true
trusted_keys = ["{pub}"]

[updates.firmware]
device_keys_dir = "{self.devices_dir}"
"""
        )
        self.log = open(work / "gateway.log", "ab")  # noqa: SIM115 - closed in stop()
        self.gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(self.config), "--log-level", "warning"],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.events: list[tuple[float, dict[str, Any], int, int]] = []  # (seen, event, relay up, relay down)
        self.relay: ThrottledRelay | None = None
        self._lock = threading.Lock()
        self.monitor = Client(self.broker.host, self.broker.port, client_id="bench-ota-monitor")
        self.monitor.c.on_message = self._on_update
        self.monitor.subscribe("el/s1/_gateway/updates")
        self._wait(lambda: self._status().get("ingest", {}).get("subscribed"), 30, "the gateway's SUBACK")

    def _status(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.data_dir / "status.json").read_text())
            return data
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    @staticmethod
    def _wait(check: Any, timeout: float, what: str) -> Any:
        from tests.support.waiting import wait_until

        return wait_until(check, timeout, what, poll=0.005)

    def _on_update(self, _client: Any, _userdata: Any, msg: Any) -> None:
        """The gateway's update records (retained snapshot per kind/name): the firmware one,
        with the relay's byte counts at the moment it is seen."""
        event = json.loads(msg.payload).get(f"firmware/{NAME}")
        if event is None:
            return
        conns = self.relay.conns if self.relay is not None else []
        up = sum(c.up for c in conns)
        down = sum(c.down for c in conns)
        with self._lock:
            self.events.append((time.monotonic(), event, up, down))

    def state_seen(self, state: str, device: str, after: int) -> tuple[float, dict[str, Any], int, int] | None:
        with self._lock:
            for e in self.events[after:]:
                if e[1]["state"] == state and e[1].get("device") == device:
                    return e
                if e[1]["state"] == "failed" and e[1].get("device") == device:
                    raise RuntimeError(f"the OTA failed: {e[1]}")
        return None

    def transfer(self, files: dict[str, bytes], counter: int, rate: float | None) -> dict[str, Any]:
        """One board (a new one each round: fresh flash, its own id), through a relay at ``rate``:
        BEGIN to SWITCHING."""
        from gateway.control_socket import request, socket_path
        from tests.firmware.simdevice import EXIT_RESET, SimDevice, base_config
        from tools.flash.ota_key import BOARD_PATH, obtain
        from tools.release.pack import build_bundle, firmware_metadata

        relay = self.relay = ThrottledRelay({"mqtt": (self.broker.host, self.broker.port)}, rate)
        flash = self.work / f"flash-{counter}"
        flash.mkdir()
        device = f"bench-ota-{counter}"
        (flash / BOARD_PATH).write_bytes(obtain(self.devices_dir / device))
        cfg = base_config(relay.ports["mqtt"], device, sample={"rate_hz": 5, "batch": 5}, health_s=30)
        board = SimDevice(flash, cfg).start()
        try:
            self._wait(lambda: self._online(device), 60, "the board's BIRTH at the gateway")
            bundle = build_bundle(
                self.work / f"fw-{counter}.bundle",
                key=self.release_key,
                files=files,
                kind="firmware",
                name=NAME,
                version=f"bench-{counter}",
                counter=counter,
                entry="",
                sites=(),
                gateways=(),
                created=time.time(),
                expires=time.time() + 3600,
                firmware=firmware_metadata(
                    arch="native",
                    fw_version=f"bench-{counter}",
                    devices=[device],
                    canary=[],
                    wave=1,
                    max_failure_rate=0,
                ),
            )
            with self._lock:
                mark = len(self.events)
            answer = request(socket_path(self.data_dir), {"op": "update.install", "file": str(bundle)}, timeout=60)
            if not answer.get("ok"):
                raise RuntimeError(f"update.install refused: {answer}")
            start = self._wait(lambda: self.state_seen("transferring", device, mark), 60, "the transfer's start")
            proc = board.proc
            assert proc is not None
            self._wait(lambda: proc.poll() is not None or self.state_seen("failed", device, mark), 600, "the switch")
            ended = time.monotonic()
            conns = relay.finished()
            rc = proc.poll()
            state = json.loads((flash / "ota.json").read_text()) if (flash / "ota.json").exists() else {}
            if rc != EXIT_RESET or not state.get("trial"):
                raise RuntimeError(f"the board did not switch (exit {rc}, ota.json {state}): {board.text()[-1500:]}")
        finally:
            board.kill()
            relay.close()
        return {
            # from the gateway's record of BEGIN sent (seen by the monitor) to the board's reset
            # after its last file was checked and the new slot set on trial
            "seconds": ended - start[0],
            "up": sum(c.up for c in conns) - start[2],
            "down": sum(c.down for c in conns) - start[3],
            "stream": int(start[1]["total"]),
        }

    def _online(self, device: str) -> bool:
        from gateway.registry import read_devices

        rows = {d["device"]: d for d in read_devices(self.data_dir / "registry.sqlite")}
        return device in rows and bool(rows[device]["online"])

    def stop(self) -> None:
        self.monitor.close()
        if self.gateway.poll() is None:
            self.gateway.send_signal(signal.SIGTERM)
            self.gateway.wait(30)
        self.log.close()
        self.broker.stop()


def release_files(work: Path, quick: bool) -> dict[str, bytes]:
    """The xtensawin build as a firmware bundle takes it (quick: its first ~16 KB of files)."""
    from tools.flash.build import build
    from tools.release.pack import firmware_files

    out, _ = build("xtensawin", out_dir=work / "build" / "xtensawin")
    files, _entry = firmware_files(out)
    if quick:
        keep: dict[str, bytes] = {}
        for path in sorted(files):
            if sum(map(len, keep.values())) > 16_000:
                break
            keep[path] = files[path]
        files = keep
    return files


def rows(quick: bool = False) -> list[dict[str, Any]]:
    rounds = 1 if quick else 3
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ota-") as tmp:
        work = Path(tmp)
        files = release_files(work, quick)
        payload = sum(len(d) for d in files.values())
        site = Site(work)
        try:
            counter = 0
            for rep in range(rounds):
                modes: Sequence[tuple[str, float | None]] = (("mqtt", None), ("mqtt-115200", SERIAL_BPS))
                for mode, rate in modes if rep % 2 == 0 else modes[::-1]:
                    counter += 1
                    r = site.transfer(files, counter, rate)
                    out.append({"mode": mode, "files": len(files), "payload": payload, **r})
        finally:
            site.stop()
    return out


def render(all_rows: Sequence[dict[str, Any]]) -> str:
    payload = all_rows[0]["payload"]
    files = all_rows[0]["files"]
    serial_s = payload / SERIAL_BPS

    def med(mode: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in all_rows if r["mode"] == mode)

    n = sum(1 for r in all_rows if r["mode"] == "mqtt")
    stream = all_rows[0]["stream"]
    lines = [
        f"Firmware: the xtensawin build{' (quick: its first files only)' if files < 20 else ''}, {files} files, {payload:,} B of payload ({stream:,} B with the "
        f"manifest); medians of {n} round(s) per mode, interleaved. Baseline: the same payload at 115200 baud "
        "8N1 (11,520 B/s), what a USB-serial deploy costs at best: computed from the payload's size, not "
        "measured. Time: from the gateway's BEGIN to the board's reset into the new slot (every file written "
        "and its SHA-256 checked); the new slot's boot and confirmation are not included (an xtensawin slot "
        "cannot run on the unix port).",
        "",
        "| transfer | time (s) | x serial baseline | bytes to the board | bytes from the board "
        "| wire bytes / payload | serial baseline: time (s) / bytes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for mode, what in (
        ("mqtt", "OTA over MQTT (loopback, gateway rollout)"),
        ("mqtt-115200", "OTA over MQTT, link throttled to 11,520 B/s each way"),
    ):
        t, up, down = med(mode, "seconds"), med(mode, "up"), med(mode, "down")
        lines.append(
            f"| {what} | {t:.2f} | {t / serial_s:.2f} | {down:,.0f} | {up:,.0f} | {(up + down) / payload:.3f} "
            f"| {serial_s:.2f} / {payload:,} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return cli.run("edgeline firmware OTA benchmark (real gateway, Mosquitto, unix-port board)", rows, render, argv)


if __name__ == "__main__":
    raise SystemExit(main())
