"""ONNX Runtime CPU latency: FP32 vs INT8 (QDQ) vs PyTorch eager, per student, on synthetic scenes.

    python -m benchmarks.bench_export [--quick] [--checkpoints a.pt b.pt] [--variants default reduce_range ...]

Without checkpoints each student is built with random weights at the given size (latency is
weight-independent, INT8 agreement is not: pass trained checkpoints for meaningful agreement).
Writes benchmarks/out/bench_export.json.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from runtime.sinks import write_json

OUT = Path(__file__).resolve().parent / "out" / "bench_export.json"
STUDENTS = ("erfnet", "enet", "resnet18_fcn", "resnet34_fcn", "mobilenetv2_deeplab")
VARIANTS = {
    "default": {},                                      # per-channel, uint8 activations, entropy
    "reduce_range": {"reduce_range": True},
    "s8": {"activation_type": "int8"},
    "minmax": {"method": "minmax"},
    "no_resize": {"exclude_ops": ("Resize", "ConvTranspose")},
}


def _random_checkpoint(name: str, size: tuple[int, int], path: Path) -> Path:
    import torch

    from distill.checkpoint import save_checkpoint
    from distill.data.sample import DataSpec
    from distill.models.base import build_model

    spec = DataSpec.lanes(4)
    kwargs = {"decoder": "interp"} if name == "enet" else {}
    torch.manual_seed(0)
    model = build_model(name, num_classes=spec.num_classes, lane_slots=spec.lane_slots, **kwargs)
    return save_checkpoint(path, {"model_name": name, "model_kwargs": {"num_classes": 5, "lane_slots": 4, **kwargs},
                                  "spec": {"task": "lanes", "class_names": list(spec.class_names), "lane_slots": 4},
                                  "input_size": list(size), "crop_top": 0, "orig_size": [590, 1640],
                                  "state_dict": model.state_dict()})


def _time(fn, feeds, warmup: int, iters: int) -> float:
    """Median milliseconds per frame over ``iters`` runs (cycling through the feeds)."""
    for i in range(warmup):
        fn(feeds[i % len(feeds)])
    ts = []
    for i in range(iters):
        t = time.perf_counter()
        fn(feeds[i % len(feeds)])
        ts.append((time.perf_counter() - t) * 1e3)
    return float(np.median(ts))


def bench_model(ckpt: Path, work: Path, args: argparse.Namespace) -> dict:
    import torch

    from export.artifacts import read_meta
    from export.onnx import export_onnx
    from export.quantize import quantize_int8
    from export.verify import OrtRunner, TorchRunner, compare, model_inputs, synthetic_frames

    fp32 = export_onnx(ckpt, work / f"{ckpt.stem}.onnx", verify_frames=2)
    meta = read_meta(fp32)
    frames = synthetic_frames(args.frames, seed=7)
    feeds = model_inputs(meta, frames)
    torch.set_num_threads(args.threads)
    torch_run = TorchRunner(ckpt, meta)
    ort32 = OrtRunner(fp32, threads=args.threads)
    row = {"model": meta.model, "size": [meta.geometry.in_h, meta.geometry.in_w], "threads": args.threads,
           "torch_ms": _time(torch_run, feeds, args.warmup, args.iters),
           "ort_fp32_ms": _time(ort32, feeds, args.warmup, args.iters), "int8": {}}
    ref = [ort32(f) for f in feeds]
    for variant in args.variants:
        q = quantize_int8(fp32, work / f"{ckpt.stem}_{variant}.onnx", "synthetic", calib_frames=args.calib,
                          verify_frames=0, **VARIANTS[variant])
        run = OrtRunner(q, threads=args.threads)
        rep = compare(meta, ref, [run(f) for f in feeds], "int8")
        ms = _time(run, feeds, args.warmup, args.iters)
        row["int8"][variant] = {"ms": ms, "speedup_vs_fp32": row["ort_fp32_ms"] / ms,
                                "argmax_agreement": rep.argmax_agreement, "lane_count_match": rep.lane_count_match}
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="erfnet only, 144x400, few iterations")
    p.add_argument("--checkpoints", nargs="*", default=None, help="trained checkpoints (default: random students)")
    p.add_argument("--models", nargs="*", default=list(STUDENTS))
    p.add_argument("--size", default="288x800")
    p.add_argument("--variants", nargs="*", default=["default"], choices=list(VARIANTS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--calib", type=int, default=32)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.size, args.frames, args.calib, args.warmup, args.iters = ["erfnet"], "144x400", 2, 4, 1, 3
    size = tuple(int(v) for v in args.size.split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ckpts = [Path(c) for c in args.checkpoints] if args.checkpoints else [
            _random_checkpoint(m, size, work / f"{m}.pt") for m in args.models]
        for c in ckpts:
            rows.append(bench_model(c, work, args))
    print(f"{'model':<20} {'size':<8} {'torch ms':>9} {'ORT fp32':>9} {'variant':<13} {'INT8 ms':>8} "
          f"{'x fp32':>7} {'x torch':>8} {'argmax':>8}")
    for r in rows:
        for v, s in r["int8"].items():
            print(f"{r['model']:<20} {r['size'][0]}x{r['size'][1]:<4} {r['torch_ms']:>9.1f} {r['ort_fp32_ms']:>9.1f} "
                  f"{v:<13} {s['ms']:>8.1f} {s['speedup_vs_fp32']:>7.2f} {r['torch_ms'] / s['ms']:>8.2f} "
                  f"{s['argmax_agreement']:>8.4f}")
    print(f"wrote {write_json(args.out, {'args': vars(args), 'rows': rows})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
