"""``python -m tools.flash``: the edgeline-flash command line."""

from __future__ import annotations

import sys

from tools.flash.cli import main

sys.exit(main())
