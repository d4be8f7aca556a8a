"""Windows/s through the gateway's inference stage vs a bare ``interpreter.invoke()`` loop.

Same run, same model, same backend (LiteRT unless EDGELINE_TFLITE_BACKEND says otherwise),
one interpreter thread. Inputs: windows from the simulation board's vibration generator
(128 x 6 at 100 Hz) for the vibration models, watch-like windows (100 x 6 at 10 Hz) for
the BasicMotions models.

Rows per model:
  bare invoke loop     features precomputed (and quantised for int8); per window:
                       set_tensor + invoke + get_tensor on a batch-1 interpreter (the baseline)
  bare batched invoke  the same, one invoke on the whole batch (the model's own ceiling)
  stage: features in   Model.score_features (normalised features -> scores), batches of B
  stage: windows in    Model.score (raw windows -> features -> invoke -> scores), batches of B
  stage: 1 window/call Model.score on one window per call (no batching)

Memory: VmRSS (and VmHWM) from /proc/self/status of fresh processes: Python + numpy only
(nothing loaded), + the interpreter module, + a loaded model that scored a batch.

    .venv/bin/python -m bench.bench_inference [--quick] [--windows N]
"""

from __future__ import annotations

import os

# One core, as on the gateway: OpenBLAS worker threads (numpy's matmul in the feature stage)
# thrash on a busy 2-core machine. Effective only if numpy is not imported yet.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.inference import Model, load_model

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
MANIFESTS = (
    "vibration_anomaly_int8",
    "vibration_anomaly_float32",
    "basic_motions_int8",
    "basic_motions_float32",
)


