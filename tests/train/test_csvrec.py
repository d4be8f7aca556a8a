"""gateway/csvrec.py: CSV files in the shapes users have, and a clear error for each bad one."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from gateway.csvrec import add_csv_arguments, csv_options, read_csv
from gateway.recording import RecordingError, fingerprint_bytes, windows


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def steady(n: int, rate: float, t0: float = 1733200000.0, cols: int = 2, fmt: str = "{:.6f}") -> str:
    """A gateway-export-like CSV: time + cols value columns, one row per sample."""
    rows = ["time," + ",".join(f"c{j}" for j in range(cols))]
    for i in range(n):
        rows.append(fmt.format(t0 + i / rate) + "," + ",".join(f"{(i * (j + 1)) % 7 * 0.5:g}" for j in range(cols)))
    return "\n".join(rows) + "\n"


def error(paths: list[Path], **kw: object) -> str:
    with pytest.raises(RecordingError) as exc:
        read_csv(paths, **kw)  # type: ignore[arg-type]
    return str(exc.value)


# --------------------------------------------------------------------------- the public shapes


def test_gateway_export_shape(tmp_path: Path) -> None:
    """`edgeline-gateway raw` output: time (Unix s, 6 decimals), one column per channel."""
    rows = ["time,ax,ay,temp"]
    t0 = 1733200000.123
    for i in range(300):
        rows.append(f"{t0 + i * 0.01:.6f},{np.sin(i / 5):.6g},0.5,25")
    p = write(tmp_path, "pump-01.csv", "\n".join(rows) + "\n")
    rec = read_csv([p], units={"ax": "g", "ay": "g", "temp": "C"})
    assert rec.rate_hz == 100.0
    assert rec.channels == (("ax", "g"), ("ay", "g"), ("temp", "C"))
    assert len(rec.parts) == 1 and rec.parts[0].n == 300
    assert rec.parts[0].t0 == pytest.approx(t0, abs=1e-6)
    assert rec.parts[0].values.dtype == np.float32 and rec.parts[0].values.shape == (300, 3)
    assert rec.parts[0].values[5, 0] == pytest.approx(np.sin(1.0), abs=1e-6)
    assert not rec.labelled and rec.label_names == ()
    assert rec.source == "csv: pump-01.csv"
    assert rec.fingerprint == fingerprint_bytes([p.read_bytes()])
    assert rec.parts[0].origin == "pump-01.csv lines 2-301"


def test_timeeval_shape_needs_the_rate(tmp_path: Path) -> None:
    """aeon's TimeEval files: timestamp = sample number, value-0, is_anomaly."""
    rows = ["timestamp,value-0,is_anomaly"]
    for i in range(200):
        rows.append(f"{i},{float(np.cos(i / 3))!r},{1 if 120 <= i < 130 else 0}")
    p = write(tmp_path, "ecg_TEST.csv", "\n".join(rows) + "\n")
    msg = error([p])
    assert "ecg_TEST.csv line 2, column 'timestamp'" in msg and "--rate-hz" in msg
    rec = read_csv([p], rate_hz=100.0)
    assert rec.rate_hz == 100.0 and rec.channels == (("value-0", ""),)
    (part,) = rec.parts
    assert part.t0 == 0.0 and part.n == 200
    assert part.labels is not None and part.labels.sum() == 10 and part.labels[120] == 1
    assert rec.label_names == ("0", "1")
    # training files labelled 0.0 only: all normal
    p2 = write(
        tmp_path, "ecg_TRAIN_NA.csv", "timestamp,value-0,is_anomaly\n" + "".join(f"{i},1.5,0.0\n" for i in range(50))
    )
    rec2 = read_csv([p2], rate_hz=100.0)
    assert rec2.label_names == ("0.0",) and rec2.parts[0].labels is not None and rec2.parts[0].labels.sum() == 0


