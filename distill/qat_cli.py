"""``python -m distill qat --config recipes/<name>_qat.yaml`` and ``python -m distill qat-export CKPT OUT``.

``qat`` fine-tunes a trained student as INT8 (torchao PT2E fake quantisation, KD against the FP32
teacher); Ctrl-C / SIGTERM save ``last.pt`` and the same command resumes, as for every lanekd run.
``qat-export`` turns the resulting checkpoint into a verified Q/DQ ONNX with its sidecar.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distill.train_cli import _catch_stop_signals, check_device


def _run_qat(args: argparse.Namespace) -> int:
    from distill.qat import load_qat_config, qat

    overrides = list(args.set or []) + ([f"out={args.out}"] if args.out else [])
    cfg = load_qat_config(args.config, overrides)
    check_device(cfg.device)
    print(f"qat ({cfg.qat.target}) {cfg.qat.student} -> {cfg.out}", file=sys.stderr)
    _catch_stop_signals()
    try:
        metrics = qat(cfg)
    except KeyboardInterrupt:          # the Trainer saved last.pt and said so
        return 130
    print("final: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    print(f"wrote {cfg.out}/last.pt, {cfg.out}/best.pt, {cfg.out}/log.jsonl, {cfg.out}/qat.yaml")
    print(f"export: python -m distill qat-export {cfg.out}/best.pt {Path(cfg.out) / 'model_int8.onnx'}")
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from export.qat import export_qat
    from runtime.metadata import sidecar_path

    frames = None if args.frames == "synthetic" else args.frames
    out = export_qat(args.checkpoint, args.out, frames=frames, verify_frames=args.verify_frames, opset=args.opset,
                     fused_pre=args.fused_pre, fused_post=args.fused_post, quiet=False)
    print(f"wrote {out}\nwrote {sidecar_path(out)}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser("qat", help="quantisation-aware distillation: fine-tune a trained student as INT8",
                       formatter_class=fmt)
    p.add_argument("--config", required=True, help="QAT recipe YAML (see recipes/*qat*.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. --set qat.target=cpu")
    p.add_argument("--out", help="output folder (overrides the recipe's out)")
    p.set_defaults(func=_run_qat)

    p = sub.add_parser("qat-export", help="QAT checkpoint -> verified INT8 Q/DQ ONNX + model.json",
                       formatter_class=fmt)
    p.add_argument("checkpoint", help="a checkpoint written by `python -m distill qat`")
    p.add_argument("out", help="output .onnx (its folder must exist)")
    p.add_argument("--frames", default="synthetic", help="verification frames: folder, video or 'synthetic'")
    p.add_argument("--verify-frames", type=int, default=8, help="frames compared with the fake-quantised model")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (17 or 18)")
    p.add_argument("--fused-pre", action="store_true", help="uint8 BGR NHWC input; the graph normalises")
    p.add_argument("--fused-post", action="store_true", help="output per-row lane peaks (or a class map)")
    p.set_defaults(func=_run_export)
