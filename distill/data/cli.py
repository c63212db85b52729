"""``python -m distill data synth|check``: write the synthetic dataset (CULane layout), or check a
dataset on disk and report every problem in one table."""
from __future__ import annotations

import argparse
from pathlib import Path

from distill.data.synth import SceneConfig, write_culane
from runtime.cli import non_negative_int, positive_int


def parse_size(text: str) -> tuple[int, int]:
    """``"1640x590"`` -> (width, height)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1640x590 (width x height), got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return w, h


def _parse_split(text: str) -> tuple[float, float, float]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"split must be three fractions like 0.8,0.1,0.1, got {text!r}") from None
    if len(vals) != 3 or min(vals) < 0 or abs(sum(vals) - 1) > 1e-6:
        raise argparse.ArgumentTypeError(f"split must be three fractions >= 0 summing to 1 like 0.8,0.1,0.1, "
                                         f"got {text!r}")
    return vals  # type: ignore[return-value]


def run_synth(args: argparse.Namespace) -> int:
    w, h = args.size
    cfg = SceneConfig(width=w, height=h)
    print(f"synth: out={args.out} num={args.num} size={w}x{h} seed={args.seed} split={args.split} "
          f"workers={args.workers}")
    out = write_culane(args.out, args.num, args.seed, cfg, args.split, args.workers, args.overwrite)
    print(f"wrote {args.num} scenes to {out} (lists in {out / 'list'}, marking masks in {out / 'marking'})")
    return 0


def run_check_cmd(args: argparse.Namespace) -> int:
    from distill.data.check import parse_options, run_check

    print(f"check: kind={args.kind} root={args.root} splits={args.split or 'all present'} "
          f"options={args.option or {}}")
    kind = "culane" if args.kind == "synthetic" else args.kind
    return run_check(kind, args.root, args.split, parse_options(args.option), args.json, args.first,
                     progress=not args.no_progress, workers=args.workers)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    data = subparsers.add_parser("data", help="dataset tools", formatter_class=fmt)
    sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    sub.required = True
    p = sub.add_parser("synth", formatter_class=fmt,
                       help="generate the synthetic road-scene dataset in the CULane layout")
    p.add_argument("--out", type=Path, required=True, help="output folder (must be empty unless --overwrite)")
    p.add_argument("--num", type=positive_int, default=1000, help="number of scenes")
    p.add_argument("--size", type=parse_size, default="1640x590", help="image size WIDTHxHEIGHT")
    p.add_argument("--seed", type=non_negative_int, default=0, help="dataset seed; scene i uses (seed, i)")
    p.add_argument("--split", type=_parse_split, default="0.8,0.1,0.1", help="train,val,test fractions")
    p.add_argument("--workers", type=positive_int, default=1, help="rendering processes")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    p.set_defaults(func=run_synth)

    from distill.data.dataset import DATASET_KINDS
    c = sub.add_parser("check", formatter_class=fmt,
                       help="walk a dataset once and report every problem in one table (exit 1 if any is fatal)",
                       description="Reads every sample of every split with the dataset's reader and reports "
                                   "unreadable images, labels that do not parse or have the wrong size, list "
                                   "entries that do not exist, more lanes than lane slots and lanes that reach "
                                   "no sampled row. Synthetic data (data synth) is --kind culane.")
    c.add_argument("--kind", required=True, choices=(*DATASET_KINDS, "synthetic"),
                   help="dataset format (synthetic = culane: data synth writes the CULane layout)")
    c.add_argument("--root", type=Path, required=True, help="dataset root folder")
    c.add_argument("--split", action="append", default=None,
                   help="split name or list/label file; repeat for several (default: every split present)")
    c.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="reader option, as data.options in a recipe (e.g. line_width=16)")
    c.add_argument("--first", type=positive_int, default=3, help="files listed per problem kind")
    c.add_argument("--json", type=Path, default=None, help="also write the full report as JSON here")
    c.add_argument("--workers", type=positive_int, default=1, help="processes that load the samples")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=run_check_cmd)