def test_daphnet_shape_millisecond_timestamps(tmp_path: Path) -> None:
    """aeon's Daphnet: ISO date-times written to the ms at 64 Hz (steps of 15 and 16 ms)."""
    names = ["ankle_horiz_fwd", "ankle_vert", "ankle_horiz_lateral", "leg_horiz_fwd", "leg_vert"]
    rows = ["timestamp," + ",".join(names) + ",is_anomaly"]
    base = np.datetime64("1970-01-01T00:04:40", "ms")
    n = 7040
    for i in range(n):
        ms = round(i * 1000 / 64)  # what pandas wrote: the time rounded to the millisecond
        stamp = str(base + np.timedelta64(ms, "ms")).replace("T", " ")
        rows.append(stamp + "," + ",".join(str((i * (j + 3)) % 50 - 25) for j in range(5)) + ",0")
    p = write(tmp_path, "S06R02E0.csv", "\n".join(rows) + "\n")
    steps = np.diff([round(i * 1000 / 64) for i in range(n)])
    assert set(steps.tolist()) == {15, 16}
    rec = read_csv([p])
    assert rec.rate_hz == 64.0
    assert len(rec.parts) == 1 and rec.parts[0].n == n
    assert rec.parts[0].t0 == pytest.approx(280.0)
    assert rec.channel_names == tuple(names)
    assert rec.labelled and rec.label_names == ("0",)  # one label value is fine
    assert rec.parts[0].values[1, 1] == (1 * 4) % 50 - 25


def test_iso_with_zone_and_windows_line_ends(tmp_path: Path) -> None:
    text = "Time,a\r\n" + "".join(f"2026-12-01T10:00:0{i}.500+01:00,{i}\r\n" for i in range(6))
    rec = read_csv([write(tmp_path, "z.csv", text)])
    assert rec.rate_hz == 1.0
    assert rec.parts[0].t0 == pytest.approx(
        float(np.datetime64("2026-12-01T09:00:00.500", "us").astype(np.int64)) / 1e6
    )
    zulu = "time,a\n" + "".join(f"2026-12-01T10:00:0{i}Z,{i}\n" for i in range(6))
    assert read_csv([write(tmp_path, "zz.csv", zulu)]).parts[0].t0 % 86400 == 36000.0


def test_no_time_column_takes_the_rate(tmp_path: Path) -> None:
    p = write(tmp_path, "v.csv", "x,y\n" + "".join(f"{i},{-i}\n" for i in range(10)))
    msg = error([p])
    assert "v.csv" in msg and "no time column" in msg and "--rate-hz" in msg
    rec = read_csv([p], rate_hz=10.0)
    assert rec.channel_names == ("x", "y") and rec.parts[0].t0 == 0.0 and rec.duration_s == 1.0


# --------------------------------------------------------------------------- columns, units, labels


def test_columns_units_and_label_choice(tmp_path: Path) -> None:
    text = "Stamp,ax [g],temp (C),state,extra\n" + "".join(
        f"{i * 0.5},{i},{20 + i},{'run' if i < 6 else 'FAULT'},9\n" for i in range(8)
    )
    p = write(tmp_path, "m.csv", text)
    rec = read_csv(
        [p], time_column="stamp", columns=["ax", "temp"], label_column="state", normal_label="run", units={"ax": "m/s2"}
    )
    assert rec.rate_hz == 2.0
    assert rec.channels == (("ax", "m/s2"), ("temp", "C"))
    assert rec.label_names == ("FAULT", "run")
    labels = rec.parts[0].labels
    assert labels is not None and labels.tolist() == [0] * 6 + [1] * 2
    # default value columns: all but time and label; --no-labels ignores the label column
    rec2 = read_csv([p], time_column="Stamp", label_column="state", normal_label="run")
    assert rec2.channel_names == ("ax", "temp", "extra")
    rec3 = read_csv([p], time_column="Stamp", columns=["ax"], no_labels=True)
    assert not rec3.labelled and rec3.label_names == ()


@pytest.mark.parametrize("normal", ["0", "0.0", "false", "Normal"])
def test_zero_like_labels_are_normal(tmp_path: Path, normal: str) -> None:
    p = write(tmp_path, "l.csv", "t,v,label\n" + "".join(f"{i},{i},{normal if i % 3 else 'x'}\n" for i in range(9)))
    labels = read_csv([p], rate_hz=1.0).parts[0].labels
    assert labels is not None and labels.tolist() == [1, 0, 0] * 3


def test_quoted_cells_and_blank_lines(tmp_path: Path) -> None:
    p = write(tmp_path, "q.csv", '"time","a"\n0.0,"1.5"\n\n0.1,2\n0.2,3\n\n')
    rec = read_csv([p])
    assert rec.parts[0].values[:, 0].tolist() == [1.5, 2.0, 3.0] and rec.rate_hz == 10.0
    # line numbers count the blank line, as an editor does
    p2 = write(tmp_path, "q2.csv", "time,a\n0.0,1\n\n0.1,x\n")
    assert "q2.csv line 4, column 'a'" in error([p2])


# --------------------------------------------------------------------------- errors


