"""Persist + ACK: the writer thread commits batches in order, then ACKs them.

SQLite releases the GIL while it writes, so the next batch is decoded and scored
meanwhile. Commits are grouped by time as well as by what queued up: after the
first batch arrives the writer takes whatever else arrives within ``group_s``
(or until ``group_rows`` rows), so one transaction, one fsync and one ACK per
device serve many small batches at any device count. The thread owns what it
writes: the raw log and registry writes, and the Acker with its counters.

Bounded: when it falls behind, submit() waits (counted). A failed commit is
fatal: the writer stops at once, ``on_error`` is called from its thread (the
runner stops intake there), and every later submit raises ``CommitFailed``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.acker import Acker
from gateway.batch import Commit
from gateway.errors import GatewayError

log = logging.getLogger(__name__)

GROUP_ROWS = 20_000  # frames in one grouped commit at most
WAIT_LOG_S = 10.0  # the writer falling behind is logged at most this often (every wait is counted)


class CommitFailed(GatewayError):
    """The raw log (or registry) could not be written: nothing more may be ACKed."""


@dataclass
class WriterStats:
    commits: int = 0
    grouped: int = 0  # batches that shared another batch's commit
    waits: int = 0  # submits that waited for the writer
    wait_s: float = 0.0


class Writer:
    def __init__(
        self,
        store: Callable[[Commit], None],
        acker: Acker,
        *,
        depth: int = 4,
        group_s: float = 0.0,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """store(commit): make it durable (raises on failure). depth: batches queued at most."""
        self._store = store
        self.acker = acker
        self.group_s = group_s
        self._on_error = on_error
        self._queue: queue.Queue[Commit | None] = queue.Queue(maxsize=depth)
        self.stats = WriterStats()
        self.error: BaseException | None = None
        self._wait_logged = 0.0
        self._thread = threading.Thread(target=self._run, name="edgeline-commit", daemon=True)
        self._thread.start()

    def submit(self, commit: Commit) -> None:
        if self.error is not None:
            raise CommitFailed(f"raw log commit failed: {self.error}") from self.error
        try:
            self._queue.put_nowait(commit)
        except queue.Full:
            t0 = time.perf_counter()
            self.stats.waits += 1
            self._queue.put(commit)
            self.stats.wait_s += time.perf_counter() - t0
            if t0 - self._wait_logged >= WAIT_LOG_S:
                self._wait_logged = t0
                log.warning(
                    "the raw log writer falls behind (disk slower than the frames): processing waited "
                    "%d time(s), %.1f s in all",
                    self.stats.waits,
                    self.stats.wait_s,
                )

    def _timeout(self) -> float | None:
        due = self.acker.next_due()
        return None if due is None else max(0.0, due - time.monotonic())

    def _gather(self, first: Commit) -> tuple[Commit, bool]:
        """first and what follows it within group_s (or queued already): (merged, stop seen)."""
        merged = first
        deadline = time.monotonic() + self.group_s
        while len(merged.rows) < GROUP_ROWS:
            try:
                left = deadline - time.monotonic()
                more = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if more is None:
                return merged, True
            if merged is first:  # the batches stay as they were submitted
                merged = Commit(rows=[], seq_states={}, registry_ops=[], acks={}, now=first.now)
                merged.merge(first)
            merged.merge(more)
            self.stats.grouped += 1
        return merged, False

    def _run(self) -> None:
        acker = self.acker
        while True:
            try:
                item = self._queue.get(timeout=self._timeout())
            except queue.Empty:
                acker.flush()
                continue
            stop = item is None
            if item is not None:
                commit, stop = self._gather(item)
                try:
                    self._store(commit)
                except BaseException as exc:
                    self._fail(exc)
                    return
                self.stats.commits += 1
                acker.add(commit.acks, commit.seq_states)
            acker.flush(force=stop)
            if stop:
                return

    def _fail(self, exc: BaseException) -> None:
        log.critical("raw log commit failed; intake stops and nothing more is ACKed: %s", exc)
        self.error = exc
        if self._on_error is not None:
            self._on_error(exc)

    def close(self, timeout: float = 30.0) -> bool:
        """Commit and ACK everything submitted, then stop. False: the thread is still running
        after ``timeout`` (a stalled disk); its databases must then stay open."""
        if self._thread.is_alive():
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                return False
        self._thread.join(timeout)
        return not self._thread.is_alive()
