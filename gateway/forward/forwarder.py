"""The forwarder: accepts records from the gateway, keeps them in the SQLite queue, sends them to the
cloud broker (QoS 1) in lane priority order, and deletes each only after its PUBACK.

Threads (the caller's threads only ever touch an in-memory buffer):

* caller      ``submit()`` appends to a deque under a lock and returns (never waits for disk or network).
* store       owns the SQLite queue (``gateway/forward/store.py``): commits the buffer in groups
              (``gateway/forward/commit_policy.py``: at once for alerts, about once a second for a
              steady trickle), turns PUBACKs into deletes, picks the next records to publish,
              enforces the disk budget.
* network     runs the paho-mqtt client (v2 callback API): connect, TLS, reconnect with
              exponential backoff and jitter, keepalive, PUBACK and command delivery.

Long (about 700 lines) because the public API (submit, tickets, flush, status) and the network
thread share the state under one lock; the store thread's part lives in ``store.py``, when to
commit in ``commit_policy.py``.  The network thread (paho callbacks, backoff) is the next part
to move out.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from gateway.atrest import key_name
from gateway.forward.config import ForwardConfig, check_private_files
from gateway.forward.errors import QueueError, RecordError
from gateway.forward.payload import command_topic_filter
from gateway.forward.queue import (
    LANE_INDEX,
    LANES,
    ROW_OVERHEAD,
    ForwardQueue,
    Pending,
    RecoveryReport,
    summary_level,
)
from gateway.forward.store import StoreLoop

if TYPE_CHECKING:
    from gateway.atrest import Cipher
    from gateway.forward.sparkplug_session import SparkplugSession

log = logging.getLogger("edgeline.forward")

CommandCallback = Callable[[dict[str, Any]], None]
#: (topic, payload, retained) of a message on a topic routed with Forwarder.add_route
MessageCallback = Callable[[str, bytes, bool], None]


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
        cipher: Cipher | None = None,
    ) -> None:
        """cipher: encrypt the queued bodies at rest (gateway/atrest.py; one for the store thread)."""
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
            cipher=cipher,
        )
        self._lock = threading.Lock()
        self._committed = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stop = threading.Event()
        # Records not committed yet: of the urgent lanes (committed at once, on their own) and the
        # others (committed in groups, see commit_policy.py); each in submission order.
        self._buffer: deque[Pending] = deque()
        self._urgent_buffer: deque[Pending] = deque()
        self._buffer_bytes = 0  # sum of len(body) + ROW_OVERHEAD over _buffer
        self._urgent_lanes = frozenset(LANE_INDEX[name] for name in config.urgent_lanes)
        self._flush_all = False  # commit everything buffered at once (flush(), loss reports, stop)
        self._accepted_total = 0  # records accepted into the buffer
        self._settled_total = 0  # records committed (or counted lost) out of the buffer
        # Tickets of submit(): every ticket <= _settled_ticket is committed or counted lost.
        self._last_ticket = 0
        self._settled_ticket = 0
        # Sorted [first, last] ranges of tickets above _settled_ticket that are committed (an urgent
        # record overtakes the group before it) or were lost before a commit.
        self._done_ahead: list[list[int]] = []
        self._acks: deque[int] = deque()
        self._ack_batch = max(1, min(16, config.max_inflight // 4))
        self._store_thread: threading.Thread | None = None
        self._net_thread: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._tls_context: ssl.SSLContext | None = None  # made by start() for a TPM-held key
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
        self._stat_commits: dict[str, float] = {}
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
        # Sparkplug B (payload_format = "sparkplug"): the edge node session; a host's rebirth request
        # (NCMD) is flagged here by the network thread for the store thread, which publishes.
        self._sparkplug: SparkplugSession | None = None
        self._rebirth_requested = False
        # Other topics of the cloud link (signed bundles: gateway/updates/delivery.py): routes (filter ->
        # callback, called on the network thread; it must not block) and the filters subscribed on
        # every connect (filter -> qos).
        self._routes: dict[str, MessageCallback] = {}
        self._extra_subs: dict[str, int] = {}
        if config.payload_format == "sparkplug":
            from gateway.forward.sparkplug_session import SparkplugSession

            self._sparkplug = SparkplugSession(
                config.sparkplug_group, gateway_id, self.db_path.parent / "sparkplug.json"
            )

    # -- public API ------------------------------------------------------------------------
    def start(self) -> None:
        """Open (and if needed recover) the queue, then start the store and network threads.

        Raises :class:`ForwardConfigError` (nothing started) when the password file or the TLS
        private key is readable by others than the owner, or a TPM-held key is not usable."""
        if self._started:
            raise RuntimeError("Forwarder.start() called twice")
        check_private_files(self.config)
        tls = self.config.tls
        if tls is not None and tls.tpm_tcti is not None:  # the key in a TPM: the TPM is checked here
            from gateway.forward.tpm_tls import tpm_client_context

            self._tls_context = tpm_client_context(tls)
        self.recovery = self._queue.open()
        if self._sparkplug is not None:
            self._sparkplug.epoch = self._queue.epoch
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
            urgent = index in self._urgent_lanes
            wake = urgent or not self._buffer
            if len(self._buffer) + len(self._urgent_buffer) >= self.config.memory_buffer_max:
                self._stat_overflow[index] += 1
                self._flush_all = wake = True
                self._ticket_done(ticket)
            else:
                item = Pending(index, created, body, level, ticket)
                if urgent:
                    self._urgent_buffer.append(item)
                else:
                    self._buffer.append(item)
                    self._buffer_bytes += len(body) + ROW_OVERHEAD
                self._accepted_total += 1
                self._stat_submitted[index] += 1
        if wake:
            self._wake.set()
        return ticket

    def committed(self, ticket: int) -> bool:
        """True once the record of ``ticket`` (from :meth:`submit`) is committed to the queue file,
        so it survives a crash or kill -9 of the process (a power cut may still take the last
        commits: synchronous=NORMAL), or once it was counted lost before it could be committed
        (memory buffer full, or larger than the budget allows: see ``status()["losses"]``).
        Tickets are settled in order: ``committed(t)`` implies ``committed(s)`` for every s < t (an
        alert committed ahead of the summaries submitted before it reads as committed once they are)."""
        with self._lock:
            return ticket <= self._settled_ticket

    def _ticket_done(self, ticket: int) -> None:
        """Lock held: the record of ``ticket`` is committed, or will never be (counted lost)."""
        if ticket <= self._settled_ticket + 1:  # in order: the common case
            self._settle_tickets(ticket)
            return
        lost = self._done_ahead
        i = bisect.bisect_left(lost, [ticket, ticket])
        if i > 0 and lost[i - 1][1] == ticket - 1:
            i -= 1
            lost[i][1] = ticket
        else:
            lost.insert(i, [ticket, ticket])
        if i + 1 < len(lost) and lost[i + 1][0] == ticket + 1:
            lost[i][1] = lost.pop(i + 1)[1]
        self._settle_tickets(self._settled_ticket)

    def _requeue(self, items: list[Pending]) -> None:
        """Lock held: ``items`` (taken by a commit that failed) go back to the front of their buffers."""
        for item in reversed(items):
            if item.lane in self._urgent_lanes:
                self._urgent_buffer.appendleft(item)
            else:
                self._buffer.appendleft(item)
                self._buffer_bytes += len(item.body) + ROW_OVERHEAD

    def _settle_tickets(self, through: int) -> None:
        """Lock held: every ticket <= ``through`` is settled; so are the ones done ahead right after."""
        self._settled_ticket = max(self._settled_ticket, through)
        lost = self._done_ahead
        while lost and lost[0][0] <= self._settled_ticket + 1:
            self._settled_ticket = max(self._settled_ticket, lost.pop(0)[1])

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is committed to the queue file (or counted lost)."""
        deadline = time.monotonic() + timeout
        with self._committed:
            # Every record submitted so far (by ticket), and as many records as were accepted by
            # now (internal reports included, which jump ahead of submitted records).
            target, ticket = self._accepted_total, self._last_ticket
            self._flush_all = True
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
                if (
                    not self._buffer
                    and not self._urgent_buffer
                    and sum(self._stat_depth) == 0
                    and self._settled_total == self._accepted_total
                ):
                    return True
            self._wake.set()
            time.sleep(0.02)
        return False

    def status(self) -> dict[str, Any]:
        """Per-lane depth, oldest record age, drain rate, losses/compactions, connection state."""
        now = time.time()
        with self._lock:
            buffered = [0] * len(LANES)
            for item in (*self._urgent_buffer, *self._buffer):
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
                "losses": {
                    k: v
                    for k, v in sorted(self._counters.items())
                    if k.startswith(("dropped.", "lost.", "unreadable."))
                },
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
                "commits": dict(self._stat_commits),
                "last_write_error": self._last_write_error,
                "commands": {
                    "received": self._commands_received,
                    "rejected": self._commands_rejected,
                    "last_error": self._last_command_error,
                },
                "recovery": None if self.recovery is None else self.recovery.as_dict(),
                "sparkplug": None if self._sparkplug is None else self._sparkplug.status(),
                "encryption": self._encryption_status(),
            }

    def _encryption_status(self) -> dict[str, Any] | None:
        cipher = self._queue.cipher
        if cipher is None:
            return None
        unreadable = sum(v for k, v in self._counters.items() if k.startswith("unreadable."))
        return {"key": key_name(cipher.key_id or cipher.ring.active_id), "unreadable": unreadable}

    # -- store thread ----------------------------------------------------------------------
    def _store_main(self) -> None:
        try:
            StoreLoop(self).run()
        except Exception:  # pragma: no cover - last resort: say why the forwarder stopped forwarding
            log.exception("forward store thread died")
            with self._lock:
                self._last_write_error = "store thread died; see the log"

    # -- network thread --------------------------------------------------------------------
    def _tpm_failure(self) -> str:
        """Why the TPM did not sign the handshake, when it did not (the SSL error says only "EVP lib")."""
        if self._tls_context is None:
            return ""
        from gateway.tls_external_key import take_failure

        failure = take_failure(self._tls_context)
        return "" if failure is None else f" (the TPM-held client key: {failure})"

    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        client_id = cfg.client_id or f"edgeline-fwd-{self.gateway_id}"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            # Sparkplug: every client's session is clean (the births set up the state anew)
            clean_session=not cfg.persistent_session or self._sparkplug is not None,
            protocol=mqtt.MQTTv311,
        )
        if self._sparkplug is not None:  # the NDEATH with this connection's bdSeq
            client.will_set(*self._sparkplug.will(), qos=1, retain=False)
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
        if self._tls_context is not None:
            client.tls_set_context(self._tls_context)
        elif cfg.tls is not None:
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
        attempted = False
        try:
            while not self._stop.is_set():
                self._set_conn_state("connecting")
                self._refused = False
                if self._sparkplug is not None and attempted:
                    # Sparkplug: each connection is a client of its own, with the next bdSeq in its will
                    # and nothing carried over (the store thread sends the unacknowledged records again,
                    # after the births, with this session's seq and aliases).
                    client = self._replace_client(client)
                    first = True
                attempted = True
                try:
                    if first:
                        client.connect(cfg.host, cfg.port, cfg.keepalive_s)
                        first = False
                    else:
                        client.reconnect()
                except (OSError, ssl.SSLError, ValueError) as exc:
                    _close_sockets_in_traceback(exc)
                    first = first and isinstance(exc, ValueError)
                    self._set_conn_state("disconnected", f"{type(exc).__name__}: {exc}{self._tpm_failure()}")
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
                    if self._sparkplug is not None and client.is_connected():
                        # A clean stop says so: the DISCONNECT makes the broker drop the will.  QoS 0
                        # goes out at once, ahead of records still waiting for the in-flight window.
                        client.publish(*self._sparkplug.death(), qos=0)
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

    def _replace_client(self, old: mqtt.Client) -> mqtt.Client:
        """Sparkplug: a new client for the next connection; the old one's socket is closed without a
        DISCONNECT (the broker sends its will if it has not yet)."""
        sock = old.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        client = self._make_client()
        with self._lock:
            self._client = client
        return client

    def _wake_network(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        """paho: a packet is queued (e.g. by publish() on the store thread); the network thread
        writes it.  Only the network thread ever touches the socket (a TLS stream must not be
        written and read from two threads at once)."""
        if self._wake_w is not None:
            with contextlib.suppress(BlockingIOError, OSError):
                self._wake_w.send(b"w")

    def add_route(self, topic_filter: str, callback: MessageCallback) -> None:
        """Messages of the cloud link on ``topic_filter`` go to ``callback(topic, payload, retained)``
        on the network thread (subscribe with :meth:`subscribe`)."""
        with self._lock:
            self._routes[topic_filter] = callback

    def subscribe(self, topic_filters: Sequence[str], qos: int = 1) -> None:
        """Subscribe to more filters of the cloud link (one SUBSCRIBE), now if connected and again on
        every connect."""
        with self._lock:
            self._extra_subs.update(dict.fromkeys(topic_filters, qos))
            client = self._client if self._connected else None
        if client is not None and topic_filters:  # else _on_connect subscribes them
            client.subscribe([(f, qos) for f in topic_filters])

    def unsubscribe(self, topic_filters: Sequence[str], *, send: bool = True) -> None:
        """Subscribe to these no more on a connect; ``send``: also UNSUBSCRIBE now (one packet).
        Without it the broker may keep a persistent session's subscription until a later call."""
        with self._lock:
            for f in topic_filters:
                self._extra_subs.pop(f, None)
            client = self._client if self._connected else None
        if send and client is not None and topic_filters:
            client.unsubscribe(list(topic_filters))

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            self._refused = True
            self._set_conn_state("refused", f"broker refused the connection: {reason}")
            return
        client.subscribe(command_topic_filter(self.config.topic_prefix, self.gateway_id), qos=1)
        if self._sparkplug is not None:  # rebirth requests; the store thread sends the births
            client.subscribe(self._sparkplug.ncmd_topic(), qos=1)
        with self._lock:  # one step with the snapshot: add_subscription() then sees _connected
            self._connected = True
            self._connects += 1
            extra = list(self._extra_subs.items())
        if extra:
            client.subscribe(extra)
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
        if self._routes and self._on_extra(message):
            return
        if self._sparkplug is not None and message.topic == self._sparkplug.ncmd_topic():
            self._on_ncmd(message)
            return
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

    def _on_extra(self, message: mqtt.MQTTMessage) -> bool:
        """A message on an added route, handed to its callback: True if it was one."""
        with self._lock:
            routes = list(self._routes.items())
        for topic_filter, callback in routes:
            if mqtt.topic_matches_sub(topic_filter, message.topic):
                try:
                    callback(message.topic, bytes(message.payload), bool(message.retain))
                except Exception:  # the callback is the gateway's code: log, keep the link
                    log.exception("cloud link: the handler of %s failed", topic_filter)
                return True
        return False

    def _on_ncmd(self, message: mqtt.MQTTMessage) -> None:
        """Sparkplug NCMD: ``Node Control/Rebirth`` = true makes the store thread send the births again."""
        from gateway.forward.sparkplug import rebirth_requested

        try:
            rebirth = rebirth_requested(bytes(message.payload))
        except ValueError as exc:
            self._reject_command(message.topic, str(exc))
            return
        if not rebirth:
            self._reject_command(message.topic, "only 'Node Control/Rebirth' = true is supported")
            return
        log.info("sparkplug: rebirth requested by a host")
        with self._lock:
            self._commands_received += 1
            self._rebirth_requested = True
        self._wake.set()

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
