"""The gateway's status report (status.json, ``edgeline-gateway status``): plain data.

Per-device sections (sequence counters, window counters, online state, bad frames) grow with
the fleet: about 300 bytes per device, 3 MB and half a second of work at 10,000 devices. Up to
``gateway.status_detail_devices`` devices they are part of the report; beyond, the report
carries fleet totals and ``detail()`` is written apart, less often (gateway/runner.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from gateway.scoring import INFERENCE_BUCKETS_S
from gateway.sequence import SequenceCounters

if TYPE_CHECKING:
    from gateway.pipeline import Gateway

STALE_GRACE_S = 10.0  # a status this much older than its interval means a hung or dead gateway


def report(gw: Gateway, *, detail_sections: bool = True) -> dict[str, Any]:
    """The status; with the per-device sections when the fleet is small enough for them (and
    ``detail_sections``: the status page's snapshot, rebuilt each second, goes without)."""
    c = gw.counters
    acks = gw.acker.stats
    out: dict[str, Any] = {
        "gateway": gw.config.gateway.id,
        "site": gw.site,
        "uptime_s": round(gw.clock() - gw.started, 1),
        "frames": {
            "batches": c.batches,
            "received": c.frames,
            "by_kind": dict(c.by_kind),
            "data_accepted": c.data_frames,
            "readings": c.readings,
            "no_schema": c.no_schema,
            "pending_dropped": c.pending_dropped,
            "empty_ignored": c.empty,
        },
        "bad_frames": {"total": gw.bad.total, "by_reason": _by_reason(gw), "sample": list(gw.bad.sample)[-10:]},
        "sequence_totals": _totals(_plain(s) for s in gw.sequence.counters.values()),
        "repair": {
            "resend_requests": gw.repair.requests,
            "devices_waiting": gw.repair.pending(),
            "given_up": gw.repair.given_up,
            "loss_frames": c.loss_frames,
        },
        "admission": gw.admission.stats(),
        "acks": {
            "sent": acks.sent,
            "ranges": acks.ranges,
            "resynced": acks.resynced,
            "refused": acks.refused,
            "dropped_ranges": acks.dropped_ranges,
            "waiting_devices": gw.acker.waiting(),
        },
        "rebirth_requests": c.rebirth_requests,
        "raw_requests": gw.raw_requests.stats() if gw.raw_requests is not None else None,
        "alerts": c.alerts,
        "alerts_cleared": c.alerts_cleared,
        "alerts_active": len(gw.alerts.active()),
        "alert_latency_ms_max": round(c.alert_latency_ms_max, 3),
        "commands": c.commands,
        "rules": gw.decider.rule_stats(),
        "publish_failures": c.publish_failures,
        "local_state": dict(gw.local_state.published),  # retained messages on _state/... by kind
        "homeassistant": (
            {"commands": gw.ha.commands, "refused": dict(gw.ha.refused)} if gw.ha is not None else {"enabled": False}
        ),
        "summaries": c.summaries,
        "summaries_rebuilt": c.summaries_rebuilt,
        "pipelines": {
            s.name: {
                "model_version": s.spec.version,
                "windows_scored": s.stats.windows_scored,
                "calls": s.stats.calls,
                "inference_s": round(s.stats.seconds, 3),
                "inference_histogram": {  # per model call (/metrics: edgeline_inference_seconds)
                    "le": list(INFERENCE_BUCKETS_S),
                    "counts": list(s.stats.call_buckets),
                    "sum": s.stats.seconds,
                },
                "unmatched_devices": dict(s.stats.unmatched_devices),
                "window_totals": _totals(s.window_stats().values()),
                "shadow": s.shadow.status() if s.shadow is not None else None,  # a candidate model ([updates])
                # per-device calibration ([[pipelines]] calibrate), each device up to status_detail_devices
                "calibration": (
                    s.calibration.status(limit=gw.config.gateway.status_detail_devices)
                    if s.calibration is not None
                    else None
                ),
            }
            for s in gw.stages
        },
        "rawlog": vars(gw.rawlog.stats()),
        "fleet": {
            "devices": len(gw.registry.devices),
            "online": sum(1 for i in gw.registry.devices.values() if i.online),
        },
    }
    if detail_sections and with_detail(gw):
        merge_detail(out, detail(gw))
    return out


def _by_reason(gw: Gateway) -> dict[str, int]:
    """Rejected frames per reason, over every device (at most MAX_BAD_DEVICES of them)."""
    out: dict[str, int] = {}
    for per in list(gw.bad.counts.values()):
        for reason, n in list(per.items()):
            out[reason] = out.get(reason, 0) + n
    return dict(sorted(out.items()))


def with_detail(gw: Gateway) -> bool:
    return len(gw.registry.devices) <= gw.config.gateway.status_detail_devices


def detail(gw: Gateway) -> dict[str, Any]:
    """The per-device sections."""
    return {
        "bad_frames": {"by_device": gw.bad.counts},
        "sequence": {d: _plain(s) for d, s in sorted(gw.sequence.counters.items())},
        "pipelines": {s.name: {"windows": s.window_stats()} for s in gw.stages},
        "devices": {
            d: {"online": i.online, "state": i.state_reason, "last_seen": i.last_seen}
            for d, i in sorted(gw.registry.devices.items())
        },
    }


def merge_detail(out: dict[str, Any], more: dict[str, Any]) -> None:
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            merge_detail(out[key], value)
        else:
            out[key] = value


_COUNTERS = tuple(f.name for f in fields(SequenceCounters))


def _plain(c: SequenceCounters) -> dict[str, int]:
    return {name: getattr(c, name) for name in _COUNTERS}  # dataclasses.asdict is 10x slower


def _totals(rows: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for row in rows:
        for k, v in row.items():
            total[k] = total.get(k, 0) + v
    return total


def not_running(status: dict[str, Any], now: float) -> str | None:
    """Why the gateway that wrote ``status`` (status.json) is not running, or None while it runs:
    it wrote a final status, its process (``pid``) is gone, or its heartbeat (``written_at``,
    rewritten every ``status_interval_s`` by the processing loop) is stale: a hung gateway."""
    if status.get("running") is False:
        return "it stopped (its final status is shown)"
    pid = status.get("pid")
    if isinstance(pid, int) and pid > 0:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return f"its process {pid} is gone"
        except PermissionError:
            pass  # it exists, under another user
    interval = float(status.get("status_interval_s", 5.0))
    age = now - float(status.get("written_at", 0.0))
    if age > max(3 * interval, interval + STALE_GRACE_S):
        return f"its status is {age:.0f} s old (rewritten every {interval:g} s): it hangs or was stopped"
    return None


def ota_lines(ota: dict[str, Any]) -> list[str]:
    """The ``ota`` section (or rollout.json) as lines for people: a rollout, then its devices."""
    lines = []
    for name, r in sorted((ota.get("rollouts") or {}).items()):
        waves = r.get("waves") or []
        counts = r.get("counts") or {}
        if not counts:  # rollout.json: count from the devices
            for d in (r.get("devices") or {}).values():
                counts[d["state"]] = counts.get(d["state"], 0) + 1
        done = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        lines.append(
            f"rollout {name} {r['version']} (arch {r['arch']}, counter {r['counter']}): {r['state']}, "
            f"wave {min(int(r['wave']) + 1, len(waves))}/{len(waves)}; {done}"
            + (f"\n  {r['reason']}" if r.get("reason") else "")
        )
        for device, d in sorted((r.get("devices") or {}).items()):
            where = f" {d['offset']}/{d['total']} B" if d["state"] == "transferring" and "total" in d else ""
            why = f": {d['reason']}" if d.get("reason") and d["state"] in ("failed", "current", "pending") else ""
            lines.append(f"  {device:<20} {d['state']}{where}{why}")
    return lines
