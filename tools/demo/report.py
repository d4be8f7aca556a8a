"""The demo's closing report: figures, the 'nothing lost' checks, a short summary, and the gateway's
status page as it was at the end (status.html, opens offline)."""

from __future__ import annotations

import html
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
            "ota_commands": d.ota_commands,
            "fw_version": (d.birth or {}).get("fw_version"),  # from its last BIRTH
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
        "alerts": sum(d["alerts"] for d in devices.values()),  # episodes raised
        "alert_records": {st: sum(1 for a in mon.alerts if a.state == st) for st in ("raised", "updated", "cleared")},
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


def _per_device(counts: dict[str, Any]) -> str:
    return ", ".join(f"{name}: {n}" for name, n in sorted(counts.items())) or "none"


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
        f"  alert episodes {report['alerts']} ({_per_device(report['alerts_by_device'])}),"
        f" records {_per_device(report['alert_records'])}; actuator commands {report['actuator_commands']}",
        f"  device publish -> alert on the broker: p50 {ms(lat['p50'])}, p99 {ms(lat['p99'])} ({lat['n']} live alert records)",
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
    lines.append(_security_line(report.get("security") or {}))
    if report.get("updates"):
        from tools.demo.updates import lines as update_lines

        lines.extend("  " + line for line in update_lines(report["updates"]))
    lines.append(f"  nothing lost: {'yes' if report['nothing_lost'] else 'NO'}")
    return "\n".join(lines)


def _security_line(sec: dict[str, Any]) -> str:
    at_rest = sec.get("at_rest")
    disk = (
        f"  on disk: raw log and forward queue encrypted (AES-256-GCM, key {at_rest['active_key']})"
        if at_rest
        else "  on disk: not encrypted"
    )
    if "devices" not in sec:
        return f"  mutual TLS: off ({sec.get('why', 'not set up')})\n{disk}"
    boards = ", ".join(f"{cid} as {user}" for cid, user in sorted(sec["devices"].items()))
    cloud = ", ".join(sorted(set(sec["cloud"].values())))
    verdict = "yes" if sec["mtls"] else "NO: a hop ran without its certificate"
    return (
        f"  mutual TLS on every hop: {verdict}; boards -> local Mosquitto {sec['device_listener']}"
        f" (server {sec['server_name']}, certificate CN = username: {boards}); gateway -> cloud as {cloud}\n{disk}"
    )


def status_page(report: dict[str, Any], snapshot: dict[str, Any], path: Path) -> None:
    """The gateway's status page as it was at the end of the run (gateway/web/snapshot.py), one
    offline HTML file, with this report's summary below the plots."""
    from gateway.web.snapshot import snapshot_html

    story = report.get("story") or {}
    extra = (
        "<section><h2>The demo's report</h2>"
        f'<pre class="report">{html.escape(text(report))}</pre>'
        "<h3>The story</h3><ul>"
        + "".join(f"<li>{html.escape(d)}: {html.escape(what)}</li>" for d, what in (story.get("devices") or {}).items())
        + '</ul><p class="muted small">All figures: report.json beside this file.</p></section>'
    )
    path.write_text(
        snapshot_html(snapshot, title="edgeline fleet demo: the gateway at the end of the run", extra_html=extra)
    )
