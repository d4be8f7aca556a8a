# Signal generators for the simulation board (and for model training on CPython).
#
# Pure Python: runs unchanged on the MicroPython unix port, CircuitPython and CPython.
# Deterministic by seed on every runtime: a private xorshift32 PRNG (MicroPython's
# `random` differs between ports) and integer-only arithmetic in the per-sample path
# (fixed-point phase accumulators and int16 lookup tables), so the same seed gives
# bit-identical raw values everywhere.
#
# The per-sample path (`Vibration.fill_raw`, `Analog.read_u16`, `Pulses.next_interval_ms`)
# creates no objects on a 64-bit unix port: it can run under `micropython.heap_lock()`,
# e.g. inside a simulated I2C / ADC / timer handler. Floats appear only in constructors,
# `set_fault` and the convenience `sample()` methods.
#
# Vibration model (MPU-6050 bolted to the bearing housing of a rotating machine):
#   ax, ay  radial accelerations: shaft harmonics 1x (dominant, 90 deg apart), 2x, 3x + noise
#   az      axial acceleration: gravity (+1 g) + small 1x / 2x + noise
#   gx..gz  housing rocking at 1x / 2x, a few tenths of deg/s + noise
# Faults (severity 0..1):
#   "imbalance"  1x amplitude grows up to 4x (radial accel and gyro)
#   "bearing"    periodic impulses at the bearing defect frequency, each ringing a structural
#                resonance (decaying sinusoid). At 100 Hz sampling the race defect frequencies
#                (~3-5x shaft) lie above Nyquist, so the default defect is the cage frequency
#                (fundamental train frequency, 0.4x shaft); `defect_hz` in set_fault overrides it.
#   "noise"      broadband noise grows up to 6x (loose mounting, electrical interference)

import math
from array import array

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


FAULTS = ("none", "imbalance", "bearing", "noise")

_TABLE_BITS = const(10)
_TABLE_SIZE = const(1024)
_TABLE_MASK = const(1023)
_PHASE_BITS = const(24)  # one cycle = 2**24 phase units
_PHASE_ONE = const(16777216)
_PHASE_MASK = const(16777215)
_INDEX_SHIFT = const(14)  # _PHASE_BITS - _TABLE_BITS
_M32 = 0xFFFFFFFF

# Internal fixed-point units: acceleration 2**-16 g, angular rate 2**-12 deg/s.
_ACC_ONE = const(65536)
_GYR_ONE = const(4096)
_NHARM = const(3)
_IMP_LEN = const(24)

# sin() * 32767, one cycle; shared by every generator.
SINE = array(
    "h",
    [round(math.sin(2.0 * math.pi * i / _TABLE_SIZE) * 32767.0) for i in range(_TABLE_SIZE)],
)


def _seed_state(seed):
    # Spread small seeds over 32 bits (Knuth multiplicative hash); never 0 for xorshift.
    s = ((int(seed) & _M32) * 2654435761 + 0x9E3779B9) & _M32
    if s == 0:
        s = 0x6D2B79F5
    return s


def _phase_inc(freq_hz, rate_hz):
    return round(freq_hz / rate_hz * _PHASE_ONE) & _PHASE_MASK


class _Rng:
    """xorshift32; `next()` returns an int in [1, 2**32)."""

    def __init__(self, seed):
        self.s = _seed_state(seed)
        i = 0
        while i < 8:
            self.next()
            i += 1

    def next(self):
        x = self.s
        x ^= (x << 13) & _M32
        x ^= x >> 17
        x ^= (x << 5) & _M32
        self.s = x
        return x

    def gauss8(self):
        # Sum of the four bytes of one draw, centred: Irwin-Hall(4), std ~= 147.8.
        x = self.next()
        return (x & 255) + ((x >> 8) & 255) + ((x >> 16) & 255) + (x >> 24) - 510

    def uniform(self):
        # Float in [0, 1) (allocates on MicroPython: not for the per-sample path).
        return (self.next() >> 8) / 16777216.0


_GAUSS_STD = 147.8

# Healthy machine amplitudes, per channel: (1x, 2x, 3x) peak, phase offset in cycles.
# Units: g for ax..az, deg/s for gx..gz.
_HEALTHY_AMPS = (
    (0.060, 0.020, 0.008),  # ax radial
    (0.045, 0.015, 0.006),  # ay radial (90 deg behind ax)
    (0.010, 0.006, 0.002),  # az axial
    (0.40, 0.12, 0.04),  # gx
    (0.30, 0.10, 0.03),  # gy
    (0.15, 0.05, 0.02),  # gz
)
_PHASE_OFFSETS = (0.0, 0.25, 0.1, 0.0, 0.25, 0.6)
_NOISE = (0.012, 0.012, 0.010, 0.15, 0.15, 0.12)  # std per channel (g, deg/s)
_IMBALANCE_GAIN = (1.0, 1.0, 0.3, 1.0, 1.0, 0.5)  # share of the 1x growth per channel
_BEARING_GAIN = (
    0.60,
    0.35,
    0.20,
    2.0,
    1.5,
    0.8,
)  # impulse peak per channel at severity 1
_GRAVITY = (0.0, 0.0, 1.0, 0.0, 0.0, 0.0)


