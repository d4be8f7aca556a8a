"""``python -m tools.release``: the edgeline-release command line."""

from __future__ import annotations

import sys

from tools.release.cli import main

sys.exit(main())
