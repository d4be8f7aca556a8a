"""TLS on the device: what mutual TLS costs the firmware on the MicroPython unix port, each
figure beside plain TCP measured in the same run (interleaved round by round).

1. The firmware's MQTT transport (port/mqtt.py, port/tls.py) against a real Mosquitto with a
   plain listener and a listener requiring client certificates (tests/firmware/tls_site.py,
   certificates from tools/flash/pki.py), every connection through a counting TCP relay:
   connect time (TCP + TLS handshake + CONNECT/CONNACK + the two SUBACKs: what every
   reconnect costs, as the board resumes no TLS session), the handshake alone, one QoS 1
   DATA frame to its PUBACK, bytes on the wire per session opened and per DATA frame (TCP
   payload, both directions), the heap (gc.mem_alloc) of the TLS context made at start-up,
   of a live session and after many reconnects. On the unix port (and on ESP32) mbedTLS
   keeps its record buffers outside the MicroPython heap; on rp2 they are on it
   (docs/firmware.md "TLS"): their size is stated from the build's configuration.
2. Capture while handshakes happen on a slow link: the real firmware (firmware/main.py, the
   simulated ESP32) streaming 100 Hz x 6 channels through a relay adding latency both ways,
   with two network outages forcing two reconnects; sequence gaps at the gateway, ring
   overruns, FIFO overflows, scheduler drops and the longest main-loop step.

    .venv/bin/python -m bench.bench_tls [--quick]
"""

from __future__ import annotations

import ast
import contextlib
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import cli

ROOT = Path(__file__).resolve().parent.parent
#: mbedTLS record buffers per TLS socket in MicroPython's configuration
#: (extmod/mbedtls/mbedtls_config_common.h: IN content 16384, OUT content 4096; CBC and
#: SHA-384 enabled: 320 bytes of payload overhead each, 13 of header; ssl_misc.h)
MBEDTLS_IN_BUFFER = 16384 + 320 + 13
MBEDTLS_OUT_BUFFER = 4096 + 320 + 13


@dataclass
class Conn:
    mode: str
    up: int = 0  # device -> broker
    down: int = 0  # broker -> device
    threads: list[threading.Thread] = field(default_factory=list)


