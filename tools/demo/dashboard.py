"""The live terminal dashboard (rich), and the one-line progress of the non-interactive mode."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tools.demo.monitor import Monitor


def _age(now: float, then: float) -> str:
    return "-" if not then else f"{now - then:4.1f} s ago"


def devices_table(mon: Monitor) -> Table:
    t = Table(title="devices (virtual boards: real firmware on the MicroPython unix port)", expand=True)
    for col in ("device", "state", "rate", "last seen", "frames", "replayed", "readings", "queue", "dropped", "alerts"):
        t.add_column(col, justify="right" if col not in ("device", "state") else "left")
    now = mon.now()
    for name in sorted(mon.devices):
        d = mon.devices[name]
        h = d.health
        state = Text("online", style="green") if d.online else Text("offline", style="red")
        if d.online and now - d.last_seen > 5:
            state = Text("silent", style="yellow")
        t.add_row(
            name,
            state,
            f"{d.rate_hz:g} Hz",
            _age(now, d.last_seen),
            str(d.data_frames),
            str(d.historical_frames),
            f"{d.readings:,}",
            str(h.get("queue_depth", "-")),
            str(h.get("dropped_frames", "-")),
            Text(str(d.alerts), style="bold red") if d.alerts else "0",
        )
    return t


def alerts_table(mon: Monitor, last: int = 6) -> Table:
    t = Table(title="alerts (as they arrive on the local broker)", expand=True)
    for col in ("at", "device", "state", "score", "threshold", "publish -> alert", "in gateway"):
        t.add_column(col, justify="right" if col not in ("device", "state") else "left")
    for a in mon.alerts[-last:]:
        t.add_row(
            f"{a.at:6.1f} s",
            a.device,
            a.state,
            f"{a.score:.4f}",
            f"{a.threshold:.4f}",
            f"{a.latency_ms:.1f} ms" if a.latency_ms is not None else "-",
            f"{a.gateway_ms:.2f} ms",
        )
    return t


def gateway_panel(mon: Monitor, status: dict[str, Any], cloud_up: bool, rates: dict[str, float]) -> Panel:
    frames = status.get("frames", {})
    fwd = status.get("forward") or {}
    lines = [
        f"ingest: {rates.get('readings', 0.0):,.0f} readings/s, {rates.get('frames', 0.0):,.1f} frames/s"
        f"   total {frames.get('readings', 0):,} readings, {frames.get('received', 0):,} frames,"
        f" bad {status.get('bad_frames', {}).get('total', 0)}",
        f"acks sent: {status.get('acks', {}).get('sent', 0)}   alerts: {status.get('alerts', 0)}"
        f"   actuator commands: {status.get('commands', 0)}",
    ]
    lanes = fwd.get("lanes") or {}
    lane_text = "  ".join(
        f"{name} {int(info.get('depth', 0)) + int(info.get('buffered', 0))}" if isinstance(info, dict) else f"{name}"
        for name, info in lanes.items()
    )
    conn = fwd.get("connection")
    state = conn.get("state", "-") if isinstance(conn, dict) else "-"
    cloud = Text("up", style="green") if cloud_up else Text("CUT by the demo", style="bold red")
    lines.append(f"forward queue: {lane_text or '-'}   link: {state}")
    body = Text("\n".join(lines))
    body.append("\nuplink to the cloud: ")
    body.append(cloud)
    body.append(f"   records delivered to the cloud: {sum(len(v) for v in mon.cloud_keys.values())}")
    return Panel(body, title="gateway (Raspberry Pi role)")


def render(mon: Monitor, status: dict[str, Any], cloud_up: bool, rates: dict[str, float], phase: str) -> Group:
    header = Text(f"edgeline fleet demo   t = {mon.now():5.1f} s   {phase}", style="bold")
    return Group(header, devices_table(mon), gateway_panel(mon, status, cloud_up, rates), alerts_table(mon))


class RateMeter:
    """Readings/s and frames/s from the gateway's counters, over the last few seconds."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int, int]] = []

    def update(self, status: dict[str, Any]) -> dict[str, float]:
        frames = status.get("frames", {})
        now = time.monotonic()
        self.samples.append((now, int(frames.get("readings", 0)), int(frames.get("received", 0))))
        self.samples = [s for s in self.samples if now - s[0] <= 5.0]
        if len(self.samples) < 2 or self.samples[-1][0] == self.samples[0][0]:
            return {"readings": 0.0, "frames": 0.0}
        (t0, r0, f0), (t1, r1, f1) = self.samples[0], self.samples[-1]
        return {"readings": (r1 - r0) / (t1 - t0), "frames": (f1 - f0) / (t1 - t0)}


def progress_line(mon: Monitor, status: dict[str, Any], cloud_up: bool, phase: str) -> str:
    frames = status.get("frames", {})
    online = sum(1 for d in mon.devices.values() if d.online)
    return (
        f"[{mon.now():5.1f} s] {phase:<28} devices online {online}/{len(mon.devices)}"
        f"  readings {frames.get('readings', 0):>8,}  alerts {sum(d.alerts for d in mon.devices.values()):>3}"
        f"  cloud {'up' if cloud_up else 'DOWN'}  delivered {sum(len(v) for v in mon.cloud_keys.values()):>4}"
    )
