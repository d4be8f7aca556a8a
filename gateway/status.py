"""The gateway's status report (status.json, ``edgeline-gateway status``): plain data."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.pipeline import Gateway


def report(gw: Gateway) -> dict[str, Any]:
    c = gw.counters
    acks = gw.acker.stats
    return {
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
        "bad_frames": {
            "total": gw.bad.total,
            "by_device": gw.bad.counts,
            "sample": list(gw.bad.sample)[-10:],
        },
        "sequence": {d: vars(s) for d, s in sorted(gw.sequence.counters.items())},
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
        "alert_latency_ms_max": round(c.alert_latency_ms_max, 3),
        "commands": c.commands,
        "rules": gw.decider.rule_stats(),
        "publish_failures": c.publish_failures,
        "summaries": c.summaries,
        "summaries_rebuilt": c.summaries_rebuilt,
        "pipelines": {
            s.name: {
                "model_version": s.spec.version,
                "windows_scored": s.stats.windows_scored,
                "calls": s.stats.calls,
                "inference_s": round(s.stats.seconds, 3),
                "unmatched_devices": dict(s.stats.unmatched_devices),
                "windows": s.window_stats(),
            }
            for s in gw.stages
        },
        "rawlog": vars(gw.rawlog.stats()),
        "devices": {
            d: {"online": i.online, "state": i.state_reason, "last_seen": i.last_seen}
            for d, i in sorted(gw.registry.devices.items())
        },
    }
