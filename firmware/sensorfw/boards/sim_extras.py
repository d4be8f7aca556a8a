# Parts of the simulation board loaded only when used (RAM is scarce in the
# 64 KB runs): recorded-file replay, the watchdog, end-of-run drain and report.

import os
import sys
import time


class LazySSL:
    """sys.modules["ssl"] until the firmware uses it (broker.tls): the port's ssl is made
    then (boards/sim_ssl.py), so a plain-TCP run does not pay for its code."""

    __name__ = "ssl"

    def __init__(self, port, board):
        self._port = port
        self._board = board
        self._m = None

    def __getattr__(self, name):
        m = self._m
        if m is None:
            from sensorfw.boards.sim_ssl import make_ssl_module

            m = self._m = make_ssl_module(self._port, self._board)
        return getattr(m, name)


def install_ssl(port, board):
    sys.modules["ssl"] = LazySSL(port, board)


class Replay:
    """Rows of 6 ints from a text file, looping at the end."""

    def __init__(self, path):
        self.path = path
        self.f = open(path)  # noqa: SIM115 - kept open: rows are read as the clock ticks

    def next_row(self, out):
        for _ in range(2):
            line = self.f.readline()
            while line and (not line.strip() or line[0] == "#"):
                line = self.f.readline()
            if line:
                parts = line.replace(",", " ").split()
                for i in range(6):
                    out[i] = int(parts[i])
                return
            self.f.close()
            self.f = open(self.path)  # noqa: SIM115 - reopened at the end: the replay loops
        raise ValueError("replay file %s has no data rows" % self.path)


def watch_thread(wdt):
    """machine.WDT's reset: end the process (kill -9) when not fed for timeout real ms."""
    import _thread

    def watch():
        while True:
            time.sleep_ms(100)
            if time.ticks_diff(time.ticks_ms(), wdt.fed) > wdt.timeout:
                print("[sim] watchdog expired: not fed for %d ms, resetting" % wdt.timeout)
                os.system("kill -9 $PPID")
                return

    _thread.start_new_thread(watch, ())


def drain(board, app):
    """At the end of a bounded run: keep the link serviced until the queue is
    empty or EDGELINE_SIM_DRAIN_S real seconds passed."""
    if board.drain_s <= 0:
        return
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < board.drain_s * 1000:
        board.poll()  # still the main loop: pending callbacks run
        app.service_link()
        if app.queue.depth() == 0 and app.link.up():
            break
        time.sleep_ms(5)


def report(board, app):
    """SIM-STATS at the end of a run. The run is over, so when the heap is too small for
    the report (a heap-limit run), the firmware's sample buffers make room for it: the
    minimum heap found by bisection is the firmware's, not this instrumentation's. The
    JSON goes out field by field: no contiguous block the size of the whole report is
    needed in a fragmented heap."""
    import sys

    try:
        st = _stats(board, app)
    except MemoryError:
        _free_buffers(app)
        st = _stats(board, app)
    _dump(st, sys.stdout.write, "SIM-STATS ", "\n")
    if board.stats_path:
        with open(board.stats_path, "w") as f:
            _dump(st, f.write, "", "")


def _free_buffers(app):
    import gc

    ring = app.ring
    ring.vals = ring.ticks = ring.gap = None
    app.batcher._views = app.out_buf = app.out_mv = None
    gc.collect()


def _dump(st, write, head, tail):
    import json

    write(head)
    sep = "{"
    for k in st:
        write(sep)
        write(json.dumps(k))
        write(":")
        write(json.dumps(st[k]))
        sep = ","
    write("}" + tail)


def _stats(board, app):
    st = app.stats()
    try:
        import micropython

        st["mem_peak"] = getattr(micropython, "mem_peak")()  # unix port only
    except (ImportError, AttributeError):
        pass
    fields = getattr(board, "report_fields", None)
    if fields is not None:
        fields(st)  # the CircuitPython simulation board's own
    else:
        _machine_fields(board, st)
    return st


def _machine_fields(board, st):
    """What the firmware cannot see on the MicroPython simulation: the port's scheduler,
    the pins, the sensor's own counts."""
    st["outputs"] = [[p.id, p.level, p.history] for p in board.outputs]
    st["board"] = board.profile.NAME
    st["sched_dropped"] = board.sched.dropped
    st["sched_peak"] = board.sched.peak
    st["sched_calls"] = board.sched.calls
    st["callback_late_max_us"] = board.late_max_us
    st["sockopt_warnings"] = board.sockopt_warnings
    st["nodelay"] = board.nodelay
    if board.rtc_datetime != board.rtc_start:
        st["rtc"] = list(board.rtc_datetime)  # set by the firmware (port/tls.py clock_floor)
    st["imu"] = [d.stats() for d in board.imus]
    st["sim_time_s"] = board.sclock.now_us() / 1e6


def parse_windows(text):
    out = []
    if text:
        for part in text.split(","):
            a, b = part.split("-")
            out.append((float(a), float(b)))
    return out


def parse_blocks(text):
    """ "12:1500,30:800" -> [(t_us, ms)]: the main loop blocks at t s for ms."""
    out = []
    if text:
        for part in text.split(","):
            t, ms = part.split(":")
            out.append((float(t) * 1000000, int(ms)))
    out.sort()
    return out


def parse_faults(text):
    out = []
    if text:
        for part in text.split(","):
            kind, rest = part.split("@")
            sev = 1.0
            if ":" in rest:
                rest, s = rest.split(":")
                sev = float(s)
            out.append((float(rest) * 1000000, kind.strip(), sev))
    out.sort()
    return out
