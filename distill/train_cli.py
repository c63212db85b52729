"""``python -m distill train|distill --config recipes/<name>.yaml [--set key=value ...]``."""
from __future__ import annotations

import argparse
import signal
import sys

from distill.config import ConfigError, load_config
from distill.train_config import TrainConfig


def _load(args: argparse.Namespace) -> TrainConfig:
    overrides = list(args.set or [])
    if getattr(args, "label_teacher", False):
        overrides.append("label_teacher=true")
    if args.out:
        overrides.append(f"out={args.out}")
    return load_config(TrainConfig, args.config, overrides)


def _stop_like_ctrl_c(signum, frame):
    raise KeyboardInterrupt


def _catch_stop_signals() -> None:
    """Ctrl-C, ``kill -INT`` and a scheduler's SIGTERM all save a checkpoint and stop the run.

    SIGINT is set explicitly: a run started in the background (``cmd &``) inherits it ignored.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)


def _run(args: argparse.Namespace, need_methods: bool) -> int:
    from distill.checkpoint import CheckpointError
    from distill.data.sample import DataError
    from distill.train import NonFiniteLoss, train

    try:
        cfg = _load(args)
        if need_methods and not cfg.methods:
            raise ConfigError("`distill` needs a `methods:` list (and a teacher for methods that use one)")
        print(f"training {cfg.model.name} -> {cfg.out}", file=sys.stderr)
        _catch_stop_signals()
        metrics = train(cfg)
    except (ConfigError, CheckpointError, DataError, NonFiniteLoss, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print("final: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    print(f"wrote {cfg.out}/last.pt, {cfg.out}/best.pt, {cfg.out}/log.jsonl, {cfg.out}/curves.png, {cfg.out}/config.yaml")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    for name, helptext, need in (("train", "train a teacher, a student baseline or a label teacher", False),
                                 ("distill", "distill a student from a teacher with KD methods", True)):
        p = sub.add_parser(name, help=helptext, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.add_argument("--config", required=True, help="recipe YAML (see recipes/)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. --set optim.lr=0.01")
        p.add_argument("--out", help="output folder (overrides the recipe's out)")
        if name == "train":
            p.add_argument("--label-teacher", action="store_true",
                           help="train LGAD's label teacher (input = one-hot label map)")
        p.set_defaults(func=lambda a, need=need: _run(a, need))