class Vibration:
    """3-axis accel (g) + 3-axis gyro (deg/s) of an MPU-6050 on a rotating machine."""

    def __init__(self, rate_hz=100.0, seed=1, shaft_hz=24.7):
        if rate_hz <= 0:
            raise ValueError(f"rate_hz must be > 0, got {rate_hz!r}")
        if shaft_hz <= 0 or shaft_hz >= rate_hz / 2:
            raise ValueError(f"shaft_hz must be in (0, rate_hz/2), got {shaft_hz!r}")
        self.rate_hz = float(rate_hz)
        self.shaft_hz = float(shaft_hz)
        self.seed = seed
        self.n = 0  # samples generated so far
        self._rng = _Rng(seed)
        rng = self._rng
        # Harmonic phase accumulators (random start phase per seed).
        self._inc = array(
            "i",
            [_phase_inc(self.shaft_hz * (h + 1), self.rate_hz) for h in range(_NHARM)],
        )
        self._ph = array("i", [rng.next() & _PHASE_MASK for h in range(_NHARM)])
        # Per channel x harmonic: amplitude (internal units) and phase offset (phase units).
        self._amp = array("i", [0] * (6 * _NHARM))
        self._off = array("i", [0] * (6 * _NHARM))
        self._sig = array("i", [0] * 6)  # noise multiplier: std_internal * 128 / _GAUSS_STD
        self._base = array("i", [int(_GRAVITY[c] * _ACC_ONE) for c in range(6)])
        self._bamp = array("i", [0] * 6)  # bearing impulse peak per channel (internal units)
        # Bearing impulse response: decaying resonance at 0.34 x rate, unit peak * 32767.
        res = 0.34
        tau = 3.0  # samples
        imp = [math.exp(-k / tau) * math.sin(2.0 * math.pi * res * (k + 0.5)) for k in range(_IMP_LEN)]
        peak = max(abs(v) for v in imp)
        self._imp = array("h", [round(v / peak * 32767.0) for v in imp])
        self._dph = 0  # defect phase accumulator
        self._dinc = 0  # 0 = no bearing fault
        self._iidx = _IMP_LEN  # >= _IMP_LEN: no impulse ringing
        self._imod = 256  # amplitude modulation of the current impulse (/256)
        self.cur = array("i", [0] * 6)  # last sample, internal units
        self._a_lsb = 16384
        self._g_lsb = 131
        self._a_mul = 16384 * 1024
        self._g_mul = 131 * 1024
        self.kind = "none"
        self.severity = 0.0
        self.set_fault("none")

    def set_fault(self, kind, severity=1.0, defect_hz=None):
        """Inject a fault: kind in FAULTS, severity 0..1 (0 = healthy)."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULTS!r}")
        if not (0.0 <= severity <= 1.0):
            raise ValueError(f"severity must be within 0..1, got {severity!r}")
        self.kind = kind
        self.severity = float(severity)
        sev = self.severity if kind != "none" else 0.0
        for c in range(6):
            one = _ACC_ONE if c < 3 else _GYR_ONE
            for h in range(_NHARM):
                a = _HEALTHY_AMPS[c][h]
                if h == 0 and kind == "imbalance":
                    a *= 1.0 + 3.0 * sev * _IMBALANCE_GAIN[c]
                self._amp[c * _NHARM + h] = round(a * one)
                self._off[c * _NHARM + h] = int(_PHASE_OFFSETS[c] * (h + 1) * _PHASE_ONE) & _PHASE_MASK
            std = _NOISE[c] * (1.0 + 5.0 * sev if kind == "noise" else 1.0)
            self._sig[c] = round(std * one * 128.0 / _GAUSS_STD)
            self._bamp[c] = round(_BEARING_GAIN[c] * sev * one) if kind == "bearing" else 0
        if kind == "bearing" and sev > 0.0:
            f = defect_hz if defect_hz is not None else 0.4 * self.shaft_hz
            if not (0.0 < f < self.rate_hz / 2):
                raise ValueError(f"defect_hz must be in (0, rate_hz/2), got {f!r}")
            self._dinc = _phase_inc(f, self.rate_hz)
        else:
            self._dinc = 0
            self._iidx = _IMP_LEN

    def _step(self):
        # Advance one sample; result in self.cur (internal units). Allocates nothing.
        rng = self._rng
        ph = self._ph
        inc = self._inc
        amp = self._amp
        off = self._off
        sig = self._sig
        base = self._base
        cur = self.cur
        sine = SINE
        imp_v = 0
        if self._dinc:
            d = self._dph + self._dinc
            if d >= _PHASE_ONE:
                d -= _PHASE_ONE
                self._iidx = 0
                self._imod = 192 + (rng.next() & 127)  # 0.75 .. 1.25
            self._dph = d
            i = self._iidx
            if i < _IMP_LEN:
                imp_v = (self._imp[i] * self._imod) >> 8
                self._iidx = i + 1
        bamp = self._bamp
        c = 0
        while c < 6:
            k = c * _NHARM
            v = base[c]
            h = 0
            while h < _NHARM:
                v += (amp[k + h] * sine[((ph[h] + off[k + h]) >> _INDEX_SHIFT) & _TABLE_MASK]) >> 15
                h += 1
            v += (sig[c] * rng.gauss8()) >> 7
            if imp_v:
                v += (bamp[c] * imp_v) >> 15
            cur[c] = v
            c += 1
        h = 0
        while h < _NHARM:
            ph[h] = (ph[h] + inc[h]) & _PHASE_MASK
            h += 1
        self.n += 1

    def sample(self):
        """Next sample as (ax, ay, az in g, gx, gy, gz in deg/s); advances time by 1/rate."""
        self._step()
        cur = self.cur
        return (
            cur[0] / 65536.0,
            cur[1] / 65536.0,
            cur[2] / 65536.0,
            cur[3] / 4096.0,
            cur[4] / 4096.0,
            cur[5] / 4096.0,
        )

    def fill_raw(self, buf, n, accel_lsb_per_g=16384, gyro_lsb_per_dps=131):
        """Write n samples x 6 int16 register values (clamped), interleaved, into array('h') buf.

        Allocates nothing once called with these LSB values (the first call with new values
        caches their multipliers): usable inside a heap-locked handler.
        """
        if len(buf) < 6 * n:
            raise ValueError(f"buffer holds {len(buf)} values, {6 * n} needed")
        # Multipliers cached per LSB setting: a float argument (65.5 LSB/dps) would allocate
        # in int(x * 1024); comparing it with the cached value allocates nothing.
        if accel_lsb_per_g != self._a_lsb or gyro_lsb_per_dps != self._g_lsb:
            self._a_lsb = accel_lsb_per_g
            self._g_lsb = gyro_lsb_per_dps
            self._a_mul = int(accel_lsb_per_g * 1024)  # raw = v * lsb / 2**16 = v * a_mul >> 26
            self._g_mul = int(gyro_lsb_per_dps * 1024)  # raw = v * lsb / 2**12 = v * g_mul >> 22
        a_mul = self._a_mul
        g_mul = self._g_mul
        cur = self.cur
        j = 0
        i = 0
        while i < n:
            self._step()
            c = 0
            while c < 6:
                if c < 3:
                    r = (cur[c] * a_mul) >> 26
                else:
                    r = (cur[c] * g_mul) >> 22
                if r > 32767:
                    r = 32767
                elif r < -32768:
                    r = -32768
                buf[j] = r
                j += 1
                c += 1
            i += 1


class Analog:
    """Slow sine + noise on an ADC channel: read_u16()/sample() -> int 0..65535."""

    def __init__(
        self,
        rate_hz=10.0,
        seed=1,
        *,
        period_s=60.0,
        mean=32768,
        amplitude=12000,
        noise=300,
    ):
        if rate_hz <= 0 or period_s <= 0:
            raise ValueError("rate_hz and period_s must be > 0")
        self.rate_hz = float(rate_hz)
        self._rng = _Rng(seed)
        self._ph = self._rng.next() & _PHASE_MASK
        self._inc = _phase_inc(1.0 / period_s, self.rate_hz)
        self.mean = int(mean)
        self.amplitude = int(amplitude)
        self._sig = round(noise * 128.0 / _GAUSS_STD)
        self.n = 0

    def read_u16(self):
        """Next value; advances time by 1/rate. Allocates nothing."""
        v = self.mean + ((self.amplitude * SINE[(self._ph >> _INDEX_SHIFT) & _TABLE_MASK]) >> 15)
        v += (self._sig * self._rng.gauss8()) >> 7
        self._ph = (self._ph + self._inc) & _PHASE_MASK
        self.n += 1
        if v < 0:
            return 0
        if v > 65535:
            return 65535
        return v

    def sample(self):
        return self.read_u16()


class Pulses:
    """Pulse train (flow meter, anemometer, tachometer): intervals around 1/rate_hz with jitter."""

    def __init__(self, rate_hz=5.0, seed=1, jitter=0.1):
        self._rng = _Rng(seed)
        self.n = 0
        self.set_rate(rate_hz, jitter)

    def set_rate(self, rate_hz, jitter=0.1):
        if not (0 < rate_hz <= 1000):
            raise ValueError(f"rate_hz must be in (0, 1000], got {rate_hz!r}")
        if not (0.0 <= jitter < 1.0):
            raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
        self.rate_hz = float(rate_hz)
        self._base_us = round(1000000.0 / rate_hz)
        self._jit_us = int(self._base_us * jitter)  # +- this, uniform
        self._frac_us = 0  # carries sub-millisecond remainders so the mean rate is exact

    def next_interval_us(self):
        """Next interval in microseconds. Allocates nothing."""
        j = self._jit_us
        d = self._base_us
        if j:
            d += ((self._rng.next() >> 16) * (2 * j + 1) >> 16) - j
        self.n += 1
        return d

    def next_interval_ms(self):
        """Next interval in whole milliseconds (>= 1); the remainder carries over."""
        t = self.next_interval_us() + self._frac_us
        ms = t // 1000
        ms = max(ms, 1)
        self._frac_us = t - ms * 1000
        return ms
