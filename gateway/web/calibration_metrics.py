"""Prometheus series of per-device calibration ([[pipelines]] calibrate, gateway/calibration.py):
devices per phase for each calibrating pipeline, and each device's learned threshold beside the
model's.

Read from the ``calibration`` entry of each pipeline in the status the processing thread
publishes (gateway/web/state.py); per-device series only for the devices that status lists
(up to ``gateway.status_detail_devices``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from gateway.calibration import PHASES


def calibration_metrics(st: dict[str, Any]) -> Iterator[Metric]:
    cals = {
        name: p["calibration"]
        for name, p in (st.get("pipelines") or {}).items()
        if isinstance(p, dict) and isinstance(p.get("calibration"), dict)
    }
    if not cals:
        return
    devices = GaugeMetricFamily(
        "edgeline_calibration_devices",
        "Devices of a calibrating pipeline in each calibration phase (normalise, threshold, calibrated).",
        labels=["pipeline", "phase"],
    )
    threshold = GaugeMetricFamily(
        "edgeline_calibration_threshold",
        "The threshold a device learned by calibration (only calibrated devices).",
        labels=["pipeline", "device"],
    )
    model = GaugeMetricFamily(
        "edgeline_calibration_model_threshold",
        "The threshold of a calibrating pipeline's model (its manifest's), for comparison.",
        labels=["pipeline"],
    )
    for name, c in sorted(cals.items()):
        phases = c.get("phases") or {}
        for phase in PHASES:
            devices.add_metric([name, phase], float(phases.get(phase, 0)))
        model.add_metric([name], float(c.get("model_threshold") or 0.0))
        for device, d in sorted((c.get("devices") or {}).items()):
            if d.get("threshold") is not None:
                threshold.add_metric([name, device], float(d["threshold"]))
    yield devices
    yield threshold
    yield model
