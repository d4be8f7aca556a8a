"""The forwarder: accepts records from the gateway, keeps them in the SQLite queue, sends them to the
cloud broker (QoS 1) in lane priority order, and deletes each only after its PUBACK.

Threads (the caller's threads only ever touch an in-memory buffer):

* caller      ``submit()`` appends to a deque under a lock and returns (never waits for disk or network).
* store       owns the SQLite queue: commits the buffer in batches (every ``commit_interval_ms``,
              at once for alerts), turns PUBACKs into deletes, picks the next records to publish,
              enforces the disk budget.
* network     runs the paho-mqtt client (v2 callback API): connect, TLS, reconnect with
              exponential backoff and jitter, keepalive, PUBACK and command delivery.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import random
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from gateway.forward.config import ForwardConfig, check_private_files
from gateway.forward.errors import QueueError, RecordError
from gateway.forward.payload import (
    command_topic_filter,
    encode_json,
    json_topic,
)
from gateway.forward.queue import (
    ALERT,
    LANE_INDEX,
    LANES,
    REGISTRY,
    ROW_OVERHEAD,
    BudgetResult,
    DiskFullError,
    ForwardQueue,
    Pending,
    QueuedRecord,
    RecoveryReport,
    lane_lo,
    summary_level,
)
from gateway.forward.ratelimit import TokenBucket

log = logging.getLogger("edgeline.forward")

CommandCallback = Callable[[dict[str, Any]], None]

_PREFETCH = 512
_MAX_BATCH = 5000
_SMALL_BATCH = 64
_HANDOFF = 4
_RETRY_AFTER_WRITE_ERROR_S = 1.0


class Forwarder:
    """Durable store-and-forward of gateway records to a cloud MQTT broker."""

    def __init__(
        self,
        config: ForwardConfig,
        gateway_id: str,
        data_dir: Path,
        *,
        on_command: CommandCallback | None = None,
        max_page_count: int | None = None,
    ) -> None:
        if not gateway_id or any(c in gateway_id for c in "/+#") or len(gateway_id) > 64:
            raise RecordError(f"gateway_id: expected 1..64 characters without '/', '+' or '#', got {gateway_id!r}")
        self.config = config
        self.gateway_id = gateway_id
        self.data_dir = Path(data_dir)
        db_path = config.db_path if config.db_path is not None else Path("forward.db")
        self.db_path = db_path if db_path.is_absolute() else self.data_dir / db_path
        self.on_command = on_command
        self.recovery: RecoveryReport | None = None
        self._queue = ForwardQueue(
            self.db_path,
            budget_bytes=config.disk_budget_bytes,
            compaction_factor=config.compaction_factor,
            compaction_max_level=config.compaction_max_level,
            max_page_count=max_page_count,
        )
        self._lock = threading.Lock()
        self._committed = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._buffer: deque[Pending] = deque()
        self._urgent = False
        self._accepted_total = 0  # records accepted into the buffer
        self._settled_total = 0  # records committed (or counted lost) out of the buffer
        # Tickets of submit(): every ticket <= _settled_ticket is committed or counted lost.
        self._last_ticket = 0
        self._settled_ticket = 0
        # Sorted [first, last] ranges of tickets above _settled_ticket that were lost before a commit.
        self._lost_tickets: list[list[int]] = []
        self._acks: deque[int] = deque()
        self._ack_batch = max(1, min(16, config.max_inflight // 4))
        self._store_thread: threading.Thread | None = None
        self._net_thread: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._wake_r: socket.socket | None = None  # wakes the network thread's select()
        self._wake_w: socket.socket | None = None
        self._started = False
        # Status, guarded by _lock.
        n = len(LANES)
        self._stat_submitted = [0] * n
        self._stat_rejected = [0] * n
        self._stat_overflow = [0] * n
        self._stat_sent = [0] * n
        self._stat_acked = [0] * n
        self._stat_depth = [0] * n
        self._stat_inflight = [0] * n
        self._stat_oldest: list[float | None] = [None] * n
        self._stat_disk: dict[str, int] = {}
        self._counters: dict[str, int] = {}
        self._conn_state = "stopped"
        self._conn_since = time.time()
        self._conn_error: str | None = None
        self._connects = 0
        self._connected = False
        self._refused = False
        self._commands_received = 0
        self._commands_rejected = 0
        self._last_command_error: str | None = None
        self._last_write_error: str | None = None
        self._drain_marks: deque[tuple[float, int]] = deque(maxlen=4096)  # (time, acks) per ack batch
        self._reported_overflow = [0] * n

    # -- public API ------------------------------------------------------------------------
    def start(self) -> None:
        """Open (and if needed recover) the queue, then start the store and network threads.

        Raises :class:`ForwardConfigError` (nothing started) when the password file or the TLS
        private key is readable by others than the owner."""
        if self._started:
            raise RuntimeError("Forwarder.start() called twice")
        check_private_files(self.config)
        self.recovery = self._queue.open()
        with self._lock:  # depth is right from the start, before the store thread runs
            self._stat_depth = list(self._queue.counts)
            self._counters = dict(self._queue.counters)
        if self.recovery.state in ("salvaged", "replaced"):
            log.warning("forward queue recovered: %s", self.recovery.as_dict())
            self.submit("registry", {"type": "queue_recovery", **self.recovery.as_dict()})
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._client = self._make_client()
        self._started = True
        self._set_conn_state("connecting")
        self._store_thread = threading.Thread(target=self._store_main, name="forward-store", daemon=True)
        self._net_thread = threading.Thread(target=self._net_main, name="forward-net", daemon=True)
        self._store_thread.start()
        self._net_thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Commit what is buffered, disconnect and close the queue.  Unsent records stay queued."""
        if not self._started:
            return
        self._stop.set()
        self._wake.set()
        if self._store_thread is not None:
            self._store_thread.join(timeout)
        if self._net_thread is not None:
            self._net_thread.join(timeout)
        self._queue.close()
        self._started = False
        self._set_conn_state("stopped")

    def submit(self, lane: str, record: dict[str, Any]) -> int:
        """Queue ``record`` on ``lane`` ("alert", "registry", "summary", "raw").  Thread-safe, never blocks
        on disk or network.  Raises :class:`RecordError` (and counts it) for a bad lane or a record
        that is not JSON-serialisable; a full memory buffer (the disk is failing) counts the record
        as lost and reports it upward instead of blocking.

        Returns a ticket (1, 2, 3 ... in submission order) for :meth:`committed`."""
        index = LANE_INDEX.get(lane)
        if index is None:
            raise RecordError(f"lane {lane!r}: expected one of {', '.join(LANES)}")
        try:
            if not isinstance(record, dict):
                raise TypeError(f"expected a dict, got {type(record).__name__}")
            body = json.dumps(record, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            with self._lock:
                self._stat_rejected[index] += 1
            raise RecordError(
                f"record for lane {lane!r} is not JSON-serialisable ({exc}); use numbers, strings, lists, dicts; no NaN"
            ) from exc
        created, level = time.time(), summary_level(index, record)
        with self._lock:
            self._last_ticket += 1
            ticket = self._last_ticket
            wake = index == ALERT or not self._buffer
            if len(self._buffer) >= self.config.memory_buffer_max:
                self._stat_overflow[index] += 1
                self._urgent = wake = True
                self._ticket_lost(ticket)
            else:
                self._buffer.append(Pending(index, created, body, level, ticket))
                self._accepted_total += 1
                self._stat_submitted[index] += 1
                if index == ALERT:
                    self._urgent = True
        if wake:
            self._wake.set()
        return ticket

    def committed(self, ticket: int) -> bool:
        """True once the record of ``ticket`` (from :meth:`submit`) is committed to the queue file,
        so it survives a crash or kill -9 of the process (a power cut may still take the last
        commits: synchronous=NORMAL), or once it was counted lost before it could be committed
        (memory buffer full, or larger than the budget allows: see ``status()["losses"]``).
        Tickets are settled in order: ``committed(t)`` implies ``committed(s)`` for every s < t."""
        with self._lock:
            return ticket <= self._settled_ticket

    def _ticket_lost(self, ticket: int) -> None:
        """Lock held: ``ticket`` will never be committed (counted lost instead)."""
        lost = self._lost_tickets
        i = bisect.bisect_left(lost, [ticket, ticket])
        if i > 0 and lost[i - 1][1] == ticket - 1:
            i -= 1
            lost[i][1] = ticket
        else:
            lost.insert(i, [ticket, ticket])
        if i + 1 < len(lost) and lost[i + 1][0] == ticket + 1:
            lost[i][1] = lost.pop(i + 1)[1]
        self._settle_tickets(self._settled_ticket)

    def _settle_tickets(self, through: int) -> None:
        """Lock held: every ticket <= ``through`` is settled; so are lost ones right after."""
        self._settled_ticket = max(self._settled_ticket, through)
        lost = self._lost_tickets
        while lost and lost[0][0] <= self._settled_ticket + 1:
            self._settled_ticket = max(self._settled_ticket, lost.pop(0)[1])

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is committed to the queue file (or counted lost)."""
        deadline = time.monotonic() + timeout
        with self._committed:
            # Every record submitted so far (by ticket), and as many records as were accepted by
            # now (internal reports included, which jump ahead of submitted records).
            target, ticket = self._accepted_total, self._last_ticket
            self._urgent = True
            self._wake.set()
            while self._settled_total < target or self._settled_ticket < ticket:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._committed.wait(left)
        return True

    def wait_drained(self, timeout: float) -> bool:
        """Wait until the buffer and every lane are empty (everything acknowledged by the cloud)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._buffer and sum(self._stat_depth) == 0 and self._settled_total == self._accepted_total:
                    return True
            self._wake.set()
            time.sleep(0.02)
        return False

    def status(self) -> dict[str, Any]:
        """Per-lane depth, oldest record age, drain rate, losses/compactions, connection state."""
        now = time.time()
        with self._lock:
            buffered = [0] * len(LANES)
            for item in self._buffer:
                buffered[item.lane] += 1
            lanes = {}
            for i, name in enumerate(LANES):
                oldest = self._stat_oldest[i]
                lanes[name] = {
                    "depth": self._stat_depth[i],
                    "buffered": buffered[i],
                    "inflight": self._stat_inflight[i],
                    "oldest_age_s": None if oldest is None else max(0.0, now - oldest),
                    "submitted": self._stat_submitted[i],
                    "sent": self._stat_sent[i],
                    "acked": self._stat_acked[i],
                    "rejected": self._stat_rejected[i],
                    "lost_buffer_full": self._stat_overflow[i],
                    "dropped": self._counters.get(f"dropped.{name}", 0),
                    "compacted": self._counters.get(f"compacted.{name}", 0),
                }
            return {
                "gateway": self.gateway_id,
                "epoch": self._queue.epoch,
                "lanes": lanes,
                "drain_rate_per_s": self._drain_rate(),
                "losses": {k: v for k, v in sorted(self._counters.items()) if k.startswith(("dropped.", "lost."))},
                "compactions": sum(v for k, v in self._counters.items() if k.startswith("compacted.")),
                "counters": dict(sorted(self._counters.items())),
                "connection": {
                    "state": self._conn_state,
                    "since": self._conn_since,
                    "host": self.config.host,
                    "port": self.config.port,
                    "tls": self.config.tls is not None,
                    "connects": self._connects,
                    "last_error": self._conn_error,
                },
                "disk": dict(self._stat_disk, budget_bytes=self.config.disk_budget_bytes),
                "last_write_error": self._last_write_error,
                "commands": {
                    "received": self._commands_received,
                    "rejected": self._commands_rejected,
                    "last_error": self._last_command_error,
                },
                "recovery": None if self.recovery is None else self.recovery.as_dict(),
            }

    # -- store thread ----------------------------------------------------------------------
    def _store_main(self) -> None:
        try:
            _StoreLoop(self).run()
        except Exception:  # pragma: no cover - last resort: say why the forwarder stopped forwarding
            log.exception("forward store thread died")
            with self._lock:
                self._last_write_error = "store thread died; see the log"

    # -- network thread --------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        client_id = cfg.client_id or f"edgeline-fwd-{self.gateway_id}"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=not cfg.persistent_session,
            protocol=mqtt.MQTTv311,
        )
        client.max_inflight_messages_set(cfg.max_inflight)
        client.max_queued_messages_set(0)
        if cfg.username is not None:
            password = None
            if cfg.password_file is not None:
                try:
                    password = cfg.password_file.read_text().strip()
                except OSError as exc:
                    raise QueueError(
                        f"forward.password_file {cfg.password_file}: cannot read ({exc.strerror})"
                    ) from exc
            client.username_pw_set(cfg.username, password)
        if cfg.tls is not None:
            tls = cfg.tls
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file is not None else None,
                certfile=str(tls.cert_file) if tls.cert_file is not None else None,
                keyfile=str(tls.key_file) if tls.key_file is not None else None,
                cert_reqs=ssl.CERT_REQUIRED if tls.verify else ssl.CERT_NONE,
            )
            if not tls.verify:
                client.tls_insecure_set(True)
        # publish() is called from the store thread.  With a register-write callback set (paho's
        # external-loop API), publish() only queues the packet and calls it; the network thread's
        # select() wakes up and does every socket write itself.
        client.on_socket_register_write = self._wake_network
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _net_main(self) -> None:
        client = self._client
        assert client is not None
        cfg = self.config
        delay = cfg.backoff_min_s
        first = True
        try:
            while not self._stop.is_set():
                self._set_conn_state("connecting")
                self._refused = False
                try:
                    if first:
                        client.connect(cfg.host, cfg.port, cfg.keepalive_s)
                        first = False
                    else:
                        client.reconnect()
                except (OSError, ssl.SSLError, ValueError) as exc:
                    _close_sockets_in_traceback(exc)
                    first = first and isinstance(exc, ValueError)
                    self._set_conn_state("disconnected", f"{type(exc).__name__}: {exc}")
                else:
                    error = self._serve(client)
                    with self._lock:
                        was_connected = self._connected
                        self._connected = False
                    if error is not None:
                        self._set_conn_state("disconnected", error)
                    if was_connected:
                        delay = cfg.backoff_min_s
                if self._stop.is_set():
                    break
                # Exponential backoff with "equal jitter": many gateways coming back after a cloud
                # outage do not all reconnect in the same instant.
                self._stop.wait(random.uniform(delay / 2, delay))
                delay = min(delay * 2, cfg.backoff_max_s)
            with contextlib.suppress(OSError, ssl.SSLError):
                if client.socket() is not None:
                    client.disconnect()
                    client.loop_write()
        finally:
            with self._lock:
                self._connected = False
            for sock in (self._wake_r, self._wake_w):
                if sock is not None:
                    sock.close()

    def _serve(self, client: mqtt.Client) -> str | None:
        """paho's external-loop API on one connection: select() on the socket and on our wake-up
        socket (written when the store thread queued a publish).  Returns why the connection ended."""
        wake = self._wake_r
        assert wake is not None
        batch = max(16, self.config.max_inflight)
        while not self._stop.is_set() and not self._refused:
            sock = client.socket()
            if sock is None:
                return "connection closed"
            pending = sock.pending() if isinstance(sock, ssl.SSLSocket) else 0
            wlist = [sock] if client.want_write() else []
            try:
                readable, _, _ = select.select([sock, wake], wlist, [], 0.0 if pending else 0.25)
            except (OSError, ValueError) as exc:
                return f"connection lost ({exc})"
            if wake in readable:
                with contextlib.suppress(BlockingIOError):
                    wake.recv(4096)
            if sock in readable or pending:
                rc = client.loop_read(batch)  # up to a window of PUBACKs per call
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    return f"connection lost ({mqtt.error_string(rc)})"
            if client.want_write():
                rc = client.loop_write()
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    return f"connection lost ({mqtt.error_string(rc)})"
            rc = client.loop_misc()  # keepalive
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return f"connection lost ({mqtt.error_string(rc)})"
        return None

    def _wake_network(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        """paho: a packet is queued (e.g. by publish() on the store thread); the network thread
        writes it.  Only the network thread ever touches the socket (a TLS stream must not be
        written and read from two threads at once)."""
        if self._wake_w is not None:
            with contextlib.suppress(BlockingIOError, OSError):
                self._wake_w.send(b"w")

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            self._refused = True
            self._set_conn_state("refused", f"broker refused the connection: {reason}")
            return
        client.subscribe(command_topic_filter(self.config.topic_prefix, self.gateway_id), qos=1)
        if self.config.payload_format == "sparkplug":
            from gateway.forward.sparkplug import nbirth

            client.publish(*nbirth(self.config.sparkplug_group, self.gateway_id, self._connects), qos=0)
        with self._lock:
            self._connected = True
            self._connects += 1
        self._set_conn_state("connected")
        self._wake.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags, reason: ReasonCode, props: Any
    ) -> None:
        with self._lock:
            self._connected = False
        if not self._stop.is_set():
            self._set_conn_state("disconnected", f"disconnected: {reason}")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any) -> None:
        self._acks.append(mid)
        # Acks are handled in batches (the store thread also looks every few ms while records
        # are in flight): one thread switch per batch, not per PUBACK.
        if len(self._acks) >= self._ack_batch:
            self._wake.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        prefix = command_topic_filter(self.config.topic_prefix, self.gateway_id)[:-1]
        name = message.topic[len(prefix) :] if message.topic.startswith(prefix) else message.topic
        try:
            payload = json.loads(message.payload.decode("utf-8")) if message.payload else {}
            if not isinstance(payload, dict):
                raise ValueError(f"expected a JSON object, got {type(payload).__name__}")
        except (UnicodeDecodeError, ValueError) as exc:
            self._reject_command(message.topic, f"payload is not a JSON object: {exc}")
            return
        command = {"command": name, "topic": message.topic, **payload}
        with self._lock:
            self._commands_received += 1
        callback = self.on_command
        if callback is None:
            self._reject_command(message.topic, "no command handler registered")
            return
        try:
            callback(command)
        except Exception as exc:  # the handler is the gateway's code: count, report, keep running
            self._reject_command(message.topic, f"handler raised {type(exc).__name__}: {exc}")

    def _reject_command(self, topic: str, error: str) -> None:
        with self._lock:
            self._commands_rejected += 1
            self._last_command_error = f"{topic}: {error}"
        self.submit("registry", {"type": "command_rejected", "topic": topic, "error": error})

    # -- helpers ---------------------------------------------------------------------------
    def _set_conn_state(self, state: str, error: str | None = None) -> None:
        with self._lock:
            if state != self._conn_state:
                self._conn_state = state
                self._conn_since = time.time()
            if error is not None:
                self._conn_error = error

    def _drain_rate(self) -> float:
        """Acknowledged records per second over the last ~5 s (call with the lock held)."""
        now = time.monotonic()
        while self._drain_marks and now - self._drain_marks[0][0] > 5.0:
            self._drain_marks.popleft()
        if not self._drain_marks:
            return 0.0
        total = sum(n for _, n in self._drain_marks)
        span = max(now - self._drain_marks[0][0], 0.5)
        return total / span


