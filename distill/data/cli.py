"""``python -m distill data synth``: write the synthetic dataset in the CULane layout."""
from __future__ import annotations

import argparse
from pathlib import Path

from distill.data.synth import SceneConfig, write_culane


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
    if len(vals) != 3:
        raise argparse.ArgumentTypeError(f"split must be three fractions like 0.8,0.1,0.1, got {text!r}")
    return vals  # type: ignore[return-value]


def run_synth(args: argparse.Namespace) -> int:
    w, h = args.size
    cfg = SceneConfig(width=w, height=h)
    print(f"synth: out={args.out} num={args.num} size={w}x{h} seed={args.seed} split={args.split} "
          f"workers={args.workers}")
    out = write_culane(args.out, args.num, args.seed, cfg, args.split, args.workers, args.overwrite)
    print(f"wrote {args.num} scenes to {out} (lists in {out / 'list'}, marking masks in {out / 'marking'})")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    data = subparsers.add_parser("data", help="dataset tools", formatter_class=fmt)
    sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    sub.required = True
    p = sub.add_parser("synth", formatter_class=fmt,
                       help="generate the synthetic road-scene dataset in the CULane layout")
    p.add_argument("--out", type=Path, required=True, help="output folder (must be empty unless --overwrite)")
    p.add_argument("--num", type=int, default=1000, help="number of scenes")
    p.add_argument("--size", type=parse_size, default="1640x590", help="image size WIDTHxHEIGHT")
    p.add_argument("--seed", type=int, default=0, help="dataset seed; scene i uses (seed, i)")
    p.add_argument("--split", type=_parse_split, default="0.8,0.1,0.1", help="train,val,test fractions")
    p.add_argument("--workers", type=int, default=1, help="rendering processes")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    p.set_defaults(func=run_synth)
