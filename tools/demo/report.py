"""The demo's closing report: figures, the 'nothing lost' checks, and a chart (HTML + SVG)."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from tools.demo.monitor import Monitor


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return float(ordered[idx])


def cloud_check(mon: Monitor, status: dict[str, Any]) -> dict[str, Any]:
    """Every record the forwarder accepted reached the cloud; duplicates carry the same key."""
    delivered_unique = {lane: len(set(keys)) for lane, keys in mon.cloud_keys.items()}
    duplicates = sum(len(keys) - len(set(keys)) for keys in mon.cloud_keys.values())
    fwd = status.get("forward") or {}
    lanes = fwd.get("lanes") or {}
    pending = sum(int(v.get("depth", 0)) + int(v.get("buffered", 0)) for v in lanes.values() if isinstance(v, dict))
    accepted = {lane: int(info.get("submitted", 0)) for lane, info in lanes.items() if isinstance(info, dict)}
    missing = {
        lane: accepted[lane] - delivered_unique.get(lane, 0)
        for lane in accepted
        if accepted[lane] > delivered_unique.get(lane, 0)
    }
    losses = fwd.get("losses") or {}
    return {
        "delivered": delivered_unique,
        "duplicates_same_key": duplicates,
        "still_queued": pending,
        "accepted": accepted,
        "missing": missing,
        "losses": losses,
    }


def build(
    mon: Monitor, status: dict[str, Any], device_stats: dict[str, dict[str, Any]], duration: float
) -> dict[str, Any]:
    latencies = [a.latency_ms for a in mon.alerts if a.latency_ms is not None and not a.historical]
    in_gateway = [a.gateway_ms for a in mon.alerts]
    devices = {}
    for name, d in sorted(mon.devices.items()):
        st = device_stats.get(name, {})
        devices[name] = {
            "data_frames": d.data_frames,
            "replayed_frames": d.historical_frames,
            "repeated_frames": d.repeated_frames,  # sent twice (a late ACK): counted once
            "readings": d.readings,
            "missing_seqs": d.missing_seqs(),
            "queue_dropped": st.get("dropped", st.get("dropped_frames", 0)),
            "alerts": d.alerts,
            "commands_received": d.commands,
            "wire_bytes": d.wire_bytes,
            "json_bytes": d.json_bytes,
        }
    readings = sum(d.readings for d in mon.devices.values())
    wire = sum(d.wire_bytes for d in mon.devices.values())
    json_bytes = sum(d.json_bytes for d in mon.devices.values())
    seq = status.get("sequence", {})
    # A gap the device later filled by replaying its queue is not a loss.
    gaps = sum(
        int(v.get("missing_frames", 0)) - int(v.get("recovered", 0)) for v in seq.values() if isinstance(v, dict)
    )
    cloud = cloud_check(mon, status)
    lost_devices = sum(v["missing_seqs"] + int(v["queue_dropped"] or 0) for v in devices.values())
    return {
        "duration_s": duration,
        "readings": readings,
        "frames": sum(d.data_frames for d in mon.devices.values()),
        "gateway_readings": status.get("frames", {}).get("readings", 0),
        "alerts": len(mon.alerts),
        "alerts_by_device": {n: d["alerts"] for n, d in devices.items() if d["alerts"]},
        "first_alert_s": {n: min(a.at for a in mon.alerts if a.device == n) for n in {a.device for a in mon.alerts}},
        "alert_latency_ms": {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "n": len(latencies)},
        "gateway_decision_ms": {"p50": percentile(in_gateway, 50), "p99": percentile(in_gateway, 99)},
        "actuator_commands": sum(d.commands for d in mon.devices.values()),
        "wire_bytes_per_reading": wire / readings if readings else None,
        "json_bytes_per_reading": json_bytes / readings if readings else None,
        "gateway_unrecovered_frames": gaps,
        "devices": devices,
        "cloud": cloud,
        "bad_frames": mon.bad_frames,
        "nothing_lost": lost_devices == 0 and gaps == 0 and not cloud["missing"] and cloud["still_queued"] == 0,
    }


def text(report: dict[str, Any]) -> str:
    lat = report["alert_latency_ms"]
    wire = report["wire_bytes_per_reading"]
    js = report["json_bytes_per_reading"]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f} ms"

    lines = [
        "edgeline fleet demo: report",
        f"  ran {report['duration_s']:.0f} s with {len(report['devices'])} virtual boards",
        f"  readings {report['readings']:,} in {report['frames']:,} DATA frames"
        f" (gateway decoded {report['gateway_readings']:,})",
        f"  alerts {report['alerts']} {report['alerts_by_device'] or ''}; actuator commands {report['actuator_commands']}",
        f"  device publish -> alert on the broker: p50 {ms(lat['p50'])}, p99 {ms(lat['p99'])} ({lat['n']} live alerts)",
    ]
    if wire and js:
        lines.append(
            f"  bytes on the wire per reading: {wire:.2f} (the same readings as Tasmota-style JSON: {js:.1f},"
            f" {js / wire:.0f}x more)"
        )
    c = report["cloud"]
    lines.append(
        f"  cloud: delivered {sum(c['delivered'].values())} records {c['delivered']}, still queued {c['still_queued']},"
        f" re-sent with the same key {c['duplicates_same_key']}"
    )
    for name, d in report["devices"].items():
        lines.append(
            f"  {name}: {d['data_frames']} frames ({d['replayed_frames']} replayed after an outage),"
            f" missing {d['missing_seqs']}, dropped {d['queue_dropped']}"
        )
    lines.append(f"  nothing lost: {'yes' if report['nothing_lost'] else 'NO'}")
    return "\n".join(lines)


def chart_html(mon: Monitor, report: dict[str, Any], cloud_cut: tuple[float, float], path: Path) -> None:
    """Anomaly score over time per device (max per summary interval), alerts marked."""
    width, height, pad, pad_right = 900, 360, 60, 90
    series = {d: pts for d, pts in mon.scores.items() if pts}
    tmax = max(
        [float(report["duration_s"])] + [p[0] for pts in series.values() for p in pts] + [a.at for a in mon.alerts]
    )
    values = [p[2] for pts in series.values() for p in pts] + [a.score for a in mon.alerts]
    values += [a.threshold for a in mon.alerts]
    positive = [v for v in values if v > 0] or [1.0]
    # Log scale: a healthy machine scores near the threshold, a failing one hundreds of times higher.
    lo, hi = math.log10(min(positive)) - 0.2, math.log10(max(positive)) + 0.2

    def x(t: float) -> float:
        return pad + (width - pad - pad_right) * max(0.0, t) / tmax

    def y(v: float) -> float:
        frac = (math.log10(max(v, 10**lo)) - lo) / (hi - lo)
        return height - pad - (height - 2 * pad) * frac

    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
        f'<rect x="{x(cloud_cut[0] * report["duration_s"]):.1f}" y="{pad}" '
        f'width="{x(cloud_cut[1] * report["duration_s"]) - x(cloud_cut[0] * report["duration_s"]):.1f}" '
        f'height="{height - 2 * pad}" fill="#eee"/>',
        f'<text x="{x(cloud_cut[0] * report["duration_s"]) + 4:.1f}" y="{pad + 14}" fill="#888">cloud cut</text>',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad_right}" y2="{height - pad}" stroke="black"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="black"/>',
        f'<text x="{width / 2:.0f}" y="{height - 12}" text-anchor="middle">time (s)</text>',
        f'<text x="14" y="{height / 2:.0f}" transform="rotate(-90 14 {height / 2:.0f})" text-anchor="middle">'
        "anomaly score (log scale)</text>",
    ]
    for decade in range(math.ceil(lo), math.floor(hi) + 1):
        parts.append(f'<text x="{pad - 6}" y="{y(10.0**decade) + 4:.1f}" text-anchor="end">1e{decade}</text>')
    for i in range(6):
        t = tmax * i / 5
        parts.append(f'<text x="{x(t):.1f}" y="{height - pad + 16}" text-anchor="middle">{t:.0f}</text>')
    thresholds = {a.threshold for a in mon.alerts}
    for th in thresholds:
        parts.append(
            f'<line x1="{pad}" y1="{y(th):.1f}" x2="{width - pad_right}" y2="{y(th):.1f}" stroke="red" stroke-dasharray="4 3"/>'
        )
    for i, (device, pts) in enumerate(sorted(series.items())):
        colour = colours[i % len(colours)]
        path_d = " ".join(
            f"{'M' if j == 0 else 'L'}{x(t):.1f},{y(m):.1f}" for j, (t, _mean, m) in enumerate(sorted(pts))
        )
        parts.append(f'<path d="{path_d}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(
            f'<text x="{width - pad_right + 6}" y="{pad + 16 * i + 10}" fill="{colour}">{html.escape(device)}</text>'
        )
    for a in mon.alerts:
        parts.append(
            f'<circle cx="{x(a.at):.1f}" cy="{y(a.score):.1f}" r="3" fill="red"><title>{html.escape(a.device)} '
            f"score {a.score:.4f} at {a.at:.1f} s</title></circle>"
        )
    parts.append("</svg>")
    body = (
        "<!doctype html><meta charset='utf-8'><title>edgeline fleet demo</title>"
        "<h1>edgeline fleet demo</h1><p>Anomaly score of each vibration device over time (maximum per"
        " summary interval, as forwarded to the cloud); red dots are alerts, the dashed line the"
        " model's threshold, the grey band the cloud outage.</p>"
        + "".join(parts)
        + "<h2>Report</h2><pre>"
        + html.escape(text(report))
        + "</pre><h2>Figures</h2><pre>"
        + html.escape(json.dumps(report, indent=1))
        + "</pre>"
    )
    path.write_text(body)
