"""A whole gateway (gateway.runner.Runner) on a thread of the test process, subscribed before
the test goes on, stopped and joined after it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gateway.config import from_dict
from gateway.runner import Runner


@contextmanager
def runner_thread(config: dict[str, Any], *, models: dict[str, Any] | None = None) -> Iterator[Runner]:
    runner = Runner(from_dict(config), models=models or {})
    t = threading.Thread(target=runner.run, daemon=True)
    t.start()
    try:
        assert runner.mqtt.subscribed.wait(10), "no SUBACK from the local broker"  # no frame missed
        yield runner
    finally:
        runner.stop_event.set()
        t.join(20)
    assert not t.is_alive(), "the gateway did not stop within 20 s"
