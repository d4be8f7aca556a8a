"""Alert episodes: raised -> cleared with hysteresis and hold-off, updates while raised, per-device
thresholds, actuator rules on transitions; and one injected fault reaching the cloud as exactly
one raised and one cleared record."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gateway.alertstate import AlertPolicy, AlertStates, Window
from gateway.config import RuleSection
from gateway.decisions import Decided, Decider
from shared_protocol.decode import decode
from tests.gateway.doubles import RMSModel
from tests.gateway.mqtt_util import Client
from tests.gateway.test_pipeline import T0, frames, make_gateway
from tests.support.runner_thread import runner_thread
from tests.support.simdevice import SimDevice


def run(
    states: AlertStates, scores: list[float], *, threshold: float = 1.0, t0: float = 0.0, dt: float = 1.0
) -> list[Any]:
    """Feed one device's windows in order; the records they produce, with their window index."""
    out = []
    for i, s in enumerate(scores):
        w = Window("d", "p", t0 + i * dt, t0 + i * dt, s, threshold, False, 1, i, "v1")
        rec = states.step(w, now=t0 + i * dt)
        if rec is not None:
            out.append((i, rec))
    return out


def test_a_score_hovering_around_the_threshold_is_one_episode() -> None:
    rng = np.random.default_rng(3)
    hover = (1.0 + 0.15 * rng.standard_normal(200)).tolist()  # crosses 1.0 about every other window
    recs = run(AlertStates(AlertPolicy(update_interval_s=1e9)), [0.2] * 5 + hover + [0.5] * 6)
    assert [r.state for _, r in recs] == ["raised", "cleared"]
    (i_raised, raised), (i_cleared, cleared) = recs
    assert i_cleared <= 209  # at the latest the 5th quiet window after the hover
    assert raised.alert_id == cleared.alert_id
    assert cleared.windows_over == sum(1 for s in hover if s > 1.0)
    assert cleared.windows == i_cleared + 1 - i_raised and cleared.peak == max(hover)


def test_clear_needs_the_hold_off_below_the_hysteresis_level() -> None:
    policy = AlertPolicy(clear_below=0.8, clear_after=3, update_interval_s=1e9)
    # 0.85 is under the threshold but above the clear level (0.8): it never counts as quiet.
    recs = run(AlertStates(policy), [2.0] + [0.85] * 20 + [0.7, 0.7, 0.9, 0.7, 0.7, 0.7])
    assert [(i, r.state) for i, r in recs] == [(0, "raised"), (26, "cleared")]


def test_raise_after_needs_windows_in_a_row() -> None:
    states = AlertStates(AlertPolicy(raise_after=3, clear_after=2, update_interval_s=1e9))
    recs = run(states, [2.0, 2.0, 0.1, 2.0, 2.0, 2.0, 0.1, 0.1])
    assert [(i, r.state) for i, r in recs] == [(5, "raised"), (7, "cleared")]
    assert recs[0][1].windows_over == 3 and recs[0][1].since == 3.0  # the run that raised started at 3


def test_updates_while_raised_are_rate_limited() -> None:
    states = AlertStates(AlertPolicy(update_interval_s=10.0, clear_after=2))
    recs = run(states, [2.0] * 35 + [0.1, 0.1], dt=1.0)
    assert [(i, r.state) for i, r in recs] == [
        (0, "raised"),
        (10, "updated"),
        (20, "updated"),
        (30, "updated"),
        (36, "cleared"),
    ]
    assert [r.windows_over for _, r in recs] == [1, 11, 21, 31, 35]
    assert states.active() == [] and (states.raised, states.updates, states.cleared) == (1, 3, 1)


def decide_batch(decider: Decider, devices: list[str], scores: list[float]) -> tuple[list[Any], list[Decided]]:
    """One batch of windows through ``Decider.decide`` (threshold 1.0); its records and what the observer saw."""
    seen: list[Decided] = []
    decider.observer = seen.append
    n = len(scores)
    alerts, _ = decider.decide(
        pipeline="p",
        devices=devices,
        window_end=np.arange(n, dtype=np.float64),
        received=np.arange(n, dtype=np.float64),
        historical=np.zeros(n, dtype=bool),
        scores=np.array(scores, dtype=np.float32),
        threshold=1.0,
        model_version="v1",
        now=float(n),
    )
    return alerts, seen


