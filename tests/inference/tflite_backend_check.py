"""Run under .venv-tflite (tflite-runtime 2.14, numpy < 2): score saved inputs with gateway.inference.

    .venv-tflite/bin/python tests/inference/tflite_backend_check.py IN_DIR OUT_DIR MANIFEST...

For each manifest, reads IN_DIR/<manifest stem>.npy (windows), loads the model through
gateway.inference with the tflite-runtime backend (sha256, tensors and self-test checked) and
writes to OUT_DIR:

  <stem>.npy           scores (or probabilities) of the windows
  <stem>.features.npy  the windows' normalised features, as computed here (numpy < 2)

and, when IN_DIR/<stem>.x.npy (normalised features) exists:

  <stem>.x.npy         scores of those features (Model.score_features)
  <stem>.y.npy         the model's raw outputs for them (dequantised, Runner.run)

then prints one JSON line of facts.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv: list[str]) -> int:
    import numpy as np

    from gateway.inference import load_model

    in_dir, out_dir = Path(argv[0]), Path(argv[1])
    os.environ["EDGELINE_TFLITE_BACKEND"] = "tflite-runtime"
    for manifest in argv[2:]:
        stem = Path(manifest).stem
        model = load_model(manifest)
        windows = np.load(in_dir / f"{stem}.npy")
        np.save(out_dir / f"{stem}.npy", model.score(windows))
        np.save(out_dir / f"{stem}.features.npy", model.features(windows))
        x_path = in_dir / f"{stem}.x.npy"
        if x_path.exists():
            x = np.load(x_path)
            np.save(out_dir / f"{stem}.x.npy", model.score_features(x))
            np.save(out_dir / f"{stem}.y.npy", model.runner.run(x))
        import tflite_runtime

        facts = {
            "manifest": stem,
            "backend": model.backend,
            "tflite_runtime": tflite_runtime.__version__,
            "numpy": np.__version__,
            "self_test_max_dev": model.self_test(),
            "resizes": model.runner.resizes,
        }
        print(json.dumps(facts), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
