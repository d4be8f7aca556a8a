"""Model updates: a verified model bundle becomes a candidate beside a pipeline's model,
scores in shadow (gateway/updates/shadow.py), and replaces it only on a good verdict.

Store: ``<state_dir>/models/<pipeline>/<counter>-<version>/`` holds each installed model
(the bundle's payload: the manifest .json and its .tflite). ``<state_dir>/models/active.json``
says which model each pipeline runs, the one before it (for ``model rollback``) and the
candidate in shadow, written with fsync + os.replace so a restart runs the promoted model:

    {"pipelines": {"vib": {"base": "<the config's model path>",
                           "current": {"manifest": "...", "version": "1.1", "counter": 3},
                           "previous": {...} | null, "candidate": {...} | null}}}

``base`` is the model the configuration names: when an operator changes ``pipelines.model``,
the configuration wins over what was promoted before. Everything here runs on the processing
thread (install, tick, the control socket's requests), so a swap falls between two batches.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.durable import fsync_dir, write_json_durably
from gateway.scoring import ModelLike, ModelSpec, ScoringStage
from gateway.updates.events import UpdateEvents
from gateway.updates.handler import BundleLike
from gateway.updates.settings import ShadowSettings
from gateway.updates.shadow import ShadowScorer, Verdict

if TYPE_CHECKING:
    from gateway.config import Config, PipelineSection
    from gateway.pipeline import Gateway

log = logging.getLogger(__name__)

KIND = "model"
ACTIVE_FILE = "active.json"
REQUEST_WAIT_S = 30.0  # a control socket request waits this long for the processing thread

LoadModel = Callable[[Path], ModelLike]


class ModelRefused(Exception):
    """A candidate that cannot be shadowed; the message says why (it goes into the record)."""


# --------------------------------------------------------------------------- active.json


def active_path(state_dir: Path) -> Path:
    return state_dir / "models" / ACTIVE_FILE


def read_active(state_dir: Path) -> dict[str, dict[str, Any]]:
    """Per pipeline: base, current, previous, candidate. {} when there is none yet (or it is unreadable)."""
    path = active_path(state_dir)
    try:
        data = json.loads(path.read_text())
        pipelines = data["pipelines"]
        if not isinstance(pipelines, dict):
            raise TypeError("pipelines is not an object")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("%s cannot be read (%s): the pipelines run the models the configuration names", path, exc)
        return {}
    return {str(k): dict(v) for k, v in pipelines.items() if isinstance(v, dict)}


def active_manifests(config: Config) -> dict[str, Path]:
    """The model manifest each pipeline runs: the promoted one from active.json while the
    configuration still names the model it replaced, else the configuration's."""
    out = {p.name: p.model for p in config.pipelines}
    if config.updates is None:
        return out
    for name, entry in read_active(config.updates.state_dir).items():
        p = next((p for p in config.pipelines if p.name == name), None)
        current = entry.get("current")
        if p is None or not isinstance(current, dict):
            continue
        if entry.get("base") != str(p.model):
            log.info("pipeline %s: the configuration names a new model %s: it replaces the promoted one", name, p.model)
            continue
        out[name] = Path(current["manifest"])
    return out


# --------------------------------------------------------------------------- fit


def _channels(model: Any, spec: ModelSpec) -> tuple[str, ...]:
    """Channel names with units when the model has a manifest (units must match too)."""
    manifest = getattr(model, "manifest", None)
    inp = getattr(manifest, "input", None)
    if inp is not None:
        return tuple(f"{c.name} ({c.unit})" for c in inp.channels)
    return spec.channels


