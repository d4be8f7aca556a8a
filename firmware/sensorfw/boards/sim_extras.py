# Parts of the simulation board loaded only when used (RAM is scarce in the
# 64 KB runs): recorded-file replay, the watchdog, end-of-run drain and report.

import os
import time


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


class SimWDT:
    """machine.WDT: ends the process (kill -9) when not fed within timeout (real ms)."""

    def __init__(self, board, timeout_ms):
        import _thread

        self.timeout = timeout_ms
        self.fed = time.ticks_ms()
        _thread.start_new_thread(self._watch, ())

    def feed(self):
        self.fed = time.ticks_ms()

    def _watch(self):
        while True:
            time.sleep_ms(100)
            if time.ticks_diff(time.ticks_ms(), self.fed) > self.timeout:
                print("[sim] watchdog expired: not fed for %d ms, resetting" % self.timeout)
                os.system("kill -9 $PPID")
                return


def drain(board, app):
    """At the end of a bounded run: keep the link serviced until the queue is
    empty or EDGELINE_SIM_DRAIN_S real seconds passed."""
    if board.drain_s <= 0:
        return
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < board.drain_s * 1000:
        app.service_link()
        if app.queue.depth() == 0 and app.link.up():
            break
        time.sleep_ms(5)


def report(board, app):
    import json

    st = app.stats()
    try:
        import micropython

        st["mem_peak"] = getattr(micropython, "mem_peak")()  # unix port only
    except (ImportError, AttributeError):
        pass
    st["outputs"] = [[p.id, p.level, p.history] for p in board.outputs]
    st["sim_time_s"] = board.clock.now_us() / 1e6
    text = json.dumps(st)
    print("SIM-STATS " + text)
    if board.stats_path:
        with open(board.stats_path, "w") as f:
            f.write(text)


def parse_windows(text):
    out = []
    if text:
        for part in text.split(","):
            a, b = part.split("-")
            out.append((float(a), float(b)))
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
