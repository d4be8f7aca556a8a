"""``python -m tools.train``: the same as ``edgeline-train`` (tools/train/cli.py), plus the
committed models' targets.

.venv-train/bin/python -m tools.train all --seed 1        # both committed models into models/
.venv-train/bin/python -m tools.train vibration --seed 1 --out /tmp/models
.venv-train/bin/python -m tools.train csv pump.csv --rate-hz 100 --name pump --out /tmp/pump
"""

from __future__ import annotations

from tools.train.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
