"""The live view: last readings, plot histories, scores and the fleet rows, fed by the real pipeline."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.gateway.test_pipeline import T0, frames, make_gateway
from tests.support.simdevice import SimDevice


def test_live_view_follows_readings_scores_and_availability(tmp_path: Path) -> None:
    gw, _pub, _fwd = make_gateway(tmp_path)
    dev = SimDevice("pump-1")
    gw.process(frames(dev, "birth", [dev.birth()]))
    payloads = [dev.data() for _ in range(40)]  # 40 x 32 samples at 100 Hz: 12.8 s
    gw.process(frames(dev, "data", payloads, T0 + 1))
    live = gw.live
    assert live.take_changed() == ({"pump-1"}, {"pump-1"})  # the BIRTH is an event, DATA a change
    assert live.take_changed() == (set(), set())
    gw.process(frames(dev, "data", [dev.data()], T0 + 14))
    assert live.take_changed() == ({"pump-1"}, set())  # new readings only
    gw.tick(T0 + 20)
    (row,) = live.fleet(T0 + 20)
    assert row["device"] == "pump-1" and row["online"] is True and row["fw_version"] == "1.2.3"
    assert row["samples"] == 41 * 32 and row["gaps"] == 0
    assert 95.0 <= row["rate_hz"] <= 105.0  # 100 Hz, measured over the device's own time
    assert set(row["values"]) == {"ax", "ay", "temp"}
    detail = live.detail("pump-1")
    assert detail is not None
    hist = detail["history"]
    # One point per 0.4 s step (the last reading of the step): 12.8 s -> 32 points, in time order.
    assert 30 <= len(hist["t"]) <= 35
    assert hist["t"] == sorted(hist["t"])
    assert len(hist["values"]) == 3 and all(len(v) == len(hist["t"]) for v in hist["values"])
    assert hist["values"][0][-1] == row["values"]["ax"]
    scores = hist["scores"]["vib"]
    assert scores["t"] and len(scores["t"]) == len(scores["score"])
    assert hist["thresholds"]["vib"] == 1.5
    # Points after a time only (the page polls for what is new).
    later = live.detail("pump-1", since=hist["t"][-5])
    assert later is not None and len(later["history"]["t"]) == 4
    # A gap is counted; DEATH makes the row offline at the next refresh.
    dev.skip(3)
    gw.process(frames(dev, "data", [dev.data()], T0 + 15))
    gw.process(frames(dev, "death", [dev.death()], T0 + 16))
    assert "pump-1" in live.take_changed()[1]
    gw.tick(T0 + 30)
    (row,) = live.fleet(T0 + 30)
    assert row["online"] is False and row["gaps"] == 1


def test_fleet_rows_are_read_safely_while_the_pipeline_runs(tmp_path: Path) -> None:
    gw, _pub, _fwd = make_gateway(tmp_path)
    devs = [SimDevice(f"pump-{i}") for i in range(20)]
    for d in devs:
        gw.process(frames(d, "birth", [d.birth()]))
    stop = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while not stop.is_set():
                for row in gw.live.fleet():
                    gw.live.detail(row["device"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for k in range(8):
            for d in devs:
                gw.process(frames(d, "data", [d.data()], T0 + 1 + k))
            gw.live.fleet(T0 + 1 + k)
    finally:
        stop.set()
        reader.join()
    assert not errors
    assert len(gw.live.fleet()) == 20


def test_score_ring_keeps_the_highest_score_of_each_step_for_the_last_steps() -> None:
    from gateway.live import ScoreRing

    ring = ScoreRing(3, 0.5)
    t0 = 1_796_000_000.0  # seconds since 1970, as the windows' end times are
    for dt, v in ((0.1, 1.0), (0.2, 5.0), (0.3, 2.0), (0.6, 1.0), (1.1, 0.5), (1.7, 3.0)):
        ring.put_max(t0 + dt, v)
    # Steps end at t0 + 0.5, 1.0, 1.5, 2.0: the first has left the 3-step ring; an alerting
    # window is never averaged away (the highest of its step stays).
    times, scores = ring.since(0.0)
    assert [round(t - t0, 3) for t in times] == [1.0, 1.5, 2.0]
    assert scores == [1.0, 0.5, 3.0]
    assert ring.since(t0 + 1.5) == ([t0 + 2.0], [3.0])
    assert ring.since(t0 + 2.0) == ([], [])
    ring.put_max(t0 + 1.9, 4.0)  # later in the last step: its highest
    assert ring.since(t0 + 1.5)[1] == [4.0]


def test_without_the_status_page_no_histories_are_kept(tmp_path: Path) -> None:
    gw, _pub, _fwd = make_gateway(tmp_path, extra={"web": {"enabled": False}})
    dev = SimDevice("pump-1")
    gw.process(frames(dev, "birth", [dev.birth()]))
    gw.process(frames(dev, "data", [dev.data() for _ in range(10)], T0 + 1))
    d = gw.live.devices["pump-1"]
    assert d.scores == {} and d.thresholds == {"vib": 1.5}
    detail = gw.live.detail("pump-1")
    assert detail is not None and detail["history"]["t"] == [] and len(detail["values"]) == 3
    gw.close()
