"""Train and export the committed models.

.venv-train/bin/python -m tools.train all --seed 1        # both models into models/
.venv-train/bin/python -m tools.train vibration --seed 1 --out /tmp/models
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tools.train.common import MODELS_DIR


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.train", description=__doc__.split("\n")[0])
    p.add_argument("target", choices=("all", "vibration", "basic_motions"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=MODELS_DIR, help="output folder (default: models/)")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        print(
            "tools.train needs TensorFlow: create .venv-train with tensorflow-cpu==2.21.0 "
            "and sktime==1.2.0 (see docs/models.md)",
            file=sys.stderr,
        )
        return 2
    if args.target in ("all", "vibration"):
        from tools.train import vibration

        vibration.train(args.seed, args.out)
    if args.target in ("all", "basic_motions"):
        from tools.train import basic_motions

        basic_motions.train(args.seed, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