def test_missing_empty_and_header_only(tmp_path: Path) -> None:
    assert "nothere.csv: no such file" in error([tmp_path / "nothere.csv"])
    assert "empty" in error([write(tmp_path, "e.csv", "")])
    assert "e2.csv: only a header line" in error([write(tmp_path, "e2.csv", "time,a\n\n")])
    (tmp_path / "bin.csv").write_bytes(b"time,a\n0,1\n1,\xff\n")
    assert "bin.csv line 3: not UTF-8" in error([tmp_path / "bin.csv"])


def test_other_separators_are_named(tmp_path: Path) -> None:
    msg = error([write(tmp_path, "eu.csv", "time;a;b\n0;1,5;2\n")])
    assert "eu.csv line 1" in msg and "separated by semicolons" in msg
    msg = error([write(tmp_path, "tab.csv", "time\ta\n0\t1\n")])
    assert "separated by tabs" in msg


def test_unknown_and_duplicate_columns(tmp_path: Path) -> None:
    p = write(tmp_path, "c.csv", "time,ax,ay\n0,1,2\n1,1,2\n")
    msg = error([p], columns=["ax", "az"])
    assert "c.csv" in msg and "'az' is not a column" in msg and "time, ax, ay" in msg
    assert "'tmp' is not a column" in error([p], time_column="tmp")
    assert "--label-column 'lab' is not a column" in error([p], label_column="lab")
    assert "the time column" in error([p], columns=["time"])
    assert "--units names az" in error([p], units={"az": "g"})
    d = write(tmp_path, "d.csv", "time,ax,ax [g]\n0,1,2\n")
    msg = error([d])
    assert "d.csv line 1" in msg and "'ax' appears twice (columns 2 and 3)" in msg


def test_non_numeric_empty_and_non_finite_values(tmp_path: Path) -> None:
    good = [f"{i * 0.1:.1f},{i},{i}" for i in range(20)]
    for bad, expect in (
        ("abc", "'abc' is not a number"),
        ("", "empty cell"),
        ("nan", "'nan' is not a finite"),
        ("-inf", "'-inf' is not a finite"),
    ):
        rows = list(good)
        rows[6] = f"0.6,{bad},5"
        p = write(tmp_path, "v.csv", "time,a,b\n" + "\n".join(rows) + "\n")
        msg = error([p])
        assert "v.csv line 8, column 'a'" in msg and expect in msg, msg
    rows = list(good)
    rows[3] = "0.3,1"
    msg = error([write(tmp_path, "f.csv", "time,a,b\n" + "\n".join(rows) + "\n")])
    assert "f.csv line 5: 2 fields, the header has 3" in msg
    rows = list(good)
    rows[9] = "zz,1,1"
    msg = error([write(tmp_path, "t.csv", "time,a,b\n" + "\n".join(rows) + "\n")])
    assert "t.csv line 11, column 'time'" in msg and "'zz'" in msg
    msg = error([write(tmp_path, "t0.csv", "time,a\nmonday,1\n")])
    assert "t0.csv line 2, column 'time'" in msg and "neither a number" in msg
    msg = error([write(tmp_path, "lab.csv", "time,a,label\n0,1,0\n1,1,\n")])
    assert "lab.csv line 3, column 'label': empty cell" in msg


def test_time_must_increase(tmp_path: Path) -> None:
    rows = [f"{i * 0.1:.1f},{i}" for i in range(10)]
    rows[5], rows[6] = rows[6], rows[5]
    msg = error([write(tmp_path, "o.csv", "time,a\n" + "\n".join(rows) + "\n")])
    assert "o.csv line 8, column 'time'" in msg and "goes back to 0.5" in msg and "sort the file" in msg
    rows = [f"{i * 0.1:.1f},{i}" for i in range(10)]
    rows[4] = rows[3]
    msg = error([write(tmp_path, "r.csv", "time,a\n" + "\n".join(rows) + "\n")])
    assert "r.csv line 6, column 'time'" in msg and "repeats" in msg


