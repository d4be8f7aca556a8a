"""``edgeline-train``: models from your own data (docs/training.md).

    edgeline-train csv FILE... [csv options] --name NAME --out DIR [training options]
    edgeline-train raw --config gateway.toml --device D (--since T --to T | --last S) --name NAME --out DIR [...]
    edgeline-train evaluate --model M.json FILE... [csv options] [--scores replay.csv] --out DIR

Also ``python -m tools.train`` (which keeps the committed models' targets: all, vibration,
basic_motions). The data is read and checked first, so a bad file is reported without
TensorFlow; training itself needs .venv-train (tools/setup.sh --train).

Exit status: 0 done; 1 the data cannot be used (the message names the file, row, column or
option and what to do); 2 bad usage, or TensorFlow missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from gateway.errors import GatewayError
from gateway.recording import Recording

LEGACY_TARGETS = ("all", "vibration", "basic_motions")
NEEDS_TF = "edgeline-train needs TensorFlow: run tools/setup.sh --train, then .venv-train/bin/edgeline-train ..."


class UsageError(Exception):
    """Bad options (exit 2)."""


# -- options ----------------------------------------------------------------------------------


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or any(not 0 < f < 1 for f in parts) or abs(sum(parts) - 1) > 1e-6:
        raise argparse.ArgumentTypeError(
            f"expected three fractions TRAIN,VAL,TEST, each between 0 and 1, adding up to 1 (e.g. 0.6,0.2,0.2), got {text!r}"
        )
    return parts[0], parts[1], parts[2]


def _rate(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"a fraction of normal windows between 0 and 1 (e.g. 0.001), got {text!r}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"a whole number >= 1, got {text!r}")
    return v


def _time(text: str) -> float:
    """Unix time in seconds, or an ISO 8601 date/time (UTC unless it says otherwise)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a Unix time in seconds or an ISO 8601 time such as 2026-12-01T08:00Z, got {text!r}"
        ) from None
    if dt.tzinfo is None:
        from datetime import UTC

        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The options csv and raw share."""
    g = p.add_argument_group("model")
    g.add_argument("--name", required=True, help="model name: files <name>_float32/int8.tflite/.json, <name>_report...")
    g.add_argument("--out", required=True, type=Path, help="output directory (created)")
    g.add_argument("--version", default="1.0.0", help="model version in the manifest (default 1.0.0)")
    g.add_argument("--window", type=_positive_int, help="window length, samples (default: from the sample rate)")
    g.add_argument("--hop", type=_positive_int, help="hop between windows, samples (default: half the window)")
    g.add_argument("--bands", type=_positive_int, help="number of frequency bands (default: from the sample rate)")
    g.add_argument(
        "--mode",
        choices=("auto", "unsupervised", "supervised"),
        default="auto",
        help="auto (default): supervised when labels mark anomalies in the train split, else unsupervised",
    )
    g.add_argument(
        "--false-alarm-rate",
        type=_rate,
        default=0.001,
        help="target fraction of normal windows over the threshold (default 0.001)",
    )
    g.add_argument(
        "--split",
        type=_fractions,
        default=(0.6, 0.2, 0.2),
        help="TRAIN,VAL,TEST fractions by time (default 0.6,0.2,0.2)",
    )
    g.add_argument("--seed", type=int, default=1, help="random seed (default 1): same seed, same machine, same files")
    g.add_argument("--epochs", type=_positive_int, default=200, help="most epochs (default 200; early stopping)")
    g.add_argument(
        "--channels-as",
        type=lambda s: [x.strip() for x in s.split(",")],
        metavar="NAME,...",
        help="rename the channels (in column order) to the device's channel names, so the model matches it",
    )


def _setup_csv(p: argparse.ArgumentParser) -> None:
    from gateway.csvrec import add_csv_arguments

    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="CSV files, in time order")
    add_csv_arguments(p)
    add_train_arguments(p)


def _setup_raw(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path, help="the gateway's configuration (gateway.toml)")
    p.add_argument("--device", required=True, help="the device whose raw log to learn from")
    p.add_argument("--since", type=_time, help="start: Unix time (s) or ISO 8601")
    p.add_argument("--to", type=_time, help="end: Unix time (s) or ISO 8601 (default: now)")
    p.add_argument("--last", type=float, help="the last SECONDS up to --to (instead of --since)")
    add_train_arguments(p)


def _setup_evaluate(p: argparse.ArgumentParser) -> None:
    from tools.train.evaluate import add_evaluate_arguments

    add_evaluate_arguments(p)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgeline-train",
        description="Train an anomaly model on your own data (CSV files or the gateway's raw log), "
        "or evaluate one. See docs/training.md.",
        epilog="python -m tools.train all|vibration|basic_motions [--seed N] [--out DIR] trains the "
        "committed models (docs/models.md).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    _setup_csv(sub.add_parser("csv", help="train on CSV files"))
    _setup_raw(sub.add_parser("raw", help="train on a device's raw log (the gateway's own recording)"))
    _setup_evaluate(sub.add_parser("evaluate", help="evaluate a model on a recording beside naive baselines"))
    return p


# -- reading ----------------------------------------------------------------------------------


def _read_csv(args: argparse.Namespace) -> Recording:
    from gateway.csvrec import csv_options, read_csv

    return read_csv(args.files, **csv_options(args))


def _read_raw(args: argparse.Namespace) -> Recording:
    from gateway import config as config_mod
    from gateway.rawrec import read_rawlog

    if (args.since is None) == (args.last is None):
        raise UsageError("give the time range as --since T [--to T] or as --last SECONDS [--to T]")
    t_to = args.to if args.to is not None else time.time()
    t_from = args.since if args.since is not None else t_to - args.last
    if not t_from < t_to:
        raise UsageError(f"the range is empty: --since {t_from} is not before --to {t_to}")
    cfg = config_mod.load(args.config)
    ring = None
    if cfg.encryption is not None:
        from gateway.atrest import open_keyring

        ring = open_keyring(cfg.encryption)
    try:
        return read_rawlog(Path(cfg.gateway.data_dir), args.device, t_from, t_to, keys=ring)
    finally:
        if ring is not None:
            ring.close()


# -- commands ---------------------------------------------------------------------------------


def _train(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from tools.train import user

    rec = _read_csv(args) if args.command == "csv" else _read_raw(args)
    if args.channels_as:
        rec = user.rename_channels(rec, args.channels_as)
    opts = user.TrainOptions(
        name=args.name,
        out=args.out,
        window=args.window,
        hop=args.hop,
        bands=args.bands,
        mode=args.mode,
        far=args.false_alarm_rate,
        split=args.split,
        seed=args.seed,
        epochs=args.epochs,
        version=args.version,
    )
    prep = user.prepare(rec, opts)
    if importlib.util.find_spec("tensorflow") is None:
        print(NEEDS_TF, file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    user.train(prep, opts, command="edgeline-train " + shlex.join(argv))
    md = args.out / f"{args.name}_report.md"
    print(md.read_text(encoding="utf-8"), end="")
    return 0


def _evaluate(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from tools.train.evaluate import run_evaluate

    return run_evaluate(args)


def _legacy(argv: Sequence[str]) -> int:
    """``python -m tools.train all|vibration|basic_motions``: the committed models (docs/models.md)."""
    from tools.train.common import MODELS_DIR

    p = argparse.ArgumentParser(prog="python -m tools.train", description="Train and export the committed models.")
    p.add_argument("target", choices=LEGACY_TARGETS)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=MODELS_DIR, help="output folder (default: models/)")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if importlib.util.find_spec("tensorflow") is None:
        print(
            f"python -m tools.train {args.target} needs TensorFlow: run tools/setup.sh --train, then "
            f".venv-train/bin/python -m tools.train {args.target} ...",
            file=sys.stderr,
        )
        return 2
    if args.target in ("all", "vibration"):
        from tools.train import vibration

        vibration.train(args.seed, args.out)
    if args.target in ("all", "basic_motions"):
        from tools.train import basic_motions

        basic_motions.train(args.seed, args.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in LEGACY_TARGETS:
        return _legacy(args_list)
    args = build_parser().parse_args(args_list)
    handler = _evaluate if args.command == "evaluate" else _train
    try:
        return handler(args, args_list)
    except UsageError as exc:
        print(f"edgeline-train {args.command}: {exc}", file=sys.stderr)
        return 2
    except (GatewayError, OSError) as exc:
        print(f"edgeline-train {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