def _windows(model: Model, n: int) -> npt.NDArray[np.float32]:
    if model.manifest.input.window == 128:
        from tools.train import sim_data

        per = 64
        machines = max(1, -(-n // per))
        w = sim_data.machine_set(range(700, 700 + machines), per, seed=7)
        return w[:n]
    rng = np.random.default_rng(3)
    t = np.arange(model.manifest.input.window) / model.manifest.input.rate_hz
    f = rng.uniform(0.2, 3.0, size=(n, 1, 6))
    a = rng.uniform(0.1, 8.0, size=(n, 1, 6))
    out = a * np.sin(2 * np.pi * f * t[None, :, None]) + rng.normal(0, 0.3, size=(n, t.size, 6))
    return out.astype(np.float32)


def _best_rate(fn: Callable[[], object], items: int, repeats: int) -> float:
    """Items per second of the fastest of `repeats` runs (after one warm-up run)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return items / best


def _bare_interpreter(model: Model, batch: int) -> Any:
    from gateway.inference import _import_backend

    interp = _import_backend(model.backend)(model_path=str(model.manifest.model_path), num_threads=1)
    if batch != 1:
        idx = interp.get_input_details()[0]["index"]
        interp.resize_tensor_input(idx, [batch, *model.runner.input_shape])
    interp.allocate_tensors()
    return interp


def _model_input(model: Model, x: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
    if model.runner.input_dtype == np.dtype(np.int8):
        s, z = model.runner.input_quant
        q: npt.NDArray[np.int8] = np.clip(np.rint(x / s) + z, -128, 127).astype(np.int8)
        return q
    return x


def throughput_rows(name: str, n: int, batch: int, repeats: int) -> list[dict[str, Any]]:
    model = load_model(MODELS / f"{name}.json")
    w = _windows(model, n)
    x = model.features(w)
    xin = _model_input(model, x)
    rows_in = [np.ascontiguousarray(xin[i : i + 1]) for i in range(n)]

    one = _bare_interpreter(model, 1)
    i_in = one.get_input_details()[0]["index"]
    i_out = one.get_output_details()[0]["index"]

    def bare_loop() -> None:
        for r in rows_in:
            one.set_tensor(i_in, r)
            one.invoke()
            one.get_tensor(i_out)

    many = _bare_interpreter(model, n)
    m_in = many.get_input_details()[0]["index"]
    m_out = many.get_output_details()[0]["index"]

    def bare_batched() -> None:
        many.set_tensor(m_in, xin)
        many.invoke()
        many.get_tensor(m_out)

    def stage_features() -> None:
        for i in range(0, n, batch):
            model.score_features(x[i : i + batch])

    def stage_windows() -> None:
        for i in range(0, n, batch):
            model.score(w[i : i + batch])

    single_n = min(n, 512)

    def stage_single() -> None:
        for i in range(single_n):
            model.score(w[i : i + 1])

    base = _best_rate(bare_loop, n, repeats)
    out = [
        ("bare invoke loop (baseline)", base),
        ("bare batched invoke", _best_rate(bare_batched, n, repeats)),
        (f"stage: features in, batch {batch}", _best_rate(stage_features, n, repeats)),
        (f"stage: windows in, batch {batch}", _best_rate(stage_windows, n, repeats)),
        ("stage: windows in, 1 window/call", _best_rate(stage_single, single_n, repeats)),
    ]
    return [
        {"table": "throughput", "model": name, "path": label, "windows_per_s": rate, "vs_bare_loop": rate / base}
        for label, rate in out
    ]


_RSS_SCRIPT = r"""
import json, sys
sys.path.insert(0, {root!r})
import numpy as np

def status():
    out = {{}}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out

what = {what!r}
if what in ("module", "model"):
    from gateway.inference import load_model, resolve_backend, _import_backend
    _import_backend(resolve_backend())
if what == "model":
    m = load_model({manifest!r})
    win = np.zeros((256, m.manifest.input.window, len(m.manifest.input.channels)), np.float32)
    m.score(win)
print(json.dumps(status()))
"""


def memory_rows(names: Sequence[str]) -> list[dict[str, Any]]:
    def measure(what: str, manifest: str = "") -> dict[str, int]:
        code = _RSS_SCRIPT.format(root=str(ROOT), what=what, manifest=manifest)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
        result: dict[str, int] = json.loads(proc.stdout.strip().splitlines()[-1])
        return result

    base = measure("nothing")
    rows: list[dict[str, Any]] = [
        {"table": "memory", "what": "python + numpy, nothing loaded (baseline)", **base, "delta_kb": 0},
    ]
    mod = measure("module")
    rows.append({"table": "memory", "what": "+ gateway.inference + interpreter module", **mod})
    for name in names:
        m = measure("model", str(MODELS / f"{name}.json"))
        rows.append({"table": "memory", "what": f"+ {name} loaded, 256 windows scored", **m})
    for r in rows:
        r["delta_kb"] = r["VmRSS"] - base["VmRSS"]
    return rows


def rows(quick: bool = False, n_windows: int | None = None) -> list[dict[str, Any]]:
    n = n_windows or (256 if quick else 4096)
    repeats = 1 if quick else 5
    batch = 64 if quick else 256
    out: list[dict[str, Any]] = []
    for name in MANIFESTS:
        out += throughput_rows(name, n, batch, repeats)
    out += memory_rows(MANIFESTS[:1] if quick else MANIFESTS[:3:2])
    return out


def render(all_rows: Sequence[dict[str, Any]]) -> str:
    backend = load_model(MODELS / f"{MANIFESTS[0]}.json", self_test=False).backend
    lines = [
        f"Inference stage throughput (backend {backend}, 1 interpreter thread, same run)",
        "",
        "| model | path | windows/s | vs bare invoke loop |",
        "|---|---|---|---|",
    ]
    for r in all_rows:
        if r["table"] == "throughput":
            lines.append(f"| {r['model']} | {r['path']} | {r['windows_per_s']:,.0f} | {r['vs_bare_loop']:.2f}x |")
    lines += [
        "",
        "Resident memory (fresh processes, /proc/self/status)",
        "",
        "| process | VmRSS MB | VmHWM MB | RSS over baseline MB |",
        "|---|---|---|---|",
    ]
    for r in all_rows:
        if r["table"] == "memory":
            lines.append(
                f"| {r['what']} | {r['VmRSS'] / 1024:.1f} | {r['VmHWM'] / 1024:.1f} | {r['delta_kb'] / 1024:+.1f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="edgeline inference-stage benchmark")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (checks that the bench runs)")
    parser.add_argument("--windows", type=int, default=None, help="windows per measurement")
    opts = parser.parse_args(argv)
    print(render(rows(opts.quick, opts.windows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