def test_gap_is_an_error_unless_split(tmp_path: Path) -> None:
    times = [i * 0.01 for i in range(100)] + [2.0 + i * 0.01 for i in range(100)]
    text = "time,a\n" + "".join(f"{t:.2f},{i}\n" for i, t in enumerate(times))
    p = write(tmp_path, "gap.csv", text)
    msg = error([p])
    assert "gap.csv line 102, column 'time'" in msg and "from 0.99 to 2" in msg
    assert "100 missing samples at 100 Hz" in msg and "--split-gaps" in msg
    rec = read_csv([p], split_gaps=True)
    assert rec.rate_hz == 100.0
    assert [(p.t0, p.n) for p in rec.parts] == [(0.0, 100), (2.0, 100)]
    assert rec.parts[1].values[0, 0] == 100
    assert rec.parts[1].origin == "gap.csv lines 102-201"
    ws = windows(rec, 64, 32)
    assert len(ws) == 4 and set(ws.part.tolist()) == {0, 1}  # no window crosses the gap
    # sample numbers: a jump in the count is a gap too
    s = write(tmp_path, "s.csv", "timestamp,a\n" + "".join(f"{i},{i}\n" for i in [*range(10), *range(15, 25)]))
    assert "s.csv line 12, column 'timestamp'" in error([s], rate_hz=5.0)
    assert [p.n for p in read_csv([s], rate_hz=5.0, split_gaps=True).parts] == [10, 10]


def test_rate_disagreement_and_irregular_sampling(tmp_path: Path) -> None:
    p = write(tmp_path, "r.csv", steady(50, 100.0))
    msg = error([p], rate_hz=50.0)
    assert "--rate-hz 50" in msg and "100 Hz" in msg
    assert read_csv([p], rate_hz=100.5).rate_hz == 100.5  # within 1 %: the given rate
    text = "time,a\n" + "".join(f"{t},{i}\n" for i, t in enumerate([0.0, 0.1, 0.2, 0.21, 0.3, 0.4, 0.5]))
    msg = error([write(tmp_path, "j.csv", text)])
    assert "j.csv line 5, column 'time'" in msg and "steady rate" in msg


def test_several_files(tmp_path: Path) -> None:
    a = write(tmp_path, "a.csv", steady(40, 10.0))
    b = write(tmp_path, "b.csv", steady(30, 10.0, t0=1733200010.0))
    rec = read_csv([a, b])
    assert [p.n for p in rec.parts] == [40, 30] and rec.source == "csv: a.csv, b.csv"
    assert rec.fingerprint == fingerprint_bytes([a.read_bytes(), b.read_bytes()])
    msg = error([b, a])
    assert "a.csv line 2" in msg and "time order" in msg
    c = write(tmp_path, "c.csv", steady(30, 10.0, t0=1733200020.0, cols=3))
    msg = error([a, c])
    assert "c.csv line 1" in msg and "same columns" in msg
    d = write(tmp_path, "d.csv", steady(30, 20.0, t0=1733200020.0))
    msg = error([a, d])
    assert "d.csv" in msg and "same rate" in msg
    # files without a clock (sample numbers) follow each other
    s1 = write(tmp_path, "s1.csv", "timestamp,v\n" + "".join(f"{i},{i}\n" for i in range(20)))
    s2 = write(tmp_path, "s2.csv", "timestamp,v\n" + "".join(f"{i},{i}\n" for i in range(20)))
    rec = read_csv([s1, s2], rate_hz=10.0)
    assert [p.t0 for p in rec.parts] == [0.0, 2.0]


def test_label_options_conflict(tmp_path: Path) -> None:
    p = write(tmp_path, "c.csv", "time,a,label\n0,1,0\n1,1,0\n")
    assert "contradict" in error([p], label_column="label", no_labels=True)


# --------------------------------------------------------------------------- command line


def test_cli_options_give_read_csv_kwargs(tmp_path: Path) -> None:
    ap = argparse.ArgumentParser()
    add_csv_arguments(ap)
    args = ap.parse_args(
        ["--rate-hz", "64", "--columns", "a, b", "--units", "a=g,b=C", "--units", "c=%", "--split-gaps", "--no-labels"]
    )
    assert csv_options(args) == {
        "time_column": None,
        "rate_hz": 64.0,
        "columns": ["a", "b"],
        "label_column": None,
        "normal_label": "0",
        "units": {"a": "g", "b": "C", "c": "%"},
        "split_gaps": True,
        "no_labels": True,
    }
    p = write(tmp_path, "x.csv", "a,b\n1,2\n3,4\n")
    rec = read_csv([p], **{**csv_options(args), "units": {"a": "g"}})
    assert rec.rate_hz == 64.0 and rec.channels == (("a", "g"), ("b", ""))
    for bad in (["--rate-hz", "0"], ["--units", "ax"], ["--columns", "a,,b"]):
        with pytest.raises(SystemExit):
            ap.parse_args(bad)