class CountingRelay:
    """A TCP relay per upstream port, counting the bytes of each connection in both
    directions, optionally holding every chunk back by ``delay_s`` (a slow link)."""

    def __init__(self, upstreams: dict[str, tuple[str, int]], delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.conns: list[Conn] = []
        self.ports: dict[str, int] = {}
        self._listeners: list[socket.socket] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        for mode, upstream in upstreams.items():
            listener = socket.create_server(("127.0.0.1", 0))
            self.ports[mode] = listener.getsockname()[1]
            self._listeners.append(listener)
            threading.Thread(target=self._accept, args=(listener, mode, upstream), daemon=True).start()

    def _accept(self, listener: socket.socket, mode: str, upstream: tuple[str, int]) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            broker = socket.create_connection(upstream)
            for s in (client, broker):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Conn(mode)
            with self._lock:
                self.conns.append(conn)
                self._sockets += [client, broker]
            for src, dst, up in ((client, broker, True), (broker, client, False)):
                t = threading.Thread(target=self._pump, args=(src, dst, conn, up), daemon=True)
                conn.threads.append(t)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket, conn: Conn, up: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if up:
                    conn.up += len(data)
                else:
                    conn.down += len(data)
                if self.delay_s:
                    time.sleep(self.delay_s)  # the link's latency
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def finished(self) -> list[Conn]:
        """Every connection so far, once both its directions have ended."""
        for c in list(self.conns):
            for t in c.threads:
                t.join(10)
        return list(self.conns)

    def close(self) -> None:
        for s in self._listeners + self._sockets:
            with contextlib.suppress(OSError):
                s.close()


def _transport_run(rounds: int, frames: int) -> dict[str, Any]:
    from tests.firmware.tls_site import TLSSite
    from tests.support.upy import run_micropython

    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        d = Path(tmp)
        site = TLSSite(d / "site").start()
        relay = CountingRelay({"plain": (site.broker.host, site.broker.port), "tls": ("127.0.0.1", site.tls_port)})
        try:
            dev = d / "dev"
            site.provision(dev, "dev1")
            res = run_micropython(
                [
                    str(ROOT / "bench" / "upy_tls_cost.py"),
                    str(relay.ports["plain"]),
                    str(relay.ports["tls"]),
                    str(dev / "certs"),
                    str(rounds),
                    str(frames),
                ],
                cwd=dev,
                timeout=600,
            )
            conns = relay.finished()
        finally:
            relay.close()
            site.stop()
    text = res.stdout.decode()
    if res.returncode != 0:
        raise RuntimeError(text + res.stderr.decode())
    labels = [ln[5:] for ln in text.splitlines() if ln.startswith("CONN ")]
    if len(labels) != len(conns):
        raise RuntimeError(f"{len(labels)} connections made, the relay saw {len(conns)}")
    out: dict[str, Any] = ast.literal_eval([ln for ln in text.splitlines() if ln.startswith("RESULT ")][-1][7:])
    # each mode: (session that only opens, session with `frames` DATA frames) per round
    wire: dict[str, list[tuple[int, int]]] = {}
    for label, c in zip(labels, conns, strict=True):
        wire.setdefault(label, []).append((c.up, c.down))
    out["wire"] = wire
    out["frames"] = frames
    return out


def _capture_run(mode: str, seconds: float, delay_s: float, link_down: str) -> dict[str, Any]:
    from shared_protocol import DATA, DEATH, HEALTH
    from tests.firmware.gateway_stub import GatewayStub
    from tests.firmware.simdevice import SimDevice, base_config
    from tests.firmware.tls_site import TLSSite

    with tempfile.TemporaryDirectory(prefix="bench-tls-cap-") as tmp:
        d = Path(tmp)
        site = TLSSite(d / "site").start()
        upstream = (site.broker.host, site.broker.port) if mode == "plain" else ("127.0.0.1", site.tls_port)
        relay = CountingRelay({mode: upstream}, delay_s=delay_s)
        gw = GatewayStub(site.broker.host, site.broker.port).start()
        try:
            flash = d / "flash"
            flash.mkdir()
            broker: dict[str, Any] = {"port": relay.ports[mode], "timeout_ms": 2000, "keepalive_s": 30}
            if mode == "tls":
                site.provision(flash, "dev1")
                broker = site.broker_config(**broker)
            cfg = base_config(
                relay.ports[mode], broker=broker, sample={"rate_hz": 100, "batch": 32}, health_s=1, watchdog_ms=0
            )
            dev = SimDevice(flash, cfg)
            rc = dev.run(
                timeout=120,
                EDGELINE_SIM_DURATION_S=seconds,
                EDGELINE_SIM_DRAIN_S=10,
                EDGELINE_SIM_LINK_DOWN=link_down,
            )
            if rc != 0:
                raise RuntimeError(dev.text()[-2000:])
            st = dev.stats()
            with gw.lock:
                seqs = {r.frame.seq for r in gw.frames if r.frame.boot == st["boot"] and r.frame.type != DEATH}
                step = max((r.frame.fields["worst_latency_us"] for r in gw.frames if r.frame.type == HEALTH), default=0)
                data = len({r.frame.seq for r in gw.frames if r.frame.type == DATA})
        finally:
            gw.stop()
            relay.close()
            site.stop()
    return {
        "mode": mode,
        "connects": st["connects"],
        "frames": st["frames"],
        "data_received": data,
        "seq_gaps": st["seq"] - len(seqs & set(range(st["seq"]))),
        "overruns": st["overruns"],
        "fifo_overflows": st["fifo_overflows"],
        "sched_dropped": st["sched_dropped"],
        "dropped": st["dropped"],
        "longest_step_ms": step / 1000,
        "min_free_heap": st["min_free_heap"],
    }


def rows(quick: bool = False) -> list[dict[str, Any]]:
    t = _transport_run(rounds=2 if quick else 15, frames=5 if quick else 40)
    out: list[dict[str, Any]] = [{"kind": "transport", **t}]
    delay = 0.05
    seconds = 3.0 if quick else 8.0
    link_down = "1-1.5" if quick else "2-2.5,5-5.5"
    for rep in range(1 if quick else 2):
        for mode in ("plain", "tls") if rep % 2 == 0 else ("tls", "plain"):
            out.append(
                {
                    "kind": "capture",
                    "delay_s": delay,
                    "seconds": seconds,
                    **_capture_run(mode, seconds, delay, link_down),
                }
            )
    return out


def _ms(values: Sequence[float], digits: int = 1) -> str:
    return f"{statistics.median(values) / 1000:.{digits}f}"


def _per_frame(wire: dict[str, list[tuple[int, int]]], mode: str, frames: int) -> tuple[float, float]:
    opens, fulls = wire[mode][0::2], wire[mode][1::2]
    up = statistics.median([(f[0] - o[0]) / frames for o, f in zip(opens, fulls, strict=False)])
    down = statistics.median([(f[1] - o[1]) / frames for o, f in zip(opens, fulls, strict=False)])
    return up, down


def render(all_rows: Sequence[dict[str, Any]]) -> str:
    t = next(r for r in all_rows if r["kind"] == "transport")
    w, n = t["wire"], t["frames"]
    rounds = len(t["plain_connect"])

    def opened(mode: str) -> str:
        ups = [u for u, _ in w[mode][0::2]]
        downs = [dn for _, dn in w[mode][0::2]]
        return f"{statistics.median(ups):.0f} + {statistics.median(downs):.0f}"

    pu, pd = _per_frame(w, "plain", n)
    tu, td = _per_frame(w, "tls", n)
    hs = w["handshake"]
    ng_up, ng_down = _per_frame(w, "nogather", n)
    lines = [
        f"MQTT transport of the firmware (port/mqtt.py), unix port, {rounds} rounds, plain and TLS interleaved "
        "(times: median; bytes: TCP payload device -> broker + broker -> device, counted by a relay)",
        "",
        "| figure | plain TCP | mutual TLS (ECDHE-ECDSA P-256, AES-256-GCM) |",
        "|---|---|---|",
        f"| connect: TCP + handshake + CONNECT/CONNACK + 2 SUBACKs (every reconnect), ms "
        f"| {_ms(t['plain_connect'])} | {_ms(t['tls_connect'])} |",
        f"| of which TCP connect + TLS handshake alone, ms | - | {_ms(t['tls_handshake'])} |",
        f"| QoS 1 DATA frame (411 B) to its PUBACK, ms | {_ms(t['plain_publish'], 2)} | {_ms(t['tls_publish'], 2)} |",
        f"| bytes to open a session (connect, subscribe, clear DEATH) | {opened('plain')} | {opened('tls')} |",
        f"| of which the TLS handshake alone (certificates both ways) | - "
        f"| {statistics.median([u for u, _ in hs]):.0f} + {statistics.median([dn for _, dn in hs]):.0f} |",
        f"| bytes per DATA frame of 411 B (PUBLISH + PUBACK) | {pu:.0f} + {pd:.0f} | {tu:.0f} + {td:.0f} |",
        f"| the same without write gathering (umqtt's 5 writes = 5 records) | - | {ng_up:.0f} + {ng_down:.0f} |",
        f"| heap at start-up: transport object (TLS: + port/tls.py, ssl, context with key, cert, CA) "
        f"| {t['plain_transport']:,} | {t['tls_transport']:,} |",
        f"| heap of a live session (gc.mem_alloc, after gc.collect) | {statistics.median(t['plain_session']):,.0f} "
        f"| {statistics.median(t['tls_session']):,.0f} |",
        f"| allocated during one connect, garbage included (bounds its peak) "
        f"| {statistics.median(t['plain_connect_garbage']):,.0f} "
        f"| {statistics.median(t['tls_connect_garbage']):,.0f} |",
        f"| heap growth over {t['reconnects']} more reconnects (a leak would show) | {t['plain_reconnect_growth']:,} "
        f"| {t['tls_reconnect_growth']:,} |",
        f"| mbedTLS record buffers per TLS session (not in the figures above on this port) | - "
        f"| {MBEDTLS_IN_BUFFER + MBEDTLS_OUT_BUFFER:,} ({MBEDTLS_IN_BUFFER:,} in + {MBEDTLS_OUT_BUFFER:,} out) |",
    ]
    caps = [r for r in all_rows if r["kind"] == "capture"]
    if caps:
        c0 = caps[0]
        lines += [
            "",
            f"Capture during reconnects on a slow link: the firmware (simulated ESP32, MPU-6050 100 Hz x 6 channels, "
            f"32 samples per frame) for {c0['seconds']:g} s with {c0['delay_s'] * 1000:.0f} ms added each way and "
            "network outages forcing reconnects; runs interleaved",
            "",
            "| run | connects | DATA frames made / received | sequence gaps | ring overruns | FIFO overflows "
            "| scheduler drops | longest main-loop step, ms | lowest free heap at HEALTH, B |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for c in caps:
            lines.append(
                f"| {c['mode']} | {c['connects']} | {c['frames']} / {c['data_received']} | {c['seq_gaps']} "
                f"| {c['overruns']} | {c['fifo_overflows']} | {c['sched_dropped']} | {c['longest_step_ms']:.0f} "
                f"| {c['min_free_heap']:,} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return cli.run("edgeline TLS-on-the-device benchmark (MicroPython unix port)", rows, render, argv)


if __name__ == "__main__":
    raise SystemExit(main())
