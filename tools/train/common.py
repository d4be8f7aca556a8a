"""Shared training helpers: seeding, TFLite export (float32 + int8), manifests, metrics.

TensorFlow is imported lazily (only .venv-train has it), so the metric helpers also work
in the main .venv.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.manifest import FORMAT, FORMAT_VERSION, parse_manifest

ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = ROOT / "models"
TRAIN_COMMAND = ".venv-train/bin/python -m tools.train all --seed {seed}"

FloatArray = npt.NDArray[np.float32]


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and TensorFlow/Keras; force deterministic TF kernels."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:
        pass  # already initialised in this process; determinism is still enabled


def export_tflite(
    model: Any,
    out_path: Path,
    *,
    representative: FloatArray | None = None,
) -> bytes:
    """Convert a Keras model to .tflite with a dynamic batch dimension.

    With ``representative`` the model is fully int8-quantised (int8 input and output
    tensors; scale / zero point in the tensor details), else float32.
    """
    import tensorflow as tf

    tmp = Path(tempfile.mkdtemp(prefix="edgeline-export-"))
    try:
        saved = tmp / "saved_model"
        # SavedModel freezes Keras 3 variables; from_concrete_functions would leave
        # READ_VARIABLE ops that break int8 calibration.
        model.export(str(saved), format="tf_saved_model", verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        if representative is not None:
            rep = representative.astype(np.float32)

            def gen() -> Iterator[list[FloatArray]]:
                for i in range(rep.shape[0]):
                    yield [rep[i : i + 1]]

            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = gen
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        content: bytes = conv.convert()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(content)
    return content


def write_manifest(path: Path, manifest: dict[str, Any], content: bytes) -> dict[str, Any]:
    """Fill in format/sha256, validate with the gateway's own parser, write sorted JSON."""
    m = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest}
    m["sha256"] = hashlib.sha256(content).hexdigest()
    parse_manifest(m, path)  # the gateway must accept what we ship
    path.write_text(json.dumps(m, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    return m


def training_info(seed: int, data: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    import tensorflow as tf

    info: dict[str, Any] = {
        "command": TRAIN_COMMAND.format(seed=seed),
        "seed": seed,
        "data": data,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    if extra:
        info.update(extra)
    return info


def roc_auc(neg: npt.ArrayLike, pos: npt.ArrayLike) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties half."""
    n = np.asarray(neg, dtype=np.float64).ravel()
    p = np.asarray(pos, dtype=np.float64).ravel()
    if n.size == 0 or p.size == 0:
        raise ValueError("roc_auc needs at least one negative and one positive score")
    allv = np.concatenate([n, p])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(allv.size, dtype=np.float64)
    sorted_v = allv[order]
    # Average ranks over ties.
    i = 0
    while i < sorted_v.size:
        j = i
        while j + 1 < sorted_v.size and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    rp = ranks[n.size :].sum()
    return float((rp - p.size * (p.size + 1) / 2.0) / (p.size * n.size))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rounded(x: float, digits: int = 4) -> float:
    return float(round(float(x), digits))


Featurizer = Callable[[FloatArray], FloatArray]


def selftest_block(runner: Any, inputs: FloatArray) -> dict[str, Any]:
    """Manifest ``selftest``: inputs, the outputs measured now, and a tolerance.

    float32: 1e-4 absolute + 1e-4 relative. int8: 1.5 output quantisation steps (another
    runtime may round one step differently) + 1e-4 relative.
    """
    outputs = runner.run(inputs)
    atol = 1.5 * runner.output_quant[0] if runner.output_dtype == np.dtype(np.int8) else 1e-4
    return {
        "inputs": [[float(v) for v in row] for row in inputs],
        "outputs": [[float(v) for v in row] for row in outputs],
        "atol": float(atol),
        "rtol": 1e-4,
    }
