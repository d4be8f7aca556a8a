# Checks of the MicroPython test harness itself: these run on the unix port.
import sys

RUNTIMES = ("micropython", "cpython")


def test_runs_on_expected_runtime():
    # Under the harness this module runs on both runtimes; each reports its own name.
    assert sys.implementation.name in ("micropython", "cpython")


def test_repo_root_is_given():
    import os

    root = os.getenv("EDGELINE_ROOT")
    assert root, "EDGELINE_ROOT is not set"
    with open(root + "/tests/upy/test_harness.py") as f:
        assert "RUNTIMES" in f.read()
