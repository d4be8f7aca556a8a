"""Prometheus series of the signed updates ([updates]): bundles received and refused, model
promotions, rejections and shadows, firmware rollouts and their devices by state.

Read from the status the processing thread publishes (gateway/web/state.py): the ``updates``
section's ``totals`` (gateway/updates/events.py, every transition counted since the start),
``model_updates`` (gateway/updates/models.py) and ``ota`` (gateway/updates/rollout.py).
Counters start from zero when the gateway starts, as Prometheus expects of a process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

#: A firmware device's states in the rollout (gateway/updates/rollout.py); "begin" is counted
#: as "transferring", as the update records name it.
DEVICE_STATES = ("pending", "transferring", "switching", "trial", "confirmed", "failed", "current")
ROLLOUT_STATES = ("running", "paused", "halted", "aborted", "done")
#: The refusal label of a bundle refused by its kind's handler after it was verified (no code).
HANDLER = "handler"


def _n(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def update_metrics(st: dict[str, Any]) -> Iterator[Metric]:
    updates = st.get("updates")
    yield GaugeMetricFamily(
        "edgeline_updates_enabled", "1 when signed updates ([updates]) are enabled.", 1.0 if updates else 0.0
    )
    if not isinstance(updates, dict):
        return
    yield from _bundles(updates)
    yield from _models(updates, st.get("model_updates") or {})
    yield from _firmware(st.get("ota") or {})


def _totals(updates: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in updates.get("totals") or [] if isinstance(t, dict)]


def _bundles(updates: dict[str, Any]) -> Iterator[Metric]:
    received = CounterMetricFamily(
        "edgeline_update_bundles_received",
        "Bundles verified (signature, target, expiry, counter, hashes) and handed to their handler, by kind.",
        labels=["kind"],
    )
    refused = CounterMetricFamily(
        "edgeline_update_bundles_refused",
        "Bundles refused, by kind and reason: the check that failed (bad_signature, replayed, expired, "
        f"wrong_target, ...), or {HANDLER} when the kind's handler refused a verified bundle.",
        labels=["kind", "reason"],
    )
    transitions = CounterMetricFamily(
        "edgeline_update_transitions", "Update transitions recorded, by kind and state.", labels=["kind", "state"]
    )
    got: dict[str, float] = {}
    bad: dict[tuple[str, str], float] = {}
    steps: dict[tuple[str, str], float] = {}
    for t in _totals(updates):
        kind, state, count = str(t.get("kind")), str(t.get("state")), _n(t.get("count"))
        steps[kind, state] = steps.get((kind, state), 0.0) + count
        if state == "received":
            got[kind] = got.get(kind, 0.0) + count
        elif state == "refused":
            key = (kind, str(t.get("code") or HANDLER))
            bad[key] = bad.get(key, 0.0) + count
    for kind, n in sorted(got.items()):
        received.add_metric([kind], n)
    for (kind, reason), n in sorted(bad.items()):
        refused.add_metric([kind, reason], n)
    for (kind, state), n in sorted(steps.items()):
        transitions.add_metric([kind, state], n)
    yield from (received, refused, transitions)
    held = GaugeMetricFamily(
        "edgeline_update_delivery_chunks_held",
        "Chunks of a bundle being delivered over the cloud link held so far.",
        labels=["kind", "name"],
    )
    chunks = GaugeMetricFamily(
        "edgeline_update_delivery_chunks", "Chunks of a bundle being delivered, in all.", labels=["kind", "name"]
    )
    for key, tr in sorted((updates.get("transfers") or {}).items()):
        kind, _, name = str(key).partition("/")
        held.add_metric([kind, name], _n(tr.get("held")))
        chunks.add_metric([kind, name], _n(tr.get("chunks")))
    yield from (held, chunks)


def _models(updates: dict[str, Any], pipelines: dict[str, Any]) -> Iterator[Metric]:
    doc = {
        "promoted": ("edgeline_model_promotions", "Candidate models promoted after their shadow evaluation."),
        "not_promoted": (
            "edgeline_model_rejections",
            "Candidate models not promoted (failed shadow rules, did not load or fit, replaced in shadow).",
        ),
        "rolled_back": ("edgeline_model_rollbacks", "Rollbacks to the previous model (model rollback)."),
    }
    values: dict[str, dict[str, float]] = {state: dict.fromkeys(pipelines, 0.0) for state in doc}
    for t in _totals(updates):
        state = str(t.get("state"))
        if t.get("kind") == "model" and state in values:
            name = str(t.get("name"))
            values[state][name] = values[state].get(name, 0.0) + _n(t.get("count"))
    for state, (name, text) in doc.items():
        family = CounterMetricFamily(name, text, labels=["pipeline"])
        for pipeline, n in sorted(values[state].items()):
            family.add_metric([pipeline], n)
        yield family
    windows = GaugeMetricFamily(
        "edgeline_model_shadow_windows", "Windows a candidate in shadow has scored so far.", labels=["pipeline"]
    )
    needed = GaugeMetricFamily(
        "edgeline_model_shadow_windows_needed",
        "Windows a candidate in shadow needs for its verdict.",
        labels=["pipeline"],
    )
    for pipeline, p in sorted(pipelines.items()):
        shadow = p.get("shadow") if isinstance(p, dict) else None
        if isinstance(shadow, dict):
            windows.add_metric([pipeline], _n(shadow.get("windows")))
            needed.add_metric([pipeline], _n(shadow.get("needed")))
    yield from (windows, needed)


def _firmware(ota: dict[str, Any]) -> Iterator[Metric]:
    devices = GaugeMetricFamily(
        "edgeline_firmware_devices", "Devices of a firmware rollout, by state.", labels=["rollout", "state"]
    )
    states = GaugeMetricFamily(
        "edgeline_firmware_rollout_state",
        "A firmware rollout's state: 1 for the current one.",
        labels=["rollout", "state"],
    )
    for name, r in sorted((ota.get("rollouts") or {}).items()):
        counts = dict.fromkeys(DEVICE_STATES, 0.0)
        for facts in (r.get("devices") or {}).values():
            state = "transferring" if facts.get("state") == "begin" else str(facts.get("state"))
            counts[state] = counts.get(state, 0.0) + 1
        for state, n in counts.items():
            devices.add_metric([name, state], n)
        for state in ROLLOUT_STATES:
            states.add_metric([name, state], 1.0 if r.get("state") == state else 0.0)
    yield from (devices, states)