class _StoreLoop:
    """State of the store thread (kept out of Forwarder so only this thread touches it)."""

    def __init__(self, fwd: Forwarder) -> None:
        self.fwd = fwd
        self.q = fwd._queue
        self.cfg = fwd.config
        n = len(LANES)
        self.inflight: dict[int, tuple[int, int, int]] = {}  # mid -> (lane, id, bytes in the file, at most)
        self.lane_inflight: list[deque[int]] = [deque() for _ in range(n)]
        self.lane_acked: list[set[int]] = [set() for _ in range(n)]
        self.sizes: dict[int, int] = {}  # id -> bytes in the file (at most), while in flight
        # Per lane, in order: (id, bytes) of acknowledged records not deleted yet.
        self.to_delete: list[deque[tuple[int, int]]] = [deque() for _ in range(n)]
        self.prefetch: list[deque[QueuedRecord]] = [deque() for _ in range(n)]
        self.cursor = [lane_lo(i) - 1 for i in range(n)]
        self.last_sent = [lane_lo(i) - 1 for i in range(n)]
        self.exhausted = [False] * n
        self.first_pending: float | None = None
        self.peak_bytes = 0  # largest database + WAL + WAL index seen after a write
        self.last_delete = time.monotonic()
        self.retry_at = 0.0
        self.small_batches_until = 0.0
        self.next_wake = 0.25
        self.bandwidth = (
            TokenBucket(self.cfg.bandwidth_limit_bytes_per_s) if self.cfg.bandwidth_limit_bytes_per_s else None
        )
        self.drain = TokenBucket(self.cfg.drain_limit_messages_per_s) if self.cfg.drain_limit_messages_per_s else None
        self.encode: Callable[[QueuedRecord], tuple[str, bytes]]
        gw = fwd.gateway_id
        if self.cfg.payload_format == "sparkplug":
            from gateway.forward.sparkplug import encode_sparkplug, sparkplug_topic

            group = self.cfg.sparkplug_group
            self.encode = lambda r: (sparkplug_topic(group, gw, r.lane), encode_sparkplug(gw, r))
        else:
            prefix = self.cfg.topic_prefix
            self.encode = lambda r: (json_topic(prefix, gw, r.lane), encode_json(gw, r))

    def run(self) -> None:
        fwd = self.fwd
        self._refresh_status()
        while True:
            fwd._wake.clear()
            stopping = fwd._stop.is_set()
            self._process_acks()
            now = time.monotonic()
            with fwd._lock:
                pending = len(fwd._buffer)
                urgent = fwd._urgent
                connected = fwd._connected
            if pending and self.first_pending is None:
                self.first_pending = now
            commit_due = pending > 0 and (
                stopping
                or urgent
                or pending >= _MAX_BATCH
                or now - (self.first_pending or now) >= self.cfg.commit_interval_ms / 1000.0
            )
            delete_due = self._deletes_pending() and (
                stopping or commit_due or now - self.last_delete >= self.cfg.delete_interval_ms / 1000.0
            )
            if (commit_due or delete_due) and (now >= self.retry_at or stopping):
                self._commit()
            elif urgent and not pending:
                with fwd._lock:
                    fwd._urgent = False
            self.next_wake = 0.25
            if connected and not stopping:
                self._top_up()
            if stopping:
                self._final_commit()
                return
            with fwd._lock:
                pending = len(fwd._buffer)
            timeout = self.next_wake
            if pending:
                left = self.cfg.commit_interval_ms / 1000.0 - (time.monotonic() - (self.first_pending or now))
                timeout = min(timeout, max(left, 0.0005))
            if self._deletes_pending():
                left = self.cfg.delete_interval_ms / 1000.0 - (time.monotonic() - self.last_delete)
                timeout = min(timeout, max(left, 0.0005))
            if self.inflight and connected:
                timeout = min(timeout, 0.005)  # PUBACKs are collected in batches (see _on_publish)
            if self.retry_at > time.monotonic():
                timeout = max(timeout, min(self.retry_at - time.monotonic(), 0.25))
            fwd._wake.wait(timeout)

    # -- acks -> deletes -------------------------------------------------------------------
    def _process_acks(self) -> None:
        acks = self.fwd._acks
        acked = [0] * len(LANES)
        while acks:
            mid = acks.popleft()
            entry = self.inflight.pop(mid, None)
            if entry is None:
                continue
            lane, rid, size = entry
            done = self.lane_acked[lane]
            done.add(rid)
            self.sizes[rid] = size
            order = self.lane_inflight[lane]
            # In-order delete: a record is deleted only when every record before it in its lane is acked.
            while order and order[0] in done:
                head = order.popleft()
                done.discard(head)
                self.to_delete[lane].append((head, self.sizes.pop(head)))
                acked[lane] += 1
        if any(acked):
            total = sum(acked)
            with self.fwd._lock:
                for i, n in enumerate(acked):
                    self.fwd._stat_acked[i] += n
                    self.fwd._stat_depth[i] = max(0, self.fwd._stat_depth[i] - n)
                    self.fwd._stat_inflight[i] = len(self.lane_inflight[i])
                self.fwd._drain_marks.append((time.monotonic(), total))

    # -- commits ---------------------------------------------------------------------------
    def _take_batch(self) -> list[Pending]:
        """The oldest buffered records, at most one transaction's worth (count and bytes)."""
        fwd = self.fwd
        # After "disk full": commit in small pieces so what fits gets in.
        limit = _SMALL_BATCH if self.small_batches_until > time.monotonic() else _MAX_BATCH
        room = self.q.max_commit_bytes
        items: list[Pending] = []
        with fwd._lock:
            buffer = fwd._buffer
            while buffer and len(items) < limit:
                size = self.q.estimate_bytes(buffer[0])
                if items and size > room:
                    break
                room -= size
                items.append(buffer.popleft())
            fwd._urgent = bool(buffer)
        return items

    def _deletes_pending(self) -> bool:
        return any(self.to_delete)

    def _delete_batch(self, room: int) -> tuple[dict[int, int], int, list[int]]:
        """Deletes for the next commit, about ``room`` bytes of rows at most (one row at least when
        ``room`` is the whole transaction): lane -> delete through this id, their bytes, rows per lane.

        Deleting rows rewrites the pages they are on: bounded so that one transaction never outgrows
        the WAL allowance (after a long drain, the deletes take several commits)."""
        through: dict[int, int] = {}
        taken = [0] * len(LANES)
        total = 0
        for lane, rows in enumerate(self.to_delete):
            for rid, size in rows:
                if total + size > room and (total or room < self.q.max_txn_bytes):
                    return through, total, taken
                through[lane] = rid
                taken[lane] += 1
                total += size
        return through, total, taken

    def _commit(self) -> None:
        fwd = self.fwd
        items: list[Pending] = []
        too_large: list[Pending] = []
        for item in self._take_batch():
            (too_large if self.q.stored_bytes(item) > self.q.max_record_bytes else items).append(item)
        incoming = sum(self.q.estimate_bytes(item) for item in items)
        if items and self.q.needs_room(incoming):
            self._enforce(force=False, incoming=incoming)
        through, delete_bytes, taken = self._delete_batch(self.q.max_txn_bytes - incoming)
        try:
            new, _deleted = self.q.commit(items, through, delete_bytes=delete_bytes)
        except QueueError as exc:
            with fwd._lock:
                fwd._buffer.extendleft(reversed(items))
                fwd._last_write_error = str(exc)
            if too_large:
                self._settle(too_large, lost=True)
            self._on_write_error(exc)
            return
        self.first_pending = None
        for lane, n in enumerate(taken):
            for _ in range(n):
                self.to_delete[lane].popleft()
        if not self._deletes_pending():  # else the rest goes with the next commit, at once
            self.last_delete = time.monotonic()
        for record in new:
            lane = record.lane
            if self.exhausted[lane] and record.id > self.cursor[lane]:
                self.prefetch[lane].append(record)
                self.cursor[lane] = record.id
        self._report_overflow()
        self._refresh_status()
        self._settle(too_large, lost=True)
        self._settle(items)

    def _settle(self, items: list[Pending], *, lost: bool = False) -> None:
        """``items`` are committed (or, with ``lost``, counted lost: too large for the budget)."""
        if not items:
            return
        fwd = self.fwd
        if lost:
            counts: dict[str, int] = {}
            for item in items:
                name = LANES[item.lane]
                log.error(
                    "forward: a %s record of %d bytes is larger than the disk budget allows", name, len(item.body)
                )
                self.q.bump(f"lost.{name}")
                counts[name] = counts.get(name, 0) + 1
            report = {"type": "loss_report", "reason": "record_too_large", "lost_before_commit": counts}
            self._push_internal(
                REGISTRY, {**report, "max_record_bytes": self.q.max_record_bytes, "epoch": self.q.epoch}
            )
        with fwd._committed:
            fwd._settled_total += len(items)
            if lost:
                for item in items:
                    if item.ticket:
                        fwd._ticket_lost(item.ticket)
            else:
                # Submitted records commit in ticket order (the buffer is FIFO for them).
                fwd._settle_tickets(max(item.ticket for item in items))
            fwd._committed.notify_all()

    def _final_commit(self) -> None:
        failures = 0
        while failures < 3:
            with self.fwd._lock:
                pending = len(self.fwd._buffer)
            if not pending and not self._deletes_pending():
                break
            self.retry_at = 0.0
            written = self.q.commits
            self._commit()
            if self.q.commits == written:
                failures += 1
        with contextlib.suppress(QueueError):
            self.q.save_counters()

    def _on_write_error(self, exc: QueueError) -> None:
        if isinstance(exc, DiskFullError):
            # "budget_full": the queue's own page cap stopped a commit that the estimate let through.
            name, reason = ("disk_full" if exc.reason == "disk_full" else "budget_full"), exc.reason
        else:
            name = reason = "write_errors"
        self.q.bump(f"events.{name}")
        log.error("forward queue write failed: %s", exc)
        self.retry_at = time.monotonic() + _RETRY_AFTER_WRITE_ERROR_S
        if isinstance(exc, DiskFullError):
            # The disk is smaller than the budget (or the estimate was short): free space the same way
            # the budget does.
            self.small_batches_until = time.monotonic() + 10.0
            if self._enforce(force=True, reason=exc.reason):
                self.retry_at = time.monotonic()
        self._report_overflow(reason=reason)
        self._refresh_status()

    def _enforce(self, *, force: bool, incoming: int = 0, reason: str = "disk_budget") -> bool:
        # Records sent by this process (in flight or acked) are never compacted or dropped.
        protect = {lane: self.last_sent[lane] for lane in range(len(LANES))}
        result = BudgetResult()
        try:
            result = self.q.enforce_budget(protect, incoming=incoming, force=force, result=result)
        except QueueError as exc:  # what was done before the error is committed and reported below
            log.error("forward queue: could not free space (%s): %s", reason, exc)
        if not result:
            return False
        for lane in result.touched:
            self.prefetch[lane].clear()
            self.exhausted[lane] = False
            self.cursor[lane] = self.last_sent[lane]
        self._loss_report(result, reason=reason)
        return True

    def _loss_report(self, result: BudgetResult, reason: str) -> None:
        log.warning(
            "forward queue over budget (%s): compacted %s, dropped %s", reason, result.compacted, result.dropped
        )
        report = {
            "type": "loss_report",
            "reason": reason,
            "compacted": result.compacted,
            "dropped": result.dropped,
            "dropped_seq_ranges": result.dropped_seq_ranges,
            "epoch": self.q.epoch,
            "totals": {
                k: v for k, v in sorted(self.q.counters.items()) if k.startswith(("dropped.", "compacted.", "lost."))
            },
        }
        self._push_internal(REGISTRY, report)

    def _report_overflow(self, reason: str = "memory_buffer_full") -> None:
        fwd = self.fwd
        with fwd._lock:
            fresh = [fwd._stat_overflow[i] - fwd._reported_overflow[i] for i in range(len(LANES))]
            fwd._reported_overflow = list(fwd._stat_overflow)
        if not any(fresh):
            return
        lost = {LANES[i]: n for i, n in enumerate(fresh) if n}
        for name, n in lost.items():
            self.q.bump(f"lost.{name}", n)
        self._push_internal(
            REGISTRY,
            {"type": "loss_report", "reason": reason, "lost_before_commit": lost, "epoch": self.q.epoch},
        )

    def _push_internal(self, lane: int, record: dict[str, Any]) -> None:
        body = json.dumps(record, separators=(",", ":"))
        with self.fwd._lock:
            # Internal reports bypass the memory bound: they are tiny and are the only trace of a loss.
            self.fwd._buffer.appendleft(Pending(lane, time.time(), body, 0))
            self.fwd._accepted_total += 1
            self.fwd._urgent = True
        self.fwd._wake.set()

    def _refresh_status(self) -> None:
        oldest = [self.q.oldest_created(i) if self.q.counts[i] else None for i in range(len(LANES))]
        db_bytes, wal_bytes, shm_bytes = self.q.file_bytes()
        on_disk = db_bytes + wal_bytes + shm_bytes
        self.peak_bytes = max(self.peak_bytes, on_disk)
        disk = {
            "used_bytes": on_disk,
            "peak_bytes": self.peak_bytes,
            "db_file_bytes": db_bytes,
            "wal_file_bytes": wal_bytes,
            "shm_file_bytes": shm_bytes,
            "records_bytes": self.q.used_bytes(),
        }
        with self.fwd._lock:
            for i in range(len(LANES)):
                self.fwd._stat_depth[i] = self.q.counts[i]
                self.fwd._stat_oldest[i] = oldest[i]
                self.fwd._stat_inflight[i] = len(self.lane_inflight[i])
            self.fwd._stat_disk = disk
            self.fwd._counters = dict(self.q.counters)

    # -- publishing ------------------------------------------------------------------------
    def _next_record(self) -> QueuedRecord | None:
        for lane in range(len(LANES)):
            pf = self.prefetch[lane]
            if not pf and not self.exhausted[lane]:
                rows = self.q.fetch(lane, self.cursor[lane], _PREFETCH)
                pf.extend(rows)
                if rows:
                    self.cursor[lane] = rows[-1].id
                self.exhausted[lane] = len(rows) < _PREFETCH
            if pf:
                return pf[0]
        return None

    def _top_up(self) -> None:
        client = self.fwd._client
        assert client is not None
        sent = [0] * len(LANES)
        # paho keeps at most max_inflight on the wire and queues the rest, sending them as PUBACKs
        # come in; handing it up to HANDOFF windows at a time saves a thread switch per record.  An
        # alert is handed over at once (it then waits behind at most that many records).
        limit = _HANDOFF * self.cfg.max_inflight
        free = limit - len(self.inflight)
        if free < self.cfg.max_inflight and not self.prefetch[ALERT] and self.exhausted[ALERT]:
            return
        while len(self.inflight) < limit:
            record = self._next_record()
            if record is None:
                break
            try:
                topic, payload = self.encode(record)
            except Exception as exc:  # a bug in an encoder must not stop the drain
                # Sent as JSON instead, counted: never block the lane on one record.
                log.error("cannot encode record %s of lane %s: %s", record.seq, LANES[record.lane], exc)
                self.q.bump(f"events.encode_fallback_{LANES[record.lane]}")
                payload = encode_json(self.fwd.gateway_id, record)
                topic = json_topic(self.cfg.topic_prefix, self.fwd.gateway_id, record.lane)
            if self.bandwidth is not None and not self.bandwidth.take(len(payload)):
                self.next_wake = min(self.next_wake, max(self.bandwidth.wait_time(len(payload)), 0.001))
                break
            if self.drain is not None and not self.drain.take(1):
                self.next_wake = min(self.next_wake, max(self.drain.wait_time(1), 0.001))
                break
            info = client.publish(topic, payload, qos=1)
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                break  # e.g. queue full: try again on the next wake
            self.prefetch[record.lane].popleft()
            size = min(len(record.body), self.q.max_record_bytes) + ROW_OVERHEAD
            self.inflight[info.mid] = (record.lane, record.id, size)
            self.lane_inflight[record.lane].append(record.id)
            self.last_sent[record.lane] = record.id
            sent[record.lane] += 1
        if any(sent):
            with self.fwd._lock:
                for i, n in enumerate(sent):
                    self.fwd._stat_sent[i] += n
                    self.fwd._stat_inflight[i] = len(self.lane_inflight[i])


def _close_sockets_in_traceback(exc: BaseException) -> None:
    """paho-mqtt 2.2 leaves the TLS socket open when the handshake fails (e.g. an untrusted
    server certificate); close it here instead of leaking a file descriptor per retry."""
    tb = exc.__traceback__
    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            if isinstance(value, socket.socket):
                with contextlib.suppress(OSError):
                    value.close()
        tb = tb.tb_next
