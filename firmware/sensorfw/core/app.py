# The firmware application: wires sensors, rings, batcher, queue and link, and
# runs the main loop. Hardware comes in through a `board` object (port/board.py on
# real ports, boards/sim.py on the unix port); nothing here imports hardware.
# About 520 lines: __init__ preallocates every buffer before capture starts (a quarter of
# the file), and the loop's steps share that state; the parts with their own job (ring,
# batcher, queue, link, sampler) are modules of their own.

import gc

from sensorfw import unload
from sensorfw.core.batcher import EVENT_BUF_SIZE, Batcher
from sensorfw.core.data_encoder import RingDataEncoder
from sensorfw.core.link import Link
from sensorfw.core.offline_queue import OfflineQueue
from sensorfw.core.ring import EventRing, SampleRing
from sensorfw.core.sampler import Sampler
from sensorfw.core.seqlease import SeqLease
from shared_protocol import ACK, ST_INT16
from shared_protocol.encode import encode_birth, encode_death, encode_health, schema_id
from shared_protocol.gw_decode import parse as parse_inbound

FW_VERSION = "sensorfw 0.1.0"
DEBUG = False


def log(msg):
    print("[sensorfw] " + msg)


def build_sensors(board, cfg):
    """Driver objects for cfg["sensors"], in DATA channel order."""
    readers = []
    for s in cfg["sensors"]:
        t = s["type"]
        if t == "mpu6050":
            from sensorfw.drivers.mpu6050 import MPU6050

            i2c = board.make_i2c(s["i2c"]["id"], s["i2c"]["scl"], s["i2c"]["sda"], s["i2c"]["freq"])
            d = MPU6050(
                i2c, s["addr"], s["name"], s["accel_range_g"], s["gyro_range_dps"], s["dlpf"], board.clock.sleep_ms
            )
            d.init(cfg["sample"]["rate_hz"])
        elif t == "analog":
            from sensorfw.drivers.analog import AnalogChannel

            d = AnalogChannel(board.make_adc(s["pin"]), s["name"], s["unit"], s["scale"], s["offset"])
        else:
            from sensorfw.drivers.pulse import PulseInput

            pin = board.make_pin_in(s["pin"], s["pull"], s)
            d = PulseInput(pin, s["name"], board.clock, s["mode"], s["debounce_ms"], s["unit"])
            d.edge = s["edge"]
        readers.append(d)
    return readers


