# Signal generators of the simulation board: same output on MicroPython and CPython,
# physically plausible, faults visible, per-sample path allocation-free on the unix port.
import math
import sys
from array import array

from sensorfw.boards.sim_signals import FAULTS, Analog, Pulses, Vibration

RUNTIMES = ("micropython", "cpython")

# First two samples of Vibration(100.0, seed=1) as MPU-6050 raw registers (16384 LSB/g, 131 LSB/dps).
# Identical on every runtime: integer-only generator, own PRNG.
GOLDEN_SEED1 = [82, 905, 16503, 8, 33, -25, 1455, -446, 16347, 38, -2, 14]


def _channel(vib, n, c):
    out = []
    i = 0
    while i < n:
        out.append(vib.sample()[c])
        i += 1
    return out


def _rms(xs):
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def _kurtosis(xs):
    m = sum(xs) / len(xs)
    v = sum((x - m) ** 2 for x in xs) / len(xs)
    return sum((x - m) ** 4 for x in xs) / len(xs) / (v * v)


def _amplitude_at(xs, freq_hz, rate_hz):
    # Single-bin DFT amplitude (peak) at freq_hz.
    re = 0.0
    im = 0.0
    w = 2.0 * math.pi * freq_hz / rate_hz
    for i, x in enumerate(xs):
        re += x * math.cos(w * i)
        im -= x * math.sin(w * i)
    return 2.0 * math.sqrt(re * re + im * im) / len(xs)


def test_golden_raw_values_identical_on_every_runtime():
    vib = Vibration(100.0, seed=1)
    buf = array("h", [0] * 12)
    vib.fill_raw(buf, 2)
    assert list(buf) == GOLDEN_SEED1, list(buf)
    assert vib.n == 2


def test_same_seed_same_stream_other_seed_differs():
    a = Vibration(100.0, seed=7)
    b = Vibration(100.0, seed=7)
    c = Vibration(100.0, seed=8)
    sa = [a.sample() for _ in range(50)]
    sb = [b.sample() for _ in range(50)]
    sc = [c.sample() for _ in range(50)]
    assert sa == sb
    assert sa != sc


def test_fill_raw_equals_scaled_samples():
    a = Vibration(100.0, seed=3)
    b = Vibration(100.0, seed=3)
    buf = array("h", [0] * 6 * 20)
    a.fill_raw(buf, 20)
    i = 0
    while i < 20:
        s = b.sample()
        c = 0
        while c < 6:
            lsb = 16384 if c < 3 else 131
            assert buf[i * 6 + c] == math.floor(s[c] * lsb), (
                i,
                c,
                buf[i * 6 + c],
                s[c],
            )
            c += 1
        i += 1


def test_healthy_machine_is_plausible():
    vib = Vibration(100.0, seed=2, shaft_hz=24.7)
    n = 1000
    samples = [vib.sample() for _ in range(n)]
    az = [s[2] for s in samples]
    ax = [s[0] for s in samples]
    gx = [s[3] for s in samples]
    assert abs(sum(az) / n - 1.0) < 0.005  # gravity on the axial axis
    assert abs(sum(ax) / n) < 0.005
    assert 0.03 < _rms(ax) < 0.08, _rms(ax)
    assert 0.1 < _rms(gx) < 0.6, _rms(gx)
    # The 1x shaft line dominates the radial spectrum.
    one_x = _amplitude_at(ax, 24.7, 100.0)
    off = _amplitude_at(ax, 17.0, 100.0)
    assert 0.05 < one_x < 0.07, one_x
    assert off < 0.01, off


def test_imbalance_grows_the_1x_line():
    base = _amplitude_at(_channel(Vibration(100.0, seed=4), 800, 0), 24.7, 100.0)
    half = Vibration(100.0, seed=4)
    half.set_fault("imbalance", 0.5)
    full = Vibration(100.0, seed=4)
    full.set_fault("imbalance", 1.0)
    a_half = _amplitude_at(_channel(half, 800, 0), 24.7, 100.0)
    a_full = _amplitude_at(_channel(full, 800, 0), 24.7, 100.0)
    assert 2.2 < a_half / base < 2.8, a_half / base
    assert 3.6 < a_full / base < 4.4, a_full / base


def test_bearing_fault_is_impulsive():
    healthy = _kurtosis(_channel(Vibration(100.0, seed=5), 1000, 0))
    vib = Vibration(100.0, seed=5)
    vib.set_fault("bearing", 1.0)
    faulty_x = _channel(vib, 1000, 0)
    assert healthy < 2.5, healthy  # sum of sines + noise: platykurtic
    assert _kurtosis(faulty_x) > 4.0, _kurtosis(faulty_x)
    # Impulses repeat at the cage frequency (0.4x shaft): its line appears in the spectrum.
    vib2 = Vibration(100.0, seed=5)
    vib2.set_fault("bearing", 1.0)
    xs = _channel(vib2, 1000, 0)
    ftf = 0.4 * 24.7
    assert _amplitude_at(xs, ftf, 100.0) > 5 * _amplitude_at(_channel(Vibration(100.0, seed=5), 1000, 0), ftf, 100.0)


def test_noise_fault_raises_broadband_level():
    def hf_rms(vib):
        xs = _channel(vib, 600, 2)
        d = [xs[i + 1] - xs[i] for i in range(len(xs) - 1)]
        return _rms(d)

    base = hf_rms(Vibration(100.0, seed=6))
    vib = Vibration(100.0, seed=6)
    vib.set_fault("noise", 1.0)
    assert hf_rms(vib) > 3.0 * base


def test_severity_zero_and_none_are_healthy():
    ref = [Vibration(100.0, seed=9).sample() for _ in range(1)]
    for kind in FAULTS:
        vib = Vibration(100.0, seed=9)
        vib.set_fault(kind, 0.0)
        assert [vib.sample()] == ref, kind


def test_fill_raw_clamps_to_int16():
    vib = Vibration(100.0, seed=1)
    buf = array("h", [0] * 6 * 4)
    vib.fill_raw(buf, 4, accel_lsb_per_g=16384 * 4)  # az = 4 g worth of LSBs: clamps
    assert buf[2] == 32767 and buf[8] == 32767
    vib2 = Vibration(100.0, seed=1)
    vib2.fill_raw(buf, 4, accel_lsb_per_g=2048, gyro_lsb_per_dps=16.4)  # +-16 g / +-2000 dps ranges
    assert 2000 <= buf[2] <= 2100


def test_bad_arguments_raise_value_error():
    vib = Vibration(100.0, seed=1)
    for bad in (("wobble", 1.0), ("bearing", 1.5), ("noise", -0.1)):
        try:
            vib.set_fault(bad[0], bad[1])
        except ValueError:
            pass
        else:
            raise AssertionError(f"accepted {bad!r}")
    try:
        vib.fill_raw(array("h", [0] * 5), 1)
    except ValueError:
        pass
    else:
        raise AssertionError("short buffer accepted")
    try:
        Vibration(100.0, shaft_hz=60.0)
    except ValueError:
        pass
    else:
        raise AssertionError("shaft above Nyquist accepted")


def test_analog_and_pulses():
    adc = Analog(rate_hz=10.0, seed=1, period_s=20.0, amplitude=20000, noise=300)
    vals = [adc.read_u16() for _ in range(200)]  # one full period
    assert min(vals) >= 0 and max(vals) <= 65535
    assert abs(sum(vals) / len(vals) - 32768) < 400
    assert max(vals) - min(vals) > 38000
    a1 = Analog(seed=2)
    a2 = Analog(seed=2)
    assert [a1.read_u16() for _ in range(20)] == [a2.sample() for _ in range(20)]
    p = Pulses(rate_hz=7.0, seed=3, jitter=0.2)
    ms = [p.next_interval_ms() for _ in range(700)]
    assert min(ms) >= 114 and max(ms) <= 172, (min(ms), max(ms))
    total = sum(ms)
    assert abs(total - 100000) < 200, total  # mean rate kept exact by carrying remainders
    q = Pulses(rate_hz=7.0, seed=3, jitter=0.2)
    assert [q.next_interval_ms() for _ in range(700)] == ms


def test_per_sample_path_allocates_nothing():
    # On MicroPython the calls run under heap_lock(); any allocation raises MemoryError.
    try:
        import micropython

        lock = micropython.heap_lock
        unlock = micropython.heap_unlock
    except (ImportError, AttributeError):
        lock = unlock = None
    vib = Vibration(100.0, seed=1)
    vib.set_fault("bearing", 0.8)
    adc = Analog(seed=1)
    pul = Pulses(5.0, seed=1)
    buf = array("h", [0] * 6 * 64)
    out = array("i", [0, 0])
    if sys.implementation.name == "micropython":
        assert lock is not None
    vib.fill_raw(buf, 1, 8192, 65.5)  # caches the multipliers of a float LSB setting
    if lock is not None:
        lock()
    try:
        vib.fill_raw(buf, 32, 8192, 65.5)  # +-4 g, +-500 deg/s, as SimMPU6050 asks
        vib.fill_raw(buf, 64)
        out[0] = adc.read_u16()
        out[1] = pul.next_interval_ms()
    finally:
        if unlock is not None:
            unlock()
    assert buf[6 * 63 + 2] != 0 and out[0] > 0 and out[1] > 0
