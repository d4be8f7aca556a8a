# Runs on the MicroPython unix port: what the capture-cost scripts share
# (upy_firmware_cost.py, the MicroPython path; upy_cp_capture_cost.py, the CircuitPython
# path), so both are measured the same way: the same sizes, the same stand-ins for the
# frame sink and the sensor's signal, the same bare loop, the same rounds and summary.
# The script's own directory (bench/) is first on sys.path, so `import upy_cost_common`.
import gc
import time
from array import array

WIDTH = 6  # MPU-6050: ax, ay, az, gx, gy, gz
BATCH = 32  # samples per DATA frame
RATE = 100  # Hz
P = 1000000 // RATE  # sample period, us
PER_DRAIN = 5  # samples per FIFO drain: Sampler.timer_hz is 20 at 100 Hz


class Sink:
    """The App's frame sink: DATA frames into the offline queue."""

    boot = 1

    def __init__(self, q):
        self.q = q
        self.seq = 0

    def next_seq(self):
        s = self.seq
        self.seq = s + 1
        return s

    def put_frame(self, ftype, frame, n):
        self.q.push(frame, n, True)


class Rig:
    pass


class Hold:
    """Stands in for the simulated chip's signal generator: the last sample again."""

    def fill_raw(self, buf, n, accel_lsb, gyro_lsb):
        pass


class HoldADC:
    """Stands in for the simulated ADC's signal generator: one value again."""

    def read_u16(self):
        return 40000


def bursts(per):
    # the driver's FIFO reads for `per` samples: power-of-two chunks of at most 32
    out = []
    left = per
    while left:
        k = 32
        while k > left:
            k >>= 1
        out.append(bytearray(12 * k))
        left -= k
    return out


def bare_loop(samples, src, width=WIDTH):
    n = samples * width
    out = array("h", bytes(2 * n))
    m = len(src)
    gc.collect()
    t0 = time.ticks_us()
    j = 0
    k = 0
    while j < n:
        out[j] = src[k]  # the values the firmware captured, stored one by one
        j += 1
        k += 1
        if k == m:
            k = 0
    return time.ticks_diff(time.ticks_us(), t0)


def summarise(runs, own):
    """Fastest round of each variant; `own`: paths whose simulation (key + "_sim") is
    subtracted (fastest path - fastest simulation: per-round differences of two noisy
    timings are noisier); ratios to the fastest bare loop."""
    best = {k: min(v) for k, v in runs.items()}
    for k in own:
        best[k + "_own_us"] = best[k + "_us"] - best[k + "_sim_us"]
    for k in list(best):
        best[k.replace("_us", "_ratio")] = best[k] / best["bare_us"]
    return best
