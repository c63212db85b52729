"""``python -m distill train|distill --config recipes/<name>.yaml [--set key=value ...]``.

Errors reach the user through the shared boundary in ``runtime.cli``. With
``data.options.skip_bad: true`` the run ends (also when interrupted or failing) with a table of
what was skipped, printed and written to ``<out>/skipped.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from distill.config import ConfigError, load_config
from distill.train_config import TrainConfig
from runtime.cli import catch_stop_signals

SKIP_DIR = ".skipped"          # per-process skip logs while the run is going (see distill.data.dataset)


def _load(args: argparse.Namespace) -> TrainConfig:
    overrides = list(args.set or [])
    if getattr(args, "label_teacher", False):
        overrides.append("label_teacher=true")
    if args.out:
        overrides.append(f"out={args.out}")
    return load_config(TrainConfig, args.config, overrides)


def _catch_stop_signals() -> None:
    """Ctrl-C, ``kill -INT`` and SIGTERM raise ``KeyboardInterrupt`` (kept for ``distill.qat_cli``)."""
    catch_stop_signals()


def check_device(device: str) -> None:
    """Refuse a ``device`` torch cannot parse or that is not here, naming the config key."""
    import torch

    if device == "auto":
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device: {device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device: {device!r} asked for, but torch sees no CUDA GPU here; "
                              f"use device: cpu (or auto)")
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"device: {device!r} asked for, but only {count} CUDA GPU(s) are visible "
                              f"(cuda:0..cuda:{count - 1})")
    elif dev.type not in ("cpu", "mps", "xpu"):
        raise ConfigError(f"device: {device!r} is not supported here; use auto, cpu or cuda[:N]")


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") in ("", "0")


class SkipLog:
    """Collects what ``skip_bad`` readers skip, in every process of this run, under ``<out>/.skipped``."""

    def __init__(self, out: Path) -> None:
        from distill.data.dataset import SKIP_LOG_ENV

        self.dir = out / SKIP_DIR
        self.env = SKIP_LOG_ENV
        if _is_main_rank():
            shutil.rmtree(self.dir, ignore_errors=True)       # left by a killed run
        self.dir.mkdir(parents=True, exist_ok=True)
        os.environ[self.env] = str(self.dir)

    def records(self) -> list[dict]:
        rows = []
        for f in sorted(self.dir.glob("skipped-*.jsonl")):
            for line in f.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:       # a line cut by a killed worker
                    pass
        return rows

    def finish(self, out: Path) -> None:
        """Print the table and write ``<out>/skipped.json`` (main rank only); remove the logs."""
        from distill.data.check import format_report, skip_report, write_report

        os.environ.pop(self.env, None)
        if not _is_main_rank():
            return
        report = skip_report(self.records(), f"skip_bad: samples skipped in {out}")
        shutil.rmtree(self.dir, ignore_errors=True)
        if report.total:
            print(format_report(report), file=sys.stderr)
        else:
            print("skip_bad: no sample was skipped", file=sys.stderr)
        print(f"wrote {write_report(report, out / 'skipped.json')}", file=sys.stderr)


def _run(args: argparse.Namespace, need_methods: bool) -> int:
    from distill.train import train

    cfg = _load(args)
    if need_methods and not cfg.methods:
        raise ConfigError("`distill` needs a `methods:` list (and a teacher for methods that use one)")
    check_device(cfg.device)
    print(f"training {cfg.model.name} -> {cfg.out}", file=sys.stderr)
    skips = SkipLog(Path(cfg.out)) if cfg.data.options.get("skip_bad") else None
    _catch_stop_signals()           # Ctrl-C / SIGTERM save a checkpoint and stop (the Trainer catches it)
    try:
        metrics = train(cfg)
    except KeyboardInterrupt:          # the Trainer saved last.pt and said so
        return 130
    finally:
        if skips is not None:
            skips.finish(Path(cfg.out))
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