def check_fits(candidate: ModelLike, stage: ScoringStage, threshold: float | None) -> ModelSpec:
    """The candidate's spec, if it takes exactly what the pipeline's current model takes (the
    checks of the gateway's start: channels, rate, window; and the same task); ModelRefused else."""
    try:  # the geometry first (a classifier has no threshold, but its channels say more)
        spec = ModelSpec.of(candidate, threshold=float("nan") if threshold is None else threshold)
    except ValueError as exc:
        raise ModelRefused(f"its manifest does not fit a pipeline: {exc}") from exc
    cur = stage.spec
    problems = []
    mine, theirs = _channels(candidate, spec), _channels(stage.model, cur)
    if mine != theirs:
        problems.append(f"channels {', '.join(mine)} (the pipeline's model takes {', '.join(theirs)})")
    if (spec.rate_hz or 0.0) != (cur.rate_hz or 0.0):
        problems.append(f"rate {spec.rate_hz} Hz (the pipeline's model takes {cur.rate_hz} Hz)")
    if (spec.window_len, spec.hop) != (cur.window_len, cur.hop):
        problems.append(
            f"window {spec.window_len} hop {spec.hop} (the pipeline's model takes window {cur.window_len} hop {cur.hop})"
        )
    task, cur_task = getattr(candidate, "task", None), getattr(stage.model, "task", None)
    if task != cur_task:
        problems.append(f"task {task} (the pipeline's model is {cur_task})")
    if problems:
        raise ModelRefused(f"it does not fit pipeline {stage.name}: " + "; ".join(problems))
    try:
        return ModelSpec.of(candidate, threshold=threshold)
    except ValueError as exc:
        raise ModelRefused(f"its manifest does not fit a pipeline: {exc}") from exc


# --------------------------------------------------------------------------- the handler


