"""``python -m distill list models|methods``: what can be built, with its size and cost."""
from __future__ import annotations

import argparse

import torch

from distill.models.base import MODELS, build_model
from distill.models.flops import count_flops, count_params


def parse_size(text: str) -> tuple[int, int]:
    """``"288x800"`` -> (288, 800) (height x width)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 288x800, got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return h, w


def describe_models(size: tuple[int, int] = (288, 800), num_classes: int = 5, lane_slots: int = 4,
                    names: list[str] | None = None) -> list[dict]:
    """One row per registered model (default options): name, parameters, GFLOPs (2·MAC) at ``size``
    and its taps. Models are built on the meta device, so nothing is computed."""
    rows = []
    for name in names or MODELS.names():
        with torch.device("meta"):
            model = build_model(name, num_classes=num_classes, lane_slots=lane_slots)
        taps = {k: (v.channels, v.stride) for k, v in model.feature_info.items()}
        rows.append({"name": name, "params": count_params(model), "flops": count_flops(model, size),
                     "size": list(size), "taps": taps})
    return rows


def format_models(rows: list[dict]) -> str:
    """A plain-text table of :func:`describe_models` rows; taps as name:channels/stride."""
    h, w = rows[0]["size"] if rows else (0, 0)
    header = f"{'model':<22} {'params (M)':>10} {f'GFLOPs@{h}x{w}':>15}  taps (name:channels/stride)"
    lines = [header, "-" * len(header)]
    for r in rows:
        taps = " ".join(f"{k}:{c}/{s}" for k, (c, s) in r["taps"].items())
        lines.append(f"{r['name']:<22} {r['params'] / 1e6:>10.2f} {r['flops'] / 1e9:>15.2f}  {taps}")
    return "\n".join(lines)


def list_methods() -> list[str]:
    """Names of the registered KD methods."""
    import distill.methods  # noqa: F401  (registers every method)
    from distill.methods.base import METHODS

    return METHODS.names()


def run_list(args: argparse.Namespace) -> int:
    if args.what == "models":
        print(f"models at {args.size[0]}x{args.size[1]}, {args.classes} classes, {args.slots} lane slots "
              "(FLOPs = 2·MAC of conv/linear):")
        print(format_models(describe_models(args.size, args.classes, args.slots)))
    else:
        names = list_methods()
        print("\n".join(names) if names else "(no KD methods registered)")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("list", help="list registered models or KD methods",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("what", choices=("models", "methods"), help="what to list")
    p.add_argument("--size", type=parse_size, default="288x800", help="input size HxW for the FLOP count")
    p.add_argument("--classes", type=int, default=5, help="number of classes")
    p.add_argument("--slots", type=int, default=4, help="lane slots (existence head on when > 0)")
    p.set_defaults(func=run_list)