class App:
    def __init__(self, board, cfg, reserve=None, ota=None):
        self.board = board
        # keep only what is used after start-up: the config dict costs RAM
        self.device_id = cfg["device_id"]
        self.watchdog_ms = cfg["watchdog_ms"]
        self.wifi_timeout_ms = cfg["wifi"]["connect_timeout_ms"]
        self.burst_rate_hz = cfg["sample"]["burst_rate_hz"]
        clock = board.clock
        self.clock = clock
        from sensorfw.core import state

        self.boot, self.seq, self.woke, ends = state.restore(board, board.flash_dir)
        del state
        unload("sensorfw.core.state")
        # firmware updates (A/B slots): the version BIRTH reports, the trial to confirm
        self.fw_version = FW_VERSION
        # slot: the one running ("" = the flash root); trial: confirmed once the gateway ACKs
        # a DATA frame of this boot, trial_seq (the first one's seq), else restarted at
        # trial_until (ticks, config ota_trial_s); ota_note: (result,
        # transfer) of a rollback to report after connecting; ota_rx: the OTA receiver
        # (core/ota.py), made when the first CMD_OTA arrives
        self.slot, self.trial, self.trial_seq, self.trial_until = "", False, -1, 0
        self.ota_note, self.ota_rx = None, None
        if ota is not None:
            from sensorfw.core.ota_boot import setup

            setup(self, ota[0], ota[1], ota[2], cfg["ota_trial_s"])
            del setup
            unload("sensorfw.core.ota_boot")
        gc.collect()  # free the boot-only module before the drivers load (boot fragments the heap)
        sc = cfg["sample"]
        self.readers = build_sensors(board, cfg)
        width = 0
        for r in self.readers:
            width += r.width
        self.rate_hz = sc["rate_hz"]
        self.base_rate_hz = sc["rate_hz"]
        # the MQTT code (umqtt) loads now, with the rest of the code, before the large
        # buffers: module code needs contiguous runs that a heap full of buffers lacks
        bc = cfg["broker"]
        # with broker.tls, the TLS context (device key, certificate, CA) is made here too
        self.transport = board.transport(
            self.device_id,
            bc["host"],
            bc["port"],
            bc["user"],
            bc["password"],
            bc["keepalive_s"],
            bc["timeout_ms"],
            bc["tls"],
        )
        # Every frame that takes a sequence number goes through the queue, BIRTH included:
        # a slot holds the largest of DATA, EVENT and BIRTH (its size depends on the
        # channel table only, not on the rate). Measured in a scratch buffer, freed with
        # the rest of the start-up garbage before the large buffers are allocated.
        channels = self._channels()
        birth_size = encode_birth(bytearray(64 + 76 * width), 0, 0, 0, self.fw_version, channels)
        sid = schema_id(channels)
        channels = None
        # The large buffers, one after the other, in the contiguous run main.py kept for
        # them before the modules loaded (main.reserve_for_buffers)
        if reserve:
            reserve.clear()
        gc.collect()
        self.encoder = RingDataEncoder(width, sc["max_batch"], ST_INT16, sid)
        qc = cfg["queue"]
        self.queue = OfflineQueue(
            board.flash_dir + "/" + qc["dir"],
            qc["ram_frames"],
            qc["flash_frames"],
            max(len(self.encoder.buf), EVENT_BUF_SIZE, birth_size),
            qc["block_bytes"],
            qc["segment_blocks"],
        )
        self.ring = SampleRing(sc["ring_rows"], width)
        self.events = EventRing(sc["event_ring"])
        self.sampler = Sampler(self.ring, self.readers, clock, self.rate_hz)
        self.batcher = Batcher(self.ring, self.events, self.encoder, sc["batch"], self.sampler, self, sc["delta"])
        self.lease = SeqLease(board.flash_dir + "/seq.dat", self.boot, qc["seq_lease"])
        self.boot_ends = ends  # how earlier boots ended, for CMD_RESEND answers
        # BIRTH: header + fw version + per channel (name, unit, 25 bytes); HEALTH: 48
        self.out_buf = bytearray(64 + 76 * width)
        self.out_mv = memoryview(self.out_buf)
        self.will_buf = bytearray(17)
        prefix, site, dev = cfg["topic_prefix"], cfg["site"], cfg["device_id"]
        from shared_protocol.topics import topic  # only needed here: unloaded below

        self.t_birth = topic(prefix, site, dev, "birth").encode()
        self.t_data = topic(prefix, site, dev, "data").encode()
        self.t_event = topic(prefix, site, dev, "event").encode()
        self.t_health = topic(prefix, site, dev, "health").encode()
        self.t_death = topic(prefix, site, dev, "death").encode()
        self.t_ack = topic(prefix, site, dev, "ack").encode()
        self.t_cmd = topic(prefix, site, dev, "cmd").encode()
        self.t_loss = topic(prefix, site, dev, "loss").encode()
        del topic
        unload("shared_protocol.topics")
        self.transport.on_message = self._on_message
        self.link = Link(self.transport, board.net, clock, cfg["backoff"]["min_ms"], cfg["backoff"]["max_ms"])
        self.link.log = log
        self.outputs = [board.make_pin_out(o["pin"]) for o in cfg["outputs"]]
        self._out_active_high = [o["active_high"] for o in cfg["outputs"]]
        self._out_until = [None] * len(self.outputs)
        for i in range(len(self.outputs)):
            self._set_output(i, 0)
        # timers and counters
        self.publish_per_loop = qc["publish_per_loop"]
        self.ack_timeout_ms = qc["ack_timeout_s"] * 1000
        self.health_ms = cfg["health_s"] * 1000
        self.keepalive_ms = bc["keepalive_s"] * 1000
        now = clock.ticks_ms()
        self.t0 = now
        self.next_health = now
        self.last_tx = now
        self.last_ack = now  # when the oldest frame in flight last changed (or an ACK came)
        self.ack_head = None  # (boot, seq) of the oldest frame in flight at that time
        self.burst_until = None
        self.latency_max = 0
        self.published = 0
        self.acks = 0
        self.bad_frames = 0
        self.commands = 0
        self.inbox = []
        self.inbox_dropped = 0
        self.recent_cmds = [-1] * 8
        self.births = 0
        self.config_changes = 0  # configuration changes acknowledged (core/config_change.py)
        self.loss_reported = 0  # frames reported in LOSS frames (answers to CMD_RESEND)
        self.resend_requests = 0
        self.min_free = -1
        self.timer = None
        self.wdt = None
        self.running = True
        self.sleep_cfg = cfg["sleep"]

    # ------------------------------------------------------------------ channels
    def _channels(self):
        out = []
        for r in self.readers:
            out.extend(r.channels(self.rate_hz, ST_INT16))
        return out

    # ------------------------------------------------------------------ frame sink (Batcher)
    def next_seq(self):
        s = self.seq
        if s >= self.lease.bound:
            self.lease.reserve(s)  # one small flash write every queue.seq_lease frames
        self.seq = (s + 1) & 0xFFFFFFFF
        return s

    def put_frame(self, ftype, frame, n):
        if self.trial and self.trial_seq < 0 and ftype == 2:
            self.trial_seq = (self.seq - 1) & 0xFFFFFFFF  # the DATA frame whose ACK confirms
        q = self.queue
        live = self.link.state == 1 and q.cursor >= q.f_count + q.r_count
        q.push(frame, n, live)

    # ------------------------------------------------------------------ start / stop
    def start(self):
        board = self.board
        ch = 0
        for r in self.readers:
            if hasattr(r, "attach"):
                r.attach(self.events, ch)
                board.attach_irq(r.pin, r.irq_ref, r.edge)
            ch += r.width
        self.timer = board.make_timer()
        self.sampler.restart()
        self._arm_timer()
        if self.watchdog_ms:
            self.wdt = board.make_wdt(self.watchdog_ms)
            # fed before every blocking socket call too: a connect is several of them
            self.transport.feed = self.wdt.feed
        log(
            "boot %d seq %d (%s) device %s, %d channels at %s Hz"
            % (
                self.boot,
                self.seq,
                "wake" if self.woke else "reset",
                self.device_id,
                self.ring.width,
                self.rate_hz,
            )
        )

    def _arm_timer(self):
        # the sample rate, or with an MPU-6050 the rate its FIFO is drained at
        self.board.start_timer(self.timer, self.sampler.timer_hz, self.sampler.irq_ref)

    def set_rate(self, rate_hz):
        self.batcher.drain(True)
        self.sampler.set_rate(rate_hz)
        self.rate_hz = rate_hz
        self.encoder.schema_id = schema_id(self._channels())
        self._arm_timer()
        self.rebirth()

    # ------------------------------------------------------------------ link
    def _open_session(self):
        n = encode_death(self.will_buf, self.boot, self.seq, self.clock.ticks_ms())
        self.transport.connect(self.t_death, bytes(self.will_buf[:n]), (self.t_ack, self.t_cmd))
        # If the last session of this boot died, the broker published its will (DEATH, retained)
        # and it is still retained. Clear it (zero-length retained) before anything else: a
        # retained DEATH then always means "down", whatever BIRTH is retained (docs/protocol.md).
        self.transport.publish(self.t_death, b"", True)
        self.queue.rewind()  # everything not ACKed goes out again, flagged historical
        self.publish_birth(True)
        if self.ota_note is not None:  # a rolled-back update: tell the gateway once
            from sensorfw.core.ota_boot import report

            report(self)

    def publish_birth(self, opening=False):
        """Queue a BIRTH. Like every frame that takes a sequence number it goes out in
        sequence order: after a reconnect, behind the unACKed frames sent again, so the
        gateway never sees it ahead of older DATA (which would make that DATA late)."""
        n = encode_birth(
            self.out_buf, self.boot, self.next_seq(), self.clock.ticks_ms(), self.fw_version, self._channels()
        )
        self.queue_frame(self.out_buf, n, opening)
        self.births += 1

    def queue_frame(self, buf, n, opening=False):
        """Queue a frame made outside the batcher (BIRTH, a config acknowledgement): sent
        at once when the link is up and nothing older waits, else in its turn."""
        q = self.queue
        q.push(buf, n, (opening or self.link.state == 1) and q.cursor >= q.f_count + q.r_count)

    def rebirth(self):
        self.publish_birth()

    def publish_health(self):
        now = self.clock.ticks_ms()
        q = self.queue
        gc.collect()  # free_heap then reports live data, not garbage
        free = gc.mem_free()
        if self.min_free < 0 or free < self.min_free:
            self.min_free = free
        n = encode_health(
            self.out_buf,
            self.boot,
            self.next_seq(),
            now,
            0,
            self.clock.ticks_diff(now, self.t0) // 1000,
            free,
            self.board.net.rssi(),
            0,
            q.depth(),
            q.dropped,
            self.sampler.overruns() + self.events.overruns,
            self.latency_max,
            self.sampler.jitter_max,
        )
        # HEALTH shares the sequence with DATA and EVENT, so it goes through the offline queue
        # like them: a HEALTH whose publish fails is sent again later instead of leaving a gap
        # that the gateway could not tell from a lost DATA frame.
        self.queue.push(self.out_buf, n, True)
        self.sampler.jitter_max = 0
        self.latency_max = 0
        self.last_tx = now

    def _pump(self):
        """Publish queued frames (oldest first), a bounded number per loop."""
        q = self.queue
        budget = self.publish_per_loop
        tr = self.transport
        while budget:
            mv = q.next_frame()
            if mv is None:
                return
            kind = mv[1]
            if kind == 2:
                tr.publish(self.t_data, mv)
            elif kind == 1:
                # retained: a (re)starting gateway gets the schema at once (docs/protocol.md);
                # the queue sends BIRTHs in order, so the last one retained is the newest
                tr.publish(self.t_birth, mv, True)
            elif kind == 4:
                # retained while live: the broker keeps the latest status for new subscribers
                tr.publish(self.t_health, mv, not (mv[2] & 1))
            else:
                tr.publish(self.t_event, mv)
            q.sent()
            self.published += 1
            if q.in_flight_hint == 0:
                # the first frame in flight: the ACK timeout runs from now
                self.last_ack = self.clock.ticks_ms()
                self.ack_head = None
            q.in_flight_hint += 1
            budget -= 1
        self.last_tx = self.clock.ticks_ms()

    def service_link(self):
        link = self.link
        if not link.try_connect(self._open_session):
            return
        now = self.clock.ticks_ms()
        try:
            self.transport.poll()
            self._process_inbox()
            self._pump()
            self._process_inbox()
            if self.clock.ticks_diff(now, self.next_health) >= 0:
                self.next_health = self.clock.ticks_add(now, self.health_ms)
                self.publish_health()
            if self.clock.ticks_diff(now, self.last_tx) > self.keepalive_ms // 2:
                self.transport.ping()
                self.last_tx = now
        except OSError as e:
            link.lost(e)
            return
        q = self.queue
        if q.in_flight_hint and self.clock.ticks_diff(now, self.last_ack) > self.ack_timeout_ms:
            # the oldest frame in flight waited too long for its ACK: send everything
            # unACKed again (historical)
            q.rewind()
            q.in_flight_hint = 0
            self.last_ack = now
            self.ack_head = None

    # ------------------------------------------------------------------ incoming
    def _on_message(self, topic_b, msg):
        # Called from inside umqtt (also while a QoS 1 publish waits for its PUBACK):
        # only queue the frame here; _process_inbox() acts on it between publishes.
        if len(self.inbox) < 32:
            self.inbox.append(msg)
        else:
            self.inbox_dropped += 1  # the gateway repeats ACKs; a lost CMD is re-sent

    def _process_inbox(self):
        while self.inbox:
            msg = self.inbox.pop(0)
            try:
                ftype, payload = parse_inbound(msg)
            except ValueError as e:  # ProtocolError subclasses ValueError
                self.bad_frames += 1
                log("rejected frame: %s" % e)
                continue
            if ftype == ACK:
                q = self.queue
                for b, first, last in payload:
                    q.ack(b, first, last)
                    if self.trial_seq >= 0 and b == self.boot and first <= self.trial_seq <= last:
                        self._confirm()
                q.in_flight_hint = q.in_flight()
                self.acks += 1
                # The ACK timeout measures how long the oldest frame in flight has waited:
                # ACKs of newer frames must not reset it, or a frame lost on the way would
                # never be sent again while the device keeps publishing (the gateway also
                # asks for it with CMD_RESEND; this is the fallback when it cannot).
                head = q.in_flight_head()
                if head != self.ack_head:
                    self.ack_head = head
                    self.last_ack = self.clock.ticks_ms()
                continue
            cmd_id = payload[0]
            if cmd_id in self.recent_cmds:
                continue  # QoS 1 may deliver a CMD twice: execute each cmd_id once
            self.recent_cmds[self.commands % 8] = cmd_id
            self.commands += 1
            self.command(cmd_id, payload[1], payload[2])

    def _confirm(self):
        """The trial firmware's data reached the gateway: it stays (core/ota_boot.py)."""
        from sensorfw.core.ota_boot import confirm

        confirm(self)

    def command(self, cmd_id, op, arg):
        """Run one gateway command (code loaded only when a command arrives)."""
        from sensorfw.core.commands import run

        run(self, cmd_id, op, arg)

    def publish_loss(self, frame, n):
        """Publish a LOSS frame (not queued: it is idempotent, the gateway asks again)."""
        self.transport.publish(self.t_loss, memoryview(frame)[:n])
        self.last_tx = self.clock.ticks_ms()

    def _set_output(self, i, value):
        on = bool(value)
        if not self._out_active_high[i]:
            on = not on
        self.outputs[i].value(1 if on else 0)

    def _timers(self):
        now = self.clock.ticks_ms()
        for i in range(len(self._out_until)):
            u = self._out_until[i]
            if u is not None and self.clock.ticks_diff(now, u) >= 0:
                self._set_output(i, 0)
                self._out_until[i] = None
        if self.burst_until is not None and self.clock.ticks_diff(now, self.burst_until) >= 0:
            self.burst_until = None
            self.set_rate(self.base_rate_hz)

    # ------------------------------------------------------------------ main loop
    def step(self):
        clock = self.clock
        t0 = clock.ticks_us()
        self.board.poll()
        if self.wdt is not None:
            self.wdt.feed()
        self.batcher.drain()
        self.batcher.drain_events()
        self.service_link()
        if self._out_until or self.burst_until is not None:
            self._timers()
        if self.trial and clock.ticks_diff(clock.ticks_ms(), self.trial_until) >= 0:
            from sensorfw.core.ota_boot import expire

            expire(self)
        d = clock.ticks_diff(clock.ticks_us(), t0)
        self.latency_max = max(self.latency_max, d)

    def run(self):
        self.start()
        board = self.board
        if self.sleep_cfg["enabled"]:
            return self.run_sleep_cycle()
        while self.running:
            self.step()
            if board.should_stop(self):
                break
            board.idle(self)
        self.finish()

    def run_sleep_cycle(self):
        """Deep-sleep mode: capture awake_samples, publish or queue, sleep."""
        from sensorfw.core.lifecycle import run_sleep_cycle

        run_sleep_cycle(self)

    def shutdown(self):
        """Stop capture, keep every unACKed frame on flash, record the exact end of
        this boot's numbering (seq.dat)."""
        self.stop_capture()
        self.batcher.drain(True)
        self.batcher.drain_events()
        self.queue.sync()
        self.lease.close(self.seq)

    def stop_capture(self):
        """Stop the timer and take what the sensor's FIFO still holds."""
        if self.timer is not None:
            self.board.stop_timer(self.timer)
            self.timer = None
            if self.sampler.fifo is not None:
                self.sampler.on_drain()

    def finish(self):
        """End of a bounded (simulated) run: drain what the link allows, then sync."""
        from sensorfw.core.lifecycle import finish

        finish(self)

    def stats(self):
        from sensorfw.core.lifecycle import stats

        return stats(self)
