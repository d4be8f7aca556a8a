"""Test harness: pytest fixtures for real Mosquitto brokers and a collector that runs
``tests/upy/test_*.py`` on the MicroPython unix port.

Each ``def test_*()`` of a ``tests/upy`` module becomes its own pytest item, run in a fresh
``micropython`` process from a clean temporary directory (the current directory comes first on
MicroPython's ``sys.path`` and would shadow packages). Module-level literals tune the run:

    HEAPSIZE = "64k"                        # micropython -X heapsize=64k
    MICROPYPATH = ["some/dir"]              # extra entries, relative to the repo root
    RUNTIMES = ("micropython", "cpython")   # also run each test under CPython, in-process
    TIMEOUT = 60                            # seconds per test process
    BROKER = True                           # a session Mosquitto; EDGELINE_MQTT_HOST/PORT are set
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.mosquitto import Mosquitto
from tests.support.upy import ROOT, run_micropython

RUNNER = ROOT / "tests" / "support" / "upy_runner.py"
PASS_MARK = b"UPY-TEST-PASSED"


# --------------------------------------------------------------------------- Mosquitto


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Start brokers on demand: ``mosquitto_factory(users=..., acl=..., persistence=...)``."""
    brokers: list[Mosquitto] = []

    def make(**kwargs: Any) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"mosquitto-{len(brokers)}", **kwargs)
        brokers.append(broker)
        return broker.start()

    yield make
    for broker in brokers:
        broker.kill()


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """A running anonymous broker on a free 127.0.0.1 port."""
    return mosquitto_factory()


_session_broker: Mosquitto | None = None


def _shared_broker() -> Mosquitto:
    global _session_broker
    if _session_broker is None:
        _session_broker = Mosquitto(Path(tempfile.mkdtemp(prefix="edgeline-broker-"))).start()
    return _session_broker


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "micropython: runs on the MicroPython unix port")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _session_broker is not None:
        _session_broker.kill()


# --------------------------------------------------------------------------- MicroPython tests


class UpyTestFailed(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _module_options(tree: ast.Module) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in {"HEAPSIZE", "MICROPYPATH", "RUNTIMES", "TIMEOUT", "BROKER"}:
                options[name] = ast.literal_eval(node.value)
    return options


class UpyModule(pytest.File):
    """A tests/upy module: its test functions, on each runtime it asks for."""

    def collect(self) -> Iterator[pytest.Item]:
        tree = ast.parse(self.path.read_bytes(), filename=str(self.path))
        options = _module_options(tree)
        runtimes = tuple(options.get("RUNTIMES", ("micropython",)))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                for runtime in runtimes:
                    name = node.name if len(runtimes) == 1 else f"{node.name}[{runtime}]"
                    cls = UpyItem if runtime == "micropython" else CPythonItem
                    yield cls.from_parent(self, name=name, function=node.name, options=options)


class UpyItem(pytest.Item):
    def __init__(self, *, function: str, options: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.function = function
        self.options = options
        self.add_marker("micropython")

    def runtest(self) -> None:
        env = {}
        if self.options.get("BROKER"):
            broker = _shared_broker()
            env = {"EDGELINE_MQTT_HOST": broker.host, "EDGELINE_MQTT_PORT": str(broker.port)}
        result = run_micropython(
            [str(RUNNER), self.path.stem, self.function],
            heapsize=self.options.get("HEAPSIZE"),
            micropypath=[self.path.parent, *self.options.get("MICROPYPATH", ())],
            env=env,
            timeout=float(self.options.get("TIMEOUT", 60)),
        )
        if result.returncode != 0 or PASS_MARK not in result.stdout:
            raise UpyTestFailed(
                f"micropython exited with {result.returncode}\n"
                + result.stdout.decode(errors="replace")
                + result.stderr.decode(errors="replace")
            )

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, UpyTestFailed):
            return f"MicroPython test {self.path.name}::{self.function} failed:\n{excinfo.value.text}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.path.name}::{self.name} [micropython]"


class CPythonItem(pytest.Item):
    """The same tests/upy function run in-process under CPython."""

    def __init__(self, *, function: str, options: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.function = function
        self.options = options

    def runtest(self) -> None:
        extra = [str(ROOT / p) for p in self.options.get("MICROPYPATH", ())]
        added = [*extra, str(self.path.parent), str(ROOT), str(ROOT / "firmware")]
        old_path = list(sys.path)
        old_root = os.environ.get("EDGELINE_ROOT")
        sys.path[:0] = added
        os.environ["EDGELINE_ROOT"] = str(ROOT)
        try:
            spec = importlib.util.spec_from_file_location(f"upy_cpython_{self.path.stem}", self.path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            getattr(module, self.function)()
        finally:
            sys.path[:] = old_path
            if old_root is None:
                os.environ.pop("EDGELINE_ROOT", None)
            else:
                os.environ["EDGELINE_ROOT"] = old_root

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.path.name}::{self.name} [cpython]"


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.File | None:
    if module_path.parent.name == "upy" and module_path.name.startswith("test_"):
        return UpyModule.from_parent(parent, path=module_path)
    return None
