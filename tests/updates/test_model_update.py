"""Model updates with the real models and LiteRT: shadow beside the current model on the windows
of the real pipeline, promotion (kept over a restart), refusal of a false-alarm flood and of a
model that does not fit, and rollback."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.updates.models import active_path
from tests.updates.model_site import FLOAT32, INT8, MOTIONS, Site, StandInBundle, config, payload


def bundle(manifest: Path, counter: int, version: str) -> StandInBundle:
    return StandInBundle("model", "vib", version, counter, manifest.name, f"{counter:064x}")


def quantization(site: Site) -> str:
    return str(site.stage.model.manifest.quantization)  # type: ignore[attr-defined]


def test_good_candidate_promoted_after_its_windows_kept_over_a_restart_and_rolled_back(tmp_path: Path) -> None:
    cfg = config(tmp_path, windows=24)
    site = Site(cfg)
    site.run(20)  # the current model scores alone first
    site.models.install(bundle(INT8, 2, "1.1-int8"), payload(INT8, tmp_path / "staged"))
    assert site.states() == ["installed", "shadow"]
    assert site.models.status()["vib"]["candidate"] == "1.1-int8"
    site.run(40)  # 20 windows: not yet
    assert site.states()[-1] == "shadow" and quantization(site) == "float32"
    shadow = site.models.status()["vib"]["shadow"]
    assert shadow["windows"] == 20 and shadow["needed"] == 24
    site.run(8)
    last = site.last()
    assert last["state"] == "promoted" and last["version"] == "1.1-int8" and last["counter"] == 2
    assert last["figures"]["windows"] >= 24 and last["figures"]["agreement"] >= 0.9 and last["figures"]["errors"] == 0
    assert quantization(site) == "int8" and site.stage.shadow is None
    scored = site.stage.stats.windows_scored
    site.run(4)
    assert site.stage.stats.windows_scored == scored + 2  # the promoted model scores the pipeline now
    # the transition went to the cloud (lane registry) and the installed files are in the store
    assert ("registry", {"type": "update", **last}) in site.records
    active = json.loads(active_path(cfg.updates.state_dir).read_text())["pipelines"]["vib"]  # type: ignore[union-attr]
    assert active["current"]["version"] == "1.1-int8" and active["previous"]["manifest"] == str(FLOAT32)
    assert Path(active["current"]["manifest"]).parent.name == "2-1.1-int8"
    assert [d.name for d in (cfg.updates.state_dir / "models" / "vib").iterdir()] == ["2-1.1-int8"]  # type: ignore[union-attr]
    site.close()

    site = Site(cfg)  # a restart runs the promoted model
    assert quantization(site) == "int8" and site.stage.spec.version == INT8_VERSION
    reply = site.models.rollback("vib")
    assert reply["ok"] and quantization(site) == "float32"
    assert site.last()["state"] == "rolled_back" and "model rollback" in site.last()["reason"]
    site.run(4)
    site.close()
    site = Site(cfg)  # ... and the rollback too
    assert quantization(site) == "float32"
    assert site.models.rollback("nope")["reason"] == "unknown_pipeline"
    site.close()


INT8_VERSION = json.loads(INT8.read_text())["version"]


def test_false_alarm_flood_not_promoted_and_never_alerts(tmp_path: Path) -> None:
    rules = [{"name": "stop", "on_alert_from": "pump-*", "device": "pump-1", "output": 0, "value": 1, "duration_s": 5}]
    site = Site(config(tmp_path, windows=16, rules=rules))
    staged = payload(FLOAT32, tmp_path / "staged", **{"output.threshold": 1e-9})
    site.models.install(bundle(FLOAT32, 3, "1.2-flood"), staged)
    assert site.states() == ["installed", "shadow"]
    site.run(40)
    last = site.last()
    assert last["state"] == "not_promoted" and "alert_rate" in last["failed"]
    assert last["reason"].startswith("shadow evaluation failed: alert_rate: ")
    assert last["figures"]["alerts"] == last["figures"]["windows"] >= 16  # every window alerted...
    # ... and none of it reached an alert topic, an actuator, the alert lane or the counters
    assert site.pub.kind("alert") == [] and site.pub.kind("cmd") == []
    assert [r for lane, r in site.records if lane == "alert"] == []
    assert site.gw.counters.alerts == 0 and site.gw.counters.commands == 0
    assert quantization(site) == "float32" and site.stage.spec.threshold > 1e-3 and site.stage.shadow is None
    assert list((tmp_path / "data" / "updates" / "models" / "vib").iterdir()) == []  # not kept
    site.close()


def test_models_that_do_not_load_or_fit_are_refused_before_any_shadow(tmp_path: Path) -> None:
    site = Site(config(tmp_path))
    site.models.install(bundle(MOTIONS, 4, "m1"), payload(MOTIONS, tmp_path / "motions"))
    last = site.last()
    assert last["state"] == "not_promoted" and site.stage.shadow is None
    assert "does not fit pipeline vib: channels accel_x (m/s2)" in last["reason"]
    assert "window 100 hop 50 (the pipeline's model takes window 128 hop 64)" in last["reason"]

    bad = payload(INT8, tmp_path / "bad")
    tflite = bad / json.loads(INT8.read_text())["model_file"]
    tflite.write_bytes(tflite.read_bytes()[:-1] + b"\0")  # one byte off: its sha256 fails
    site.models.install(bundle(INT8, 5, "broken"), bad)
    last = site.last()
    assert last["state"] == "not_promoted" and last["reason"].startswith("the model does not load: ")
    assert "sha256" in last["reason"]
    site.models.install(StandInBundle("model", "other", "1", 6, INT8.name, "f" * 64), payload(INT8, tmp_path / "o"))
    assert "no pipeline 'other'" in site.events.status()["current"]["model/other"]["reason"]
    site.run(8)
    assert quantization(site) == "float32" and site.gw.counters.alerts == 0
    assert site.models.rollback("vib")["reason"] == "no_previous"
    site.close()


def test_a_newer_candidate_replaces_the_one_in_shadow_and_a_shadow_resumes_after_a_restart(tmp_path: Path) -> None:
    cfg = config(tmp_path, windows=16)
    site = Site(cfg)
    site.models.install(bundle(INT8, 2, "a"), payload(INT8, tmp_path / "a"))
    site.run(10)
    site.models.install(bundle(MOTIONS, 3, "m"), payload(MOTIONS, tmp_path / "m"))  # does not fit: "a" stays
    assert site.models.status()["vib"]["candidate"] == "a" and site.models.status()["vib"]["shadow"]["windows"] == 4
    site.models.install(bundle(INT8, 4, "b"), payload(INT8, tmp_path / "b"))
    replaced = [e for e in site.events.status()["recent"] if e["state"] == "not_promoted" and e["version"] == "a"]
    assert replaced and replaced[0]["reason"] == "replaced in shadow by the newer b before its verdict"
    assert site.models.status()["vib"]["shadow"]["windows"] == 0
    site.run(10)
    site.close()
    site = Site(cfg, boot=2)  # restarted mid-shadow: "b" shadows again, from zero windows
    assert site.models.status()["vib"]["candidate"] == "b" and site.states() == ["shadow"]
    site.run(34)
    assert site.last()["state"] == "promoted" and site.last()["version"] == "b"
    assert [d.name for d in (tmp_path / "data" / "updates" / "models" / "vib").iterdir()] == ["4-b"]
    site.close()
