"""Prometheus ``/metrics``: a collector that reads the gateway's state at scrape time.

Nothing is counted twice: every value comes from the status the processing thread publishes
(gateway/web/state.py, about once a second) and from the live view's fleet rows. Counters are
``edgeline_..._total``, times in seconds, sizes in bytes (docs/gateway.md "Metrics" lists them).
Per-device series (last seen, online, RSSI, queue depth) are left out when the fleet has more
than ``gateway.status_detail_devices`` devices, so a large site cannot flood Prometheus.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from gateway.web.calibration_metrics import calibration_metrics
from gateway.web.state import WebState
from gateway.web.update_metrics import update_metrics

# The forwarder's link states (gateway/forward/forwarder.py): one gauge each, 1 for the current.
LINK_STATES = ("connected", "connecting", "disconnected", "refused", "stopped")
# Sequence counters exported, as (status key, metric name, help).
SEQUENCE = (
    ("gaps", "edgeline_sequence_gaps", "Gaps in devices' frame sequences (one per jump)."),
    ("missing_frames", "edgeline_sequence_missing_frames", "Frames skipped over by gaps."),
    ("recovered", "edgeline_sequence_recovered_frames", "Late or resent frames that filled a gap."),
    ("duplicates", "edgeline_sequence_duplicate_frames", "Frames received twice (counted once)."),
    ("lost_unanswered", "edgeline_sequence_lost_frames", "Missing frames given up on (never resent)."),
)


def _n(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


class GatewayCollector(Collector):
    def __init__(self, state: WebState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        st = self.state.status  # one published dict: consistent within a scrape
        if not st:
            return
        yield from self._ingest(st)
        yield from self._alerts(st)
        yield from self._pipelines(st)
        yield from self._forward(st.get("forward"))
        yield from self._devices(st)
        yield from update_metrics(st)
        yield from calibration_metrics(st)

    def _ingest(self, st: dict[str, Any]) -> Iterator[Metric]:
        info = InfoMetricFamily("edgeline_gateway", "The gateway's id and site.")
        info.add_metric([], {"gateway": str(st.get("gateway", "")), "site": str(st.get("site", ""))})
        yield info
        yield GaugeMetricFamily("edgeline_uptime_seconds", "Seconds since the gateway started.", _n(st.get("uptime_s")))
        frames = st.get("frames") or {}
        by_kind = CounterMetricFamily(
            "edgeline_ingest_frames", "Frames received from devices, by kind.", labels=["kind"]
        )
        for kind, n in sorted((frames.get("by_kind") or {}).items()):
            by_kind.add_metric([kind], _n(n))
        yield by_kind
        yield CounterMetricFamily(
            "edgeline_ingest_readings", "Readings decoded (one sample of one channel).", _n(frames.get("readings"))
        )
        yield CounterMetricFamily(
            "edgeline_ingest_data_frames",
            "DATA frames accepted (new, not duplicates).",
            _n(frames.get("data_accepted")),
        )
        bad = CounterMetricFamily("edgeline_decode_errors", "Frames rejected, by reason.", labels=["reason"])
        for reason, n in sorted(((st.get("bad_frames") or {}).get("by_reason") or {}).items()):
            bad.add_metric([reason], _n(n))
        yield bad
        totals = st.get("sequence_totals") or {}
        for key, name, doc in SEQUENCE:
            yield CounterMetricFamily(name, doc, _n(totals.get(key)))
        ingest = st.get("ingest") or {}
        queue = ingest.get("queue") or {}
        yield CounterMetricFamily(
            "edgeline_ingest_dropped_frames",
            "Frames dropped because the ingest queue was full.",
            _n(queue.get("dropped")),
        )
        yield CounterMetricFamily(
            "edgeline_ingest_held_dropped_frames",
            "Frames of devices without a schema dropped while waiting for their BIRTH.",
            _n(frames.get("pending_dropped")),
        )
        yield GaugeMetricFamily(
            "edgeline_ingest_queue_frames", "Frames waiting in the ingest queue.", _n(queue.get("depth"))
        )
        yield GaugeMetricFamily(
            "edgeline_ingest_queue_capacity_frames", "Capacity of the ingest queue.", _n(queue.get("capacity"))
        )
        yield GaugeMetricFamily(
            "edgeline_mqtt_connected", "1 while connected to the local broker.", 1.0 if ingest.get("connected") else 0.0
        )

    def _alerts(self, st: dict[str, Any]) -> Iterator[Metric]:
        yield CounterMetricFamily("edgeline_alerts_raised", "Alert episodes raised.", _n(st.get("alerts")))
        yield CounterMetricFamily("edgeline_alerts_cleared", "Alert episodes cleared.", _n(st.get("alerts_cleared")))
        yield GaugeMetricFamily("edgeline_alerts_active", "Alert episodes now active.", _n(st.get("alerts_active")))
        yield CounterMetricFamily("edgeline_commands", "Actuator commands sent to devices.", _n(st.get("commands")))

    def _pipelines(self, st: dict[str, Any]) -> Iterator[Metric]:
        windows = CounterMetricFamily(
            "edgeline_windows_scored", "Windows scored by each pipeline's model.", labels=["pipeline"]
        )
        hist = HistogramMetricFamily(
            "edgeline_inference_seconds",
            "Time of one model call (features and inference over the windows of a batch).",
            labels=["pipeline"],
        )
        for name, p in sorted((st.get("pipelines") or {}).items()):
            windows.add_metric([name], _n(p.get("windows_scored")))
            h = p.get("inference_histogram")
            if not h:
                continue
            buckets, total = [], 0.0
            for le, n in zip([*h["le"], "+Inf"], h["counts"], strict=True):
                total += n
                buckets.append((le if isinstance(le, str) else repr(float(le)), total))
            hist.add_metric([name], buckets, sum_value=_n(h.get("sum")))
        yield windows
        yield hist

    def _forward(self, fwd: dict[str, Any] | None) -> Iterator[Metric]:
        configured = fwd is not None
        yield GaugeMetricFamily(
            "edgeline_forward_configured", "1 when a cloud link ([forward]) is configured.", 1.0 if configured else 0.0
        )
        if fwd is None:
            return
        queued = GaugeMetricFamily(
            "edgeline_forward_queue_records", "Records waiting to be sent, per lane.", labels=["lane"]
        )
        inflight = GaugeMetricFamily(
            "edgeline_forward_inflight_records", "Records sent and not yet acknowledged, per lane.", labels=["lane"]
        )
        oldest = GaugeMetricFamily(
            "edgeline_forward_oldest_record_age_seconds", "Age of the oldest queued record, per lane.", labels=["lane"]
        )
        acked = CounterMetricFamily(
            "edgeline_forward_acked_records", "Records the cloud broker acknowledged, per lane.", labels=["lane"]
        )
        dropped = CounterMetricFamily(
            "edgeline_forward_dropped_records", "Records dropped for the disk budget, per lane.", labels=["lane"]
        )
        for lane, info in (fwd.get("lanes") or {}).items():
            queued.add_metric([lane], _n(info.get("depth")) + _n(info.get("buffered")))
            inflight.add_metric([lane], _n(info.get("inflight")))
            oldest.add_metric([lane], _n(info.get("oldest_age_s")))
            acked.add_metric([lane], _n(info.get("acked")))
            dropped.add_metric([lane], _n(info.get("dropped")) + _n(info.get("lost_buffer_full")))
        yield from (queued, inflight, oldest, acked, dropped)
        disk = fwd.get("disk") or {}
        yield GaugeMetricFamily(
            "edgeline_forward_queue_bytes", "Bytes of the queued records (all lanes).", _n(disk.get("records_bytes"))
        )
        yield GaugeMetricFamily(
            "edgeline_forward_disk_bytes", "Bytes the forward queue's files take on disk.", _n(disk.get("used_bytes"))
        )
        yield GaugeMetricFamily(
            "edgeline_forward_disk_budget_bytes", "The forward queue's disk budget.", _n(disk.get("budget_bytes"))
        )
        conn = fwd.get("connection") or {}
        state = conn.get("state")
        yield GaugeMetricFamily(
            "edgeline_forward_link_up", "1 while connected to the cloud broker.", 1.0 if state == "connected" else 0.0
        )
        states = GaugeMetricFamily(
            "edgeline_forward_link_state", "The cloud link's state: 1 for the current one.", labels=["state"]
        )
        for name in LINK_STATES:
            states.add_metric([name], 1.0 if state == name else 0.0)
        yield states
        yield CounterMetricFamily(
            "edgeline_forward_connects", "Connections made to the cloud broker.", _n(conn.get("connects"))
        )

    def _devices(self, st: dict[str, Any]) -> Iterator[Metric]:
        fleet = st.get("fleet") or {}
        yield GaugeMetricFamily("edgeline_devices", "Devices the gateway knows.", _n(fleet.get("devices")))
        yield GaugeMetricFamily("edgeline_devices_online", "Devices online now.", _n(fleet.get("online")))
        rows = self.state.live.fleet()
        limited = len(rows) > self.state.detail_devices
        yield GaugeMetricFamily(
            "edgeline_device_series_limited",
            "1 when per-device series are left out (more devices than gateway.status_detail_devices).",
            1.0 if limited else 0.0,
        )
        if limited:
            return
        seen = GaugeMetricFamily(
            "edgeline_device_last_seen_timestamp_seconds",
            "Unix time a frame of the device was last received.",
            labels=["device"],
        )
        online = GaugeMetricFamily("edgeline_device_online", "1 while the device is online.", labels=["device"])
        rssi = GaugeMetricFamily(
            "edgeline_device_rssi_dbm", "Wi-Fi signal of the device (last HEALTH).", labels=["device"]
        )
        depth = GaugeMetricFamily(
            "edgeline_device_queue_frames", "Frames in the device's offline queue (last HEALTH).", labels=["device"]
        )
        for row in rows:
            d = [row["device"]]
            seen.add_metric(d, _n(row.get("last_seen")))
            online.add_metric(d, 1.0 if row.get("online") else 0.0)
            if row.get("rssi") is not None:
                rssi.add_metric(d, _n(row["rssi"]))
            if row.get("queue_depth") is not None:
                depth.add_metric(d, _n(row["queue_depth"]))
        yield from (seen, online, rssi, depth)


def metrics_registry(state: WebState) -> CollectorRegistry:
    """A registry of its own (no global state): the gateway's collector and the process's."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(state))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry
