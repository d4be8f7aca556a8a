# MPU-6050 sample-rate rules (MPU-6000/6050 Register Map rev 4.2: SMPLRT_DIV, CONFIG):
# pure functions, no hardware. The config validator checks rates with them at boot, and
# the driver computes SMPLRT_DIV and the DLPF setting with them when a rate is set; the
# module is dropped again after each use (RAM on an ESP32 is scarce).

# DLPF_CFG 0..6 -> bandwidth in Hz, the wider of accel (260,184,94,44,21,10,5) and gyro
# (256,188,98,42,20,10,5), so that both stay below Nyquist when the automatic choice
# picks a setting.
DLPF_BANDWIDTH_HZ = (260, 188, 98, 44, 21, 10, 5)
_RATE_TOLERANCE = 0.0005  # relative: "333.3" or "58.82" name 1000/3 and 1000/17


def base_hz(dlpf_cfg):
    # Gyro output rate: 8 kHz with the DLPF off (DLPF_CFG 0 or 7), else 1 kHz.
    return 8000 if dlpf_cfg in (0, 7) else 1000


def auto_dlpf(rate_hz):
    """Widest DLPF setting (1..6) whose bandwidth is <= rate/2 (anti-aliasing).

    0 is never chosen: it switches the gyro to 8 kHz (other rates). Below 10 Hz even
    the 5 Hz filter is above Nyquist; 6 is returned as the best available."""
    half = rate_hz / 2
    cfg = 1
    while cfg < 6 and DLPF_BANDWIDTH_HZ[cfg] > half:
        cfg += 1
    return cfg


def plan(rate_hz, dlpf=None):
    # (SMPLRT_DIV, DLPF_CFG, exact rate) for rate_hz, or None if the chip cannot make it.
    if not isinstance(rate_hz, (int, float)) or isinstance(rate_hz, bool) or not rate_hz > 0:
        return None
    cfg = auto_dlpf(rate_hz) if dlpf is None else dlpf
    base = base_hz(cfg)
    div = int(base / rate_hz + 0.5) - 1
    if div < 0 or div > 255:
        return None
    exact = base / (1 + div)
    if abs(exact - rate_hz) > _RATE_TOLERANCE * exact:
        return None
    return div, cfg, exact


def achievable_rate(rate_hz, dlpf=None):
    """The exact sensor rate (base / (1 + SMPLRT_DIV)) that rate_hz names, or None."""
    p = plan(rate_hz, dlpf)
    return None if p is None else p[2]


def _fmt(hz):
    return "%.6g Hz" % hz


def rate_error(rate_hz, dlpf=None):
    """None if the MPU-6050 can sample at rate_hz, else a message naming the nearest rates.

    Rates are base / (1 + SMPLRT_DIV), SMPLRT_DIV 0..255; base 1000 Hz (8000 Hz with
    an explicit dlpf=0). A relative tolerance of 0.05% accepts rounded decimals."""
    if plan(rate_hz, dlpf) is not None:
        return None
    if not isinstance(rate_hz, (int, float)) or isinstance(rate_hz, bool) or not rate_hz > 0:
        return "MPU-6050 sample rate must be a number > 0 (Hz), got %r" % (rate_hz,)
    r = float(rate_hz)
    cfg = auto_dlpf(r) if dlpf is None else dlpf
    base = base_hz(cfg)
    what = "MPU-6050 sample rate %r Hz is not %d Hz / (1 + SMPLRT_DIV) for SMPLRT_DIV 0..255" % (rate_hz, base)
    if r > base:
        return what + ": the nearest is " + _fmt(base)
    if r < base / 256:
        return what + ": the nearest is " + _fmt(base / 256)
    d = int(base / r) - 1  # base/(1+d) >= r > base/(2+d)
    return what + ": the nearest are " + _fmt(base / (2 + d)) + " and " + _fmt(base / (1 + d))
