"""The gateway's update service: takes bundles from the cloud link (delivery.py) or a local file
(``edgeline-gateway update install FILE``), verifies them (bundle.py), extracts them to
``<state_dir>/staged/<bundle_id>/`` and hands them to the handler of their kind on the processing
thread.

Threads:

* cloud link (the Forwarder's network thread): ``_on_message`` only queues the message.
* delivery (our own): owns the chunk stores and the subscriptions to chunk topics; verifies,
  extracts, records "received" or "refused" (UpdateEvents) and queues the bundle.
* processing (the runner's loop): ``tick`` takes each queued bundle, accepts its counter (from
  then on it cannot be replayed) and calls ``handler.install(bundle, staged)``.
* control socket: ``handle`` answers ``update.install`` (waits for the delivery thread's verdict)
  and ``update.status``.

A refused bundle is remembered by id (``<state_dir>/delivered.json``) and not fetched again, except
one refused for damage in transit (a chunk or the whole file not matching its hash): a live
(not retained) publication of its meta fetches it anew.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gateway.durable import write_json_durably
from gateway.updates.bundle import (
    Bundle,
    BundleError,
    Counters,
    extract,
    file_sha256,
    load_trusted_keys,
    peek,
    verify_bundle,
)
from gateway.updates.delivery import (
    ChunkStore,
    Meta,
    bundles_root,
    chunk_topic,
    held_transfers,
    meta_filter,
    parse_meta,
)
from gateway.updates.events import UpdateEvents
from gateway.updates.settings import UpdatesSettings

log = logging.getLogger("gateway.updates")

WINDOW = 8  # chunk topics subscribed at once per transfer
REMEMBERED = 256  # bundle ids remembered as done (installed or refused)
INSTALL_TIMEOUT_S = 120.0
TRANSPORT = "transport"  # done state of a bundle damaged in transit: fetched again when republished


class Handler(Protocol):
    def install(self, bundle: Bundle, staged: Path) -> None: ...


MessageCallback = Callable[[str, bytes, bool], None]


class CloudLink(Protocol):
    """What the service needs of the cloud link (gateway.forward.Forwarder)."""

    def add_route(self, topic_filter: str, callback: MessageCallback) -> None: ...

    def subscribe(self, topic_filters: Sequence[str], qos: int = 1) -> None: ...

    def unsubscribe(self, topic_filters: Sequence[str], *, send: bool = True) -> None: ...


@dataclass
class _LocalInstall:
    path: Path
    done: threading.Event = field(default_factory=threading.Event)
    answer: dict[str, Any] = field(default_factory=dict)


class UpdateService:
    def __init__(
        self,
        settings: UpdatesSettings,
        *,
        site: str,
        gateway_id: str,
        events: UpdateEvents,
        link: CloudLink | None = None,
        topic_prefix: str = "edgeline",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.site = site
        self.gateway_id = gateway_id
        self.events = events
        self.link = link
        self.topic_prefix = topic_prefix
        self.clock = clock
        self.keys = load_trusted_keys(settings.trusted_keys)
        self.state_dir = Path(settings.state_dir)
        for sub in ("", "incoming", "staged"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        self.incoming = self.state_dir / "incoming"
        self.counters = Counters(self.state_dir / "counters.json")
        self._done_path = self.state_dir / "delivered.json"
        self._done: dict[str, str] = _load_done(self._done_path)
        self._handlers: dict[str, Handler] = {}
        self._inbox: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._ready: queue.Queue[tuple[Bundle, Path]] = queue.Queue()
        self._transfers: dict[str, ChunkStore] = {}  # "<kind>/<name>" -> its transfer (delivery thread)
        self._chunk_subs: set[str] = set()  # chunk topics subscribed (delivery thread)
        self._lock = threading.Lock()
        self._stats = {"chunk_messages": 0, "chunks_fetched": 0, "received": 0, "refused": 0, "installed": 0}
        self._progress: dict[str, dict[str, Any]] = {}
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ wiring
    def register(self, kind: str, handler: Handler) -> None:
        """The handler of one bundle kind ("model", "config", "firmware")."""
        self._handlers[kind] = handler

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="updates-delivery", daemon=True)
        self._thread.start()
        for meta in held_transfers(self.incoming):  # resumed before anything new arrives
            self._inbox.put(("resume", meta))
        if self.link is not None:
            self.link.add_route(bundles_root(self.topic_prefix, self.gateway_id) + "/#", self._on_message)
            # QoS 0 (also for the chunks): every topic is retained, so what a lost link drops comes
            # again with the subscription on the reconnect
            self.link.subscribe([meta_filter(self.topic_prefix, self.gateway_id)], qos=0)

    def stop(self, timeout: float = 10.0) -> None:
        if self.link is not None:
            self.link.unsubscribe([meta_filter(self.topic_prefix, self.gateway_id)], send=False)
        if self._thread is not None:
            self._inbox.put(("stop",))
            self._thread.join(timeout)
            self._thread = None

    # ------------------------------------------------------------------ processing thread
    def tick(self, now: float) -> None:
        """Hand each verified bundle to its handler (the processing thread's loop calls this)."""
        while True:
            try:
                bundle, staged = self._ready.get_nowait()
            except queue.Empty:
                return
            self._hand_over(bundle, staged)

    def _hand_over(self, bundle: Bundle, staged: Path) -> None:
        kind, name = bundle.kind, bundle.name
        handler = self._handlers.get(kind)
        if handler is None:
            self._refused(
                kind,
                name,
                "no_handler",
                f"this gateway installs no {kind} bundles (no handler: see [updates] in docs/updates.md)",
                bundle.bundle_id,
            )
            shutil.rmtree(staged, ignore_errors=True)
            return
        if bundle.counter <= self.counters.last(kind, name):  # another bundle took this counter meanwhile
            last = self.counters.last(kind, name)
            self._refused(kind, name, "replayed", f"counter {bundle.counter} is not above {last}", bundle.bundle_id)
            shutil.rmtree(staged, ignore_errors=True)
            return
        self.counters.accept(kind, name, bundle.counter)
        try:
            handler.install(bundle, staged)
        except Exception as exc:  # the handler's failure is reported; the service runs on
            log.exception("update %s %s: the %s handler failed", kind, name, kind)
            self.events.record(kind, name, "failed", reason=f"{type(exc).__name__}: {exc}", version=bundle.version)
            return
        with self._lock:
            self._stats["installed"] += 1

    # ------------------------------------------------------------------ control socket
    def handle(self, body: dict[str, Any]) -> dict[str, Any]:
        """``update.install`` {"file": absolute path} and ``update.status``."""
        op = body.get("op")
        if op == "update.status":
            return {"ok": True, "status": self.status()}
        if op == "update.install":
            path = body.get("file")
            if not isinstance(path, str) or not os.path.isabs(path):
                return {"ok": False, "reason": "bad_request", "message": "update install: give the bundle's path"}
            return self.install_file(Path(path))
        return {"ok": False, "reason": "bad_request", "message": f"unknown update request {op!r}"}

    def install_file(self, path: Path, timeout: float = INSTALL_TIMEOUT_S) -> dict[str, Any]:
        """Verify a local bundle file the same way as a delivered one; the answer says whether it
        was received (then queued for its handler) or refused, and why."""
        request = _LocalInstall(path)
        self._inbox.put(("file", request))
        if not request.done.wait(timeout):
            return {"ok": False, "reason": "busy", "message": "the gateway did not verify the bundle in time"}
        return request.answer

    def status(self) -> dict[str, Any]:
        with self._lock:
            stats = dict(self._stats)
            transfers = {k: dict(v) for k, v in self._progress.items()}
        return {
            "trusted_keys": list(self.keys.ids),
            "state_dir": str(self.state_dir),
            "handlers": sorted(self._handlers),
            "transfers": transfers,
            **stats,
            **self.events.status(),
        }

    # ------------------------------------------------------------------ cloud link thread
    def _on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        root = bundles_root(self.topic_prefix, self.gateway_id) + "/"
        if not topic.startswith(root):
            return
        parts = topic[len(root) :].split("/")
        if len(parts) == 3 and parts[2] == "meta":
            self._inbox.put(("meta", parts[0], parts[1], payload, retained))
        elif len(parts) == 4 and parts[3].isdigit():
            self._inbox.put(("chunk", topic, parts[0], parts[1], parts[2], int(parts[3]), payload))

    # ------------------------------------------------------------------ delivery thread
    def _main(self) -> None:
        while True:
            item = self._inbox.get()
            try:
                if item[0] == "stop":
                    return
                if item[0] == "meta":
                    self._on_meta(*item[1:])
                elif item[0] == "chunk":
                    self._on_chunk(*item[1:])
                elif item[0] == "resume":
                    self._start_transfer(item[1], resumed=True)
                elif item[0] == "file":
                    request: _LocalInstall = item[1]
                    try:
                        request.answer = self._process_file(request.path, expected=None, source="local")
                    finally:
                        request.done.set()
            except Exception:  # a bug in one message must not stop the deliveries
                log.exception("updates: delivery failed on %s", item[0])

    def _on_meta(self, kind: str, name: str, payload: bytes, retained: bool) -> None:
        try:
            meta = parse_meta(kind, name, payload, self.settings.max_bundle_bytes)
        except BundleError as exc:
            self._refused(kind, name, exc.reason, str(exc), None)
            return
        state = self._done.get(meta.bundle_id)
        if state == TRANSPORT and not retained:
            state = None  # published again: fetch it anew
        if state is not None:
            return
        current = self._transfers.get(f"{kind}/{name}")
        if current is not None and current.meta.bundle_id == meta.bundle_id:
            return
        if current is not None:  # a newer release replaces the one in transfer
            self._drop_transfer(current)
        self._start_transfer(meta, resumed=False)

    def _start_transfer(self, meta: Meta, *, resumed: bool) -> None:
        key = f"{meta.kind}/{meta.name}"
        if self._done.get(meta.bundle_id) not in (None, TRANSPORT) or key in self._transfers:
            return
        store = ChunkStore(self.incoming, meta)
        self._transfers[key] = store
        self._set_progress(store)
        self.events.record(
            meta.kind,
            meta.name,
            "transferring",
            bundle_id=meta.bundle_id,
            size=meta.size,
            chunks=meta.chunks,
            held=len(store.have),
            resumed=resumed,
        )
        self._request_chunks(store)

    def _request_chunks(self, store: ChunkStore) -> None:
        if store.complete:
            self._finish(store)
            return
        if self.link is None:
            return
        meta = store.meta
        wanted = [chunk_topic(self.topic_prefix, self.gateway_id, meta, i) for i in store.missing()[:WINDOW]]
        new = [topic for topic in wanted if topic not in self._chunk_subs]
        if new:  # one SUBSCRIBE; the broker sends each retained chunk at once
            self._chunk_subs.update(new)
            # QoS 0: a chunk lost with the link is still missing, so asked for again on the reconnect;
            # and no PUBACK per chunk (small writes that Nagle holds for the broker's delayed ACK:
            # 40 ms per window of chunks, measured)
            self.link.subscribe(new, qos=0)

    def _on_chunk(self, topic: str, kind: str, name: str, bundle_id: str, index: int, payload: bytes) -> None:  # noqa: PLR0917 (one queued message's fields)
        with self._lock:
            self._stats["chunk_messages"] += 1
        if topic in self._chunk_subs:  # not again on a reconnect (one UNSUBSCRIBE when the transfer ends)
            self._chunk_subs.discard(topic)
            if self.link is not None:
                self.link.unsubscribe([topic], send=False)
        store = self._transfers.get(f"{kind}/{name}")
        if store is None or store.meta.bundle_id != bundle_id:
            return  # a chunk of a transfer that ended or was replaced
        if not payload and store.meta.chunk_length(index) > 0:
            return  # a retained chunk cleared by the publisher (a newer bundle replaced it)
        try:
            fetched = store.put(index, payload)
        except BundleError as exc:
            self._drop_transfer(store)
            self._refused(kind, name, exc.reason, str(exc), bundle_id, state=TRANSPORT)
            return
        if fetched:
            with self._lock:
                self._stats["chunks_fetched"] += 1
            self._set_progress(store)
        self._request_chunks(store)

    def _drop_transfer(self, store: ChunkStore) -> None:
        meta = store.meta
        topics = [chunk_topic(self.topic_prefix, self.gateway_id, meta, i) for i in range(meta.chunks)]
        self._chunk_subs.difference_update(topics)
        if self.link is not None:  # a persistent session's subscriptions too
            self.link.unsubscribe(topics)
        self._transfers.pop(f"{meta.kind}/{meta.name}", None)
        with self._lock:
            self._progress.pop(f"{meta.kind}/{meta.name}", None)
        store.discard()

    def _finish(self, store: ChunkStore) -> None:
        meta = store.meta
        bundle_path = self.incoming / f"{meta.bundle_id}.bundle"
        try:
            store.assemble(bundle_path)
        except BundleError as exc:
            self._drop_transfer(store)
            self._refused(meta.kind, meta.name, exc.reason, str(exc), meta.bundle_id, state=TRANSPORT)
            return
        self._drop_transfer(store)
        try:
            self._process_file(bundle_path, expected=(meta.kind, meta.name), source="cloud")
        finally:
            bundle_path.unlink(missing_ok=True)

    def _process_file(self, path: Path, *, expected: tuple[str, str] | None, source: str) -> dict[str, Any]:
        """Verify and extract; queue for the handler. Nothing outside ``staged/`` is written."""
        label = expected or peek(path) or ("bundle", path.name)
        try:
            bundle = verify_bundle(
                path,
                keys=self.keys,
                site=self.site,
                gateway_id=self.gateway_id,
                counters=self.counters,
                now=self.clock(),
                max_bytes=self.settings.max_bundle_bytes,
            )
            if expected is not None and (bundle.kind, bundle.name) != expected:
                raise BundleError(
                    "bad_format",
                    f"published as {expected[0]}/{expected[1]} but the bundle is {bundle.kind}/{bundle.name}; "
                    "publish it with edgeline-release publish",
                )
            staged = self.state_dir / "staged" / bundle.bundle_id
            extract(path, bundle, staged)
        except BundleError as exc:
            bundle_id = file_sha256(path) if path.exists() else None
            self._refused(*label, exc.reason, str(exc), bundle_id)
            return {"ok": False, "reason": exc.reason, "message": str(exc)}
        except OSError as exc:  # the gateway's own disk, not the bundle: it may be delivered again
            message = f"cannot verify or stage the bundle ({exc}); free space in {self.state_dir} and send it again"
            self.events.record(*label, "failed", reason=message)
            return {"ok": False, "reason": "failed", "message": message}
        self._remember(bundle.bundle_id, "received")
        with self._lock:
            self._stats["received"] += 1
        self.events.record(
            bundle.kind,
            bundle.name,
            "received",
            version=bundle.version,
            counter=bundle.counter,
            bundle_id=bundle.bundle_id,
            key_id=bundle.key_id,
            source=source,
        )
        self._ready.put((bundle, staged))
        return {"ok": True, "bundle": bundle.describe()}

    def _refused(
        self, kind: str, name: str, reason: str, message: str, bundle_id: str | None, *, state: str = "refused"
    ) -> None:
        if bundle_id is not None:
            self._remember(bundle_id, state)
        with self._lock:
            self._stats["refused"] += 1
        self.events.record(kind, name, "refused", reason=f"{reason}: {message}", code=reason, bundle_id=bundle_id)

    def _remember(self, bundle_id: str, state: str) -> None:
        self._done[bundle_id] = state
        while len(self._done) > REMEMBERED:
            del self._done[next(iter(self._done))]
        write_json_durably(self._done_path, self._done)

    def _set_progress(self, store: ChunkStore) -> None:
        meta = store.meta
        with self._lock:
            self._progress[f"{meta.kind}/{meta.name}"] = {
                "bundle_id": meta.bundle_id,
                "size": meta.size,
                "chunks": meta.chunks,
                "held": len(store.have),
            }


def _load_done(path: Path) -> dict[str, str]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        log.warning("updates: %s is unreadable; bundles seen before may be fetched again", path)
        return {}
    return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}
