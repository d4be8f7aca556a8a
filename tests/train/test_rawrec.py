"""gateway/rawrec.py on a raw log the real gateway pipeline wrote from device frames."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest

from gateway.atrest import EncryptionSettings, open_keyring
from gateway.config import from_dict
from gateway.csvrec import read_csv
from gateway.export import export_readings
from gateway.ingest import RawFrame
from gateway.pipeline import Gateway
from gateway.rawrec import iso, read_rawlog
from gateway.recording import RecordingError
from tests.gateway.doubles import Published
from tests.support.simdevice import SimDevice

T0 = float(int(time.time())) - 3600.0
STEP = 0.32  # one DATA frame of 32 samples at 100 Hz


def _data(dev: SimDevice, t: float, n: int) -> list[RawFrame]:
    return [RawFrame(dev.topic("data"), dev.data(), t + i * STEP) for i in range(n)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pump-1: 10 frames, 3 lost, 5 frames, a reboot, 4 frames; tank-2 registered without a BIRTH."""
    tmp = tmp_path_factory.mktemp("rawrec")
    cfg = from_dict({"gateway": {"id": "gw1", "site": "s1", "data_dir": str(tmp / "data")}}, base_dir=tmp)
    gw = Gateway(cfg, Published())
    dev = SimDevice("pump-1")
    gw.process([RawFrame(dev.topic("birth"), dev.birth(), T0)])
    gw.process(_data(dev, T0 + 1, 10))
    dev.skip(3)
    gw.process(_data(dev, T0 + 1 + 13 * STEP, 5))
    dev.reboot()
    gw.process([RawFrame(dev.topic("birth"), dev.birth(), T0 + 20)])
    gw.process(_data(dev, T0 + 21, 4))
    tank = SimDevice("tank-2")
    gw.process([RawFrame(tank.topic("health"), tank.health(), T0)])
    gw.close()
    return tmp / "data"


def test_parts_at_gaps_and_reboots(data_dir: Path) -> None:
    rec = read_rawlog(data_dir, "pump-1", T0 - 10, T0 + 100)
    assert rec.rate_hz == 100.0
    assert rec.channels == (("ax", "g"), ("ay", "g"), ("temp", "C"))
    assert [p.n for p in rec.parts] == [320, 160, 128]
    assert "boot 1" in rec.parts[1].origin and "boot 2" in rec.parts[2].origin
    # the second part starts where the 3 lost frames end
    assert rec.parts[1].t0 - rec.parts[0].t0 == pytest.approx(13 * 0.32, abs=0.02)
    assert not rec.labelled
    assert rec.source == f"rawlog: pump-1 {iso(T0 - 10)}..{iso(T0 + 100)}"
    # the values are what the device sampled: 1 g sine on ax, 0.5 g on ay, 25 C
    expect = SimDevice("pump-1").raw_block()
    np.testing.assert_allclose(rec.parts[0].values[:32, 0], expect[:, 0] * 0.001, atol=1e-6)
    np.testing.assert_allclose(rec.parts[2].values[:, 2], 25.0, atol=1e-4)
    # the fingerprint follows the samples: the same range gives the same one, a shorter range another
    assert read_rawlog(data_dir, "pump-1", T0 - 10, T0 + 100).fingerprint == rec.fingerprint
    assert read_rawlog(data_dir, "pump-1", T0 - 10, T0 + 10).fingerprint != rec.fingerprint


def test_range_cuts_samples(data_dir: Path) -> None:
    first = read_rawlog(data_dir, "pump-1", T0 - 10, T0 + 100).parts[0]
    t_to = first.t0 + 1.0
    rec = read_rawlog(data_dir, "pump-1", first.t0, t_to)
    assert [p.n for p in rec.parts] == [101]  # both ends included, at 100 Hz


def test_same_samples_as_the_csv_export(data_dir: Path, tmp_path: Path) -> None:
    """`edgeline-gateway raw` output read back by the CSV reader gives the same recording."""
    out = io.StringIO()
    export_readings(data_dir, "pump-1", T0 - 10, T0 + 100, out)
    path = tmp_path / "pump-1.csv"
    path.write_text(out.getvalue())
    from_csv = read_csv([path], split_gaps=True)
    from_log = read_rawlog(data_dir, "pump-1", T0 - 10, T0 + 100)
    assert from_csv.rate_hz == from_log.rate_hz
    assert [p.n for p in from_csv.parts] == [p.n for p in from_log.parts]
    for a, b in zip(from_csv.parts, from_log.parts, strict=True):
        assert a.t0 == pytest.approx(b.t0, abs=1e-6)
        np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=1e-6)


def test_errors_say_what_the_log_holds(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match=r"unknown device 'pump-9'; the registry knows: pump-1, tank-2"):
        read_rawlog(data_dir, "pump-9", T0, T0 + 100)
    with pytest.raises(RecordingError, match=r"'tank-2' has no schema in the registry"):
        read_rawlog(data_dir, "tank-2", T0, T0 + 100)
    with pytest.raises(RecordingError) as exc:
        read_rawlog(data_dir, "pump-1", T0 + 1000, T0 + 2000)
    msg = str(exc.value)
    assert f"no readings of pump-1 between {iso(T0 + 1000)} and {iso(T0 + 2000)}" in msg
    assert "the log holds pump-1 from " in msg
    with pytest.raises(RecordingError, match="is not before"):
        read_rawlog(data_dir, "pump-1", T0 + 10, T0)
    with pytest.raises(RecordingError, match=r"no devices in .*data_dir"):
        read_rawlog(tmp_path, "pump-1", T0, T0 + 100)


def test_encrypted_raw_log_needs_the_key_ring(tmp_path: Path) -> None:
    settings = EncryptionSettings(key_dir=tmp_path / "keys")
    ring = open_keyring(settings, create=True, writer=True)
    cfg = from_dict({"gateway": {"id": "gw1", "site": "s1", "data_dir": str(tmp_path / "data")}}, base_dir=tmp_path)
    gw = Gateway(cfg, Published(), keys=ring)
    dev = SimDevice("pump-1")
    gw.process([RawFrame(dev.topic("birth"), dev.birth(), T0)])
    gw.process(_data(dev, T0 + 1, 6))
    gw.close()
    ring.close()
    with pytest.raises(RecordingError, match=r"chunks of pump-1 in the range are encrypted and no key ring was given"):
        read_rawlog(tmp_path / "data", "pump-1", T0 - 10, T0 + 100)
    reader = open_keyring(settings)
    try:
        rec = read_rawlog(tmp_path / "data", "pump-1", T0 - 10, T0 + 100, keys=reader)
    finally:
        reader.close()
    assert [p.n for p in rec.parts] == [6 * 32]