class ModelUpdates:
    """The ``model`` bundle handler, shadow evaluation, promotion and rollback."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        state_dir: Path,
        rules: ShadowSettings,
        events: UpdateEvents,
        load: LoadModel | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """load: manifest path -> model (default gateway.inference.load_model, with its self-test)."""
        self.gateway = gateway
        self.root = state_dir / "models"
        self.rules = rules
        self.events = events
        self.clock = clock
        self._load = load or _load_model
        self._requests: queue.SimpleQueue[tuple[dict[str, Any], queue.SimpleQueue[dict[str, Any]]]] = (
            queue.SimpleQueue()
        )
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.active = read_active(state_dir)
        self._candidates: dict[str, dict[str, Any]] = {}  # pipeline -> entry of the candidate in shadow

    # ------------------------------------------------------------ lookups
    def _pipeline(self, name: str) -> tuple[PipelineSection, ScoringStage]:
        p = next((p for p in self.gateway.config.pipelines if p.name == name), None)
        stage = next((s for s in self.gateway.stages if s.name == name), None)
        if p is None or stage is None:
            known = ", ".join(s.name for s in self.gateway.stages) or "none"
            raise ModelRefused(
                f"this gateway has no pipeline {name!r} (its pipelines: {known}); check the bundle's name"
            )
        return p, stage

    def _entry(self, name: str) -> dict[str, Any]:
        p, stage = self._pipeline(name)
        entry = self.active.get(name)
        if entry is None or entry.get("base") != str(p.model):
            base = {"manifest": str(p.model), "version": stage.spec.version, "counter": 0}
            entry = self.active[name] = {"base": str(p.model), "current": base, "previous": None, "candidate": None}
        return entry

    def _save(self) -> None:
        write_json_durably(self.root / ACTIVE_FILE, {"pipelines": self.active})

    # ------------------------------------------------------------ install (UpdateService)
    def install(self, bundle: BundleLike, staged: Path) -> None:
        """A verified model bundle: store it, load it, check it fits, start its shadow.
        A model that does not load or fit is recorded ``not_promoted`` with the reason."""
        name = bundle.name
        info: dict[str, Any] = {"version": bundle.version, "counter": bundle.counter, "bundle_id": bundle.bundle_id}
        try:
            self._pipeline(name)  # a bundle for a pipeline this gateway lacks is not stored
            dest = self._store(bundle, staged)
        except (ModelRefused, OSError) as exc:
            self.events.record(KIND, name, "not_promoted", reason=str(exc), **info)
            return
        entry = {"manifest": str(dest / bundle.entry), **info}
        self.events.record(KIND, name, "installed", path=str(dest), **info)
        self._start_shadow(name, entry)

    def _store(self, bundle: BundleLike, staged: Path) -> Path:
        """Copy the payload to the store: a fresh directory, files fsynced, renamed into place."""
        pipeline_dir = self.root / bundle.name
        pipeline_dir.mkdir(mode=0o700, exist_ok=True)
        dest = pipeline_dir / f"{bundle.counter}-{bundle.version}"
        tmp = pipeline_dir / f".{dest.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(staged, tmp)
        for path in tmp.rglob("*"):
            if path.is_file():
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
        if dest.exists():  # the same counter again (a test, or a store restored by hand)
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        fsync_dir(pipeline_dir)
        return dest

    def _start_shadow(self, name: str, entry: dict[str, Any]) -> None:
        info = {k: entry[k] for k in ("version", "counter", "bundle_id") if k in entry}
        try:
            p, stage = self._pipeline(name)
            try:
                candidate = self._load(Path(entry["manifest"]))
            except Exception as exc:  # the loader's own error (ModelError, ManifestError, ...)
                raise ModelRefused(f"the model does not load: {exc}") from exc
            spec = check_fits(candidate, stage, p.threshold)
        except ModelRefused as exc:
            self.events.record(KIND, name, "not_promoted", reason=str(exc), **info)
            if name not in self._candidates:  # an earlier candidate still in shadow stays
                self._set_candidate(name, None)
            return
        replaced = self._candidates.pop(name, None)
        if replaced is not None:  # one candidate per pipeline: the newer bundle wins
            self.events.record(
                KIND,
                name,
                "not_promoted",
                reason=f"replaced in shadow by the newer {entry.get('version')} before its verdict",
                **{k: replaced[k] for k in ("version", "counter", "bundle_id") if k in replaced},
            )
        stage.shadow = ShadowScorer(candidate, spec.threshold, self.rules, started=self.clock())
        self._candidates[name] = {**entry, "model": candidate, "spec": spec}
        self._set_candidate(name, entry)
        self.events.record(
            KIND,
            name,
            "shadow",
            windows=self.rules.windows,
            current=stage.spec.version,
            threshold=spec.threshold,
            **info,
        )

    def _set_candidate(self, name: str, entry: dict[str, Any] | None) -> None:
        try:
            self._entry(name)["candidate"] = entry
            self._save()
        except (ModelRefused, OSError) as exc:
            log.error("pipeline %s: active.json not updated: %s", name, exc)
        self._prune(name)

    def _prune(self, name: str) -> None:
        """Delete the stored models of a pipeline that active.json no longer names (an SD card
        keeps only the current, previous and candidate models)."""
        entry = self.active.get(name) or {}
        keep = {
            Path(e["manifest"]).parent
            for e in (entry.get("current"), entry.get("previous"), entry.get("candidate"))
            if isinstance(e, dict)
        }
        for path in (self.root / name).glob("*"):
            if path.is_dir() and path not in keep and not path.name.startswith("."):
                shutil.rmtree(path, ignore_errors=True)

    def restore(self) -> None:
        """At start: a candidate that was in shadow at the last stop starts its shadow again
        (from zero windows: the tally is not kept)."""
        for name, entry in list(self.active.items()):
            cand = entry.get("candidate")
            if isinstance(cand, dict) and any(s.name == name for s in self.gateway.stages):
                self._start_shadow(name, cand)

    # ------------------------------------------------------------ verdicts (processing loop)
    def tick(self, now: float | None = None) -> None:
        """Verdicts of the shadows that have seen enough windows (or timed out), and the
        control socket's requests. Call between batches."""
        now = self.clock() if now is None else now
        for stage in self.gateway.stages:
            scorer = stage.shadow
            if not isinstance(scorer, ShadowScorer):
                continue
            verdict = scorer.verdict(now)
            if verdict is not None:
                self._conclude(stage, verdict)
        while True:
            try:
                body, answer = self._requests.get_nowait()
            except queue.Empty:
                break
            answer.put(self._serve(body))

    def _conclude(self, stage: ScoringStage, verdict: Verdict) -> None:
        name = stage.name
        stage.shadow = None
        cand = self._candidates.pop(name)
        info = {k: cand[k] for k in ("version", "counter", "bundle_id") if k in cand}
        if not verdict.promote:
            self._set_candidate(name, None)
            self.events.record(
                KIND,
                name,
                "not_promoted",
                reason=f"shadow evaluation failed: {verdict.reason}; {stage.spec.version} stays",
                failed=list(verdict.failed),
                figures=verdict.figures,
                **info,
            )
            return
        entry = self._entry(name)
        new = {k: cand[k] for k in ("manifest", "version", "counter", "bundle_id") if k in cand}
        before = dict(entry)
        entry.update(current=new, previous=entry["current"], candidate=None)
        try:
            self._save()
        except OSError as exc:
            self.active[name] = before
            self.events.record(KIND, name, "failed", reason=f"active.json could not be written ({exc})", **info)
            return
        old_version = entry["previous"].get("version")
        stage.swap_model(cand["model"], cand["spec"])
        self._prune(name)
        self.events.record(KIND, name, "promoted", replaced=old_version, figures=verdict.figures, **info)

    # ------------------------------------------------------------ rollback and status
    def rollback(self, name: str) -> dict[str, Any]:
        """Back to the model before the current one (processing thread)."""
        try:
            p, stage = self._pipeline(name)
        except ModelRefused as exc:
            return {"ok": False, "reason": "unknown_pipeline", "message": str(exc)}
        entry = self._entry(name)
        prev = entry.get("previous")
        if not isinstance(prev, dict):
            return {
                "ok": False,
                "reason": "no_previous",
                "message": f"pipeline {name} runs {stage.spec.version}, the first model it had: nothing to roll back to",
            }
        try:
            model = self._load(Path(prev["manifest"]))
            spec = check_fits(model, stage, p.threshold)
        except Exception as exc:
            message = f"the previous model {prev['manifest']} cannot be used: {exc}"
            self.events.record(KIND, name, "failed", reason=message, version=prev.get("version"))
            return {"ok": False, "reason": "failed", "message": message}
        before = dict(entry)
        old_version = entry["current"].get("version")
        entry.update(current=prev, previous=entry["current"])
        try:
            self._save()
        except OSError as exc:
            self.active[name] = before
            return {"ok": False, "reason": "failed", "message": f"active.json could not be written ({exc})"}
        stage.swap_model(model, spec)
        self.events.record(
            KIND,
            name,
            "rolled_back",
            reason="by command (edgeline-gateway model rollback)",
            version=prev.get("version"),
            counter=prev.get("counter"),
            replaced=old_version,
        )
        return {"ok": True, "pipeline": name, "version": prev.get("version"), "replaced": old_version}

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for stage in self.gateway.stages:
            entry = self.active.get(stage.name) or {}
            prev = entry.get("previous")
            current = entry.get("current") or {}
            out[stage.name] = {
                "version": current.get("version", stage.spec.version),  # the bundle's (release) version
                "model_version": stage.spec.version,  # the model manifest's
                "counter": current.get("counter", 0),
                "previous": prev.get("version") if isinstance(prev, dict) else None,
                "candidate": (self._candidates.get(stage.name) or {}).get("version"),
                "shadow": stage.shadow.status() if isinstance(stage.shadow, ShadowScorer) else None,
            }
        return out

    # ------------------------------------------------------------ control socket
    def handle(self, body: dict[str, Any]) -> dict[str, Any]:
        """Control socket thread: ``model.status`` / ``model.rollback``, answered by the processing thread."""
        answer: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._requests.put((body, answer))
        try:
            return answer.get(timeout=REQUEST_WAIT_S)
        except queue.Empty:
            return {"ok": False, "reason": "busy", "message": "the gateway did not answer in time"}

    def _serve(self, body: dict[str, Any]) -> dict[str, Any]:
        op = body.get("op")
        if op == "model.status":
            return {"ok": True, "pipelines": self.status()}
        if op == "model.rollback":
            name = body.get("pipeline")
            if not isinstance(name, str) or not name:
                return {"ok": False, "reason": "bad_request", "message": "name the pipeline to roll back"}
            return self.rollback(name)
        return {"ok": False, "reason": "bad_request", "message": f"unknown op {op!r} (model.status or model.rollback)"}


def _load_model(path: Path) -> ModelLike:
    from gateway.inference import load_model

    return load_model(path)
