"""The protocol benchmarks run (--quick) and report the rows a runner collects."""

from __future__ import annotations

import pytest

from bench import bench_decode, bench_wire


def test_mqtt_publish_size_follows_mqtt_311() -> None:
    # 0x32 | remaining length | 00 13 "el/site1/dev01/data" | packet id | payload
    assert bench_wire.mqtt_publish_size("el/site1/dev01/data", 100) == 1 + 1 + 2 + 19 + 2 + 100
    assert bench_wire.mqtt_publish_size("a", 200) == 1 + 2 + 2 + 1 + 2 + 200  # remaining 205 > 127: 2-byte length
    assert bench_wire.mqtt_publish_size("a", 10, qos=0) == 1 + 1 + 2 + 1 + 10


def test_bench_wire_quick(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_wire.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "| edgeline plain |" in out and "Sparkplug B" in out and "json.loads" in out
    rows = bench_wire.rows(quick=True)
    wire = {r["format"]: r for r in rows if r["table"] == "wire"}
    ours, delta = wire["edgeline plain"], wire["edgeline delta"]
    # byte counts are deterministic (not timings): the format's size is part of its contract
    assert ours["vibration_wire"] == pytest.approx((1 + 2 + 2 + 19 + 2 + 411) / 192)
    assert delta["smooth_wire"] < 2.0 < ours["smooth_wire"]
    for name in ("Tasmota-style JSON", "msgpack batched", "CBOR batched", "Sparkplug B (pysparkplug, aliases)"):
        assert wire[name]["vibration_wire"] > ours["vibration_wire"]
    decode_rows = [r for r in rows if r["table"] == "decode"]
    assert {r["decoder"].split(",")[0] for r in decode_rows} >= {"json.loads"}
    assert all(r["readings_per_s"] > 0 for r in decode_rows)


def test_bench_decode_quick(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_decode.main(["--quick"]) == 0
    assert "decode_data_many" in capsys.readouterr().out
    rows = bench_decode.rows(quick=True)
    assert len(rows) >= 8 and all(r["readings_per_s"] > 0 for r in rows)