def test_windows_under_the_threshold_after_a_raise_in_the_same_batch_count() -> None:
    # One batch: d raises on its first window, then is quiet for 3 (its clear) while e stays
    # quiet throughout; and a run towards raise_after is broken by an under window of the batch.
    decider = Decider(policy=AlertPolicy(clear_after=3, update_interval_s=1e9))
    devices = ["d", "e", "d", "e", "d", "d", "e"]
    alerts, seen = decide_batch(decider, devices, [2.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert [(a.device, a.state) for a in alerts] == [("d", "raised"), ("d", "cleared")]
    assert seen[0].alert.tolist() == [True, False, True, False, True, False, False]
    assert decider.states.active() == []

    decider = Decider(policy=AlertPolicy(raise_after=2, update_interval_s=1e9))
    alerts, seen = decide_batch(decider, ["d"] * 3, [2.0, 0.1, 2.0])
    assert alerts == [] and seen[0].alert.tolist() == [False, False, False]


def test_per_device_threshold_override() -> None:
    states = AlertStates()
    states.set_threshold("d", "p", 5.0)
    assert states.thresholds("p", ["d", "e"], 1.0).tolist() == [5.0, 1.0]
    states.set_threshold("d", "p", None)
    assert states.thresholds("p", ["d"], 1.0).tolist() == [1.0]


def hold_valve() -> Decider:
    """A decider whose rule holds valve-1's output 1 on while an alert is raised."""
    rule = RuleSection("hold", "pump-*", "valve-1", 1, value=1, duration_s=0, clear_value=0)
    return Decider((rule,), AlertPolicy(clear_after=2, update_interval_s=1e9))


def decide_windows(decider: Decider, scores: list[float], historical: list[bool], t0: float) -> list[Any]:
    """One device's windows (one per second from t0) through the decider; (state, acts) of its
    records and (value) of its commands, in order."""
    n = len(scores)
    alerts, commands = decider.decide(
        pipeline="p",
        devices=["pump-1"] * n,
        window_end=t0 + np.arange(n, dtype=np.float64),
        received=t0 + np.arange(n, dtype=np.float64),
        historical=np.array(historical, dtype=bool),
        scores=np.array(scores, dtype=np.float32),
        threshold=1.0,
        model_version="v1",
        now=t0 + n,
    )
    return [(a.state, a.acts) for a in alerts] + [c.value for c in commands]


def test_an_episode_raised_from_replayed_data_acts_at_its_first_live_window_over_the_threshold() -> None:
    # A board re-sends its unacknowledged frames after a stalled session (flagged historical):
    # the fault's first windows arrive as replayed data, and the fault goes on in live data.
    decider = hold_valve()
    assert decide_windows(decider, [2.0, 2.0], [True, True], 0.0) == [("raised", False)]
    assert decide_windows(decider, [0.9, 2.0, 2.0], [False] * 3, 2.0) == [("updated", True), 1]
    assert decide_windows(decider, [0.1, 0.1], [False] * 2, 5.0) == [("cleared", True), 0]
    assert decider.rule_stats() == [{"rule": "hold", "fired": 1, "suppressed": 0}]


def test_a_clear_undoes_the_rules_of_its_episode_even_from_replayed_data() -> None:
    # Raised live (valve held on); the board then drops off and its replay shows the fault ended.
    decider = hold_valve()
    assert decide_windows(decider, [2.0], [False], 0.0) == [("raised", True), 1]
    assert decide_windows(decider, [0.1, 0.1], [True, True], 1.0) == [("cleared", True), 0]


def test_an_episode_seen_only_in_replayed_data_drives_no_actuator() -> None:
    decider = hold_valve()
    assert decide_windows(decider, [2.0, 2.0, 0.1, 0.1], [True] * 4, 0.0) == [("raised", False), ("cleared", False)]
    assert decide_windows(decider, [0.1, 0.1], [False] * 2, 4.0) == []
    assert decider.rule_stats() == [{"rule": "hold", "fired": 0, "suppressed": 0}]


def test_rules_fire_on_raise_and_on_clear_with_clear_value(tmp_path: Path) -> None:
    rules = [
        {
            "name": "stop",
            "on_alert_from": "pump-*",
            "device": "valve-1",
            "output": 1,
            "value": 1,
            "duration_s": 0,
            "clear_value": 0,
        }
    ]
    gw, pub, fwd = make_gateway(tmp_path, rules=rules, extra={"alerts": {"clear_after": 3}})
    dev = SimDevice("pump-1")
    gw.process(frames(dev, "birth", [dev.birth()]))
    gw.process(frames(dev, "data", [dev.data() for _ in range(3)], T0 + 1))
    fault = dev.raw_block(lambda t: np.stack([4000 * np.sin(2 * np.pi * 37 * t), 0 * t, 0 * t], axis=1))
    gw.process(frames(dev, "data", [dev.data(fault) for _ in range(6)], T0 + 2))
    gw.process(frames(dev, "data", [dev.data() for _ in range(6)], T0 + 5))
    states = [json.loads(p)["state"] for _, p, _ in pub.kind("alert")]
    assert states == ["raised", "cleared"]
    cmds = [struct.unpack("<BBI", decode(p).fields["arg"]) for t, p, _ in pub.kind("cmd") if t == "el/s1/valve-1/cmd"]
    assert cmds == [(1, 1, 0), (1, 0, 0)]  # hold on while raised, off when cleared
    assert [r["state"] for lane, r in fwd if lane == "alert"] == ["raised", "cleared"]
    row = gw.live.detail("pump-1")
    assert row is not None and row["alerts"]["vib"]["state"] == "cleared"
    (episode,) = row["episodes"]  # raised and cleared: one episode for the plot's markers
    assert episode["alert_id"] == row["alerts"]["vib"]["alert_id"] and episode["cleared_at"] is not None
    st = gw.status()
    assert (st["alerts"], st["alerts_cleared"], st["alerts_active"]) == (1, 1, 0)
    gw.close()


def test_one_injected_fault_reaches_the_cloud_as_one_raised_and_one_cleared(
    tmp_path: Path, mosquitto_factory: Callable[..., Any]
) -> None:
    local = mosquitto_factory()
    cloud = mosquitto_factory()
    cfg = {
        "gateway": {"id": "gw1", "site": "s1", "data_dir": str(tmp_path / "data"), "status_interval_s": 0.2},
        "mqtt": {"host": local.host, "port": local.port},
        "pipelines": [{"name": "vib", "model": "unused.json", "devices": ["pump-*"]}],
        "summary": {"interval_s": 0.3},
        "raw": {"alerts": False},
        "forward": {"host": cloud.host, "port": cloud.port, "commit_interval_ms": 1},
    }
    up = Client(cloud.host, cloud.port, client_id="cloud-consumer")
    up.subscribe("edgeline/gw1/#")
    with runner_thread(cfg, models={"vib": RMSModel()}):
        pump = SimDevice("pump-1")
        dev = Client(local.host, local.port, client_id="pump-1")
        try:
            dev.publish(pump.topic("birth"), pump.birth())
            fault = pump.raw_block(lambda t: np.stack([4000 * np.sin(2 * np.pi * 37 * t), 0 * t, 0 * t], axis=1))
            # healthy, a fault of 20 windows (6.4 s of data), healthy again
            for raw in [None] * 4 + [fault] * 20 + [None] * 10:
                dev.publish(pump.topic("data"), pump.data(raw))
            _t, p, _ = up.wait_for(
                lambda topic, p: topic == "edgeline/gw1/alert" and json.loads(p)["record"]["state"] == "cleared",
                timeout=30,
            )
            cleared = json.loads(p)["record"]
            # Alerts drain before summaries: a summary of an interval that began after the clear
            # was decided comes after every alert record of the episode (the device keeps talking:
            # a summary needs readings in its interval).
            for _ in range(100):
                dev.publish(pump.topic("data"), pump.data())
                try:
                    up.wait_for(
                        lambda topic, p: (
                            topic == "edgeline/gw1/summary" and json.loads(p)["record"]["start"] > cleared["decided"]
                        ),
                        timeout=0.5,
                    )
                    break
                except TimeoutError:
                    continue
            else:
                raise AssertionError("no summary after the clear")
        finally:
            dev.close()
    got = [json.loads(p)["record"] for topic, p, _ in up.drain(0) if topic == "edgeline/gw1/alert"]
    up.close()
    assert [r["state"] for r in got] == ["raised"], got  # the raise arrived before the clear, and nothing else
    raised = got[0]
    assert raised["alert_id"] == cleared["alert_id"] and raised["device"] == "pump-1"
    # 64-sample windows every 32 samples: the window half in the last fault frame is over too.
    assert cleared["windows_over"] == 21 and cleared["duration_s"] > 0
