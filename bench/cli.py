"""The command line every simple bench module has: ``--quick``, then its table on stdout."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def run(
    description: str,
    rows: Callable[[bool], list[dict[str, Any]]],
    render: Callable[[list[dict[str, Any]]], str],
    argv: list[str] | None = None,
) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (checks that the bench runs)")
    opts = parser.parse_args(argv)
    print(render(rows(opts.quick)))
    return 0
