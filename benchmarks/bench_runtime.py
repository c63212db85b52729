"""The runtime on a 1640x590 drive: whole-pipeline FPS, per-stage latency, pipelined vs
inference-only throughput, pre-processing (ours vs plain NumPy) and post-processing (full map vs
fused peaks), side by side in one run.

    python -m benchmarks.bench_runtime [--quick] [--model model.onnx ...] [--frames N] [--threads T]

Without ``--model`` it builds two stand-in ONNX models at the standard 288x800 input (the tests'
1x1-conv colour model: full softmax map + existence, and the same with fused per-row peaks), so
the host-side stages are measured on real shapes with negligible inference; pass exported
lanekd students to measure real inference. The video is the synthetic drive from
``demo.video.make_video``. Writes benchmarks/out/bench_runtime.json (and .png).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


from runtime.bench import bench, latency_summary
from runtime.metadata import ModelMeta, culane_rows, sidecar_path
from runtime.pipeline import load_model
from runtime.preprocess import Preprocessor, preprocess_reference
from runtime.sources import open_source
from runtime.standin import build_standin

OUT = Path(__file__).resolve().parent / "out"


def _time(fn, reps: int) -> dict[str, float]:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return latency_summary(ts)


def stand_in_models(folder: Path) -> list[Path]:
    """Full-map and fused-peaks stand-ins at 288x800 for a 1640x590 frame (CULane rows)."""
    kw = dict(in_hw=(288, 800), frame_hw=(590, 1640), crop_top=0, rows=culane_rows())
    return [build_standin(folder / "full_map.onnx", **kw), build_standin(folder / "fused_peaks.onnx", fused_post=True, **kw)]


def stage_micro(models: list[Path], video: Path, frames: int) -> dict:
    """Pre-processing ours vs NumPy, and post-processing full map vs fused, on real frames."""
    src = open_source(str(video))
    imgs = [f.image for _, f in zip(range(frames), src)]
    src.close()
    meta = ModelMeta.load(sidecar_path(models[0]))
    pre = Preprocessor(meta)
    reps = max(1, 100 // len(imgs))
    ours = _time(lambda: [pre(im) for im in imgs], reps)
    naive = _time(lambda: [preprocess_reference(im, meta) for im in imgs], reps)
    per = len(imgs)
    result = {"preprocess_ms": {"ours": ours["mean"] / per, "numpy": naive["mean"] / per}}
    # post-processing on real model outputs for the same frames
    post = {}
    for path in models:
        lm = load_model(path)
        try:
            g = lm.pre.geometry(*imgs[0].shape[:2])
            outs = [{k: v.copy() for k, v in lm.backend.infer({lm.pre.input_name: lm.pre(im)}).items()} for im in imgs]
            label = "fused" if lm.decoder.fused else "full_map"
            t = _time(lambda: [lm.decoder(o, g) for o in outs], reps)
            post[label] = t["mean"] / per
        finally:
            lm.close()
    result["postprocess_ms"] = post
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few frames only (a smoke run)")
    ap.add_argument("--model", action="append", default=None, help="exported model(s); default: stand-ins")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    frames, warmup = (20, 3) if args.quick else (args.frames, args.warmup)
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as d:
        d = Path(d)
        from demo.video import make_video

        video = make_video(d / "drive.mp4", seconds=(frames + warmup) / 30.0, fps=30.0, size=(1640, 590),
                           progress=False)
        models = [Path(m) for m in args.model] if args.model else stand_in_models(d)
        report = bench(models, str(video), frames=frames, warmup=warmup, threads=args.threads,
                       png_path=OUT / "bench_runtime.png", quiet=False)
        report["micro"] = stage_micro(models, video, min(frames, 30))
        report["stand_in_models"] = not args.model
    m = report["micro"]
    print(f"\npre-processing per 1640x590 frame: ours {m['preprocess_ms']['ours']:.3f} ms, "
          f"plain NumPy {m['preprocess_ms']['numpy']:.3f} ms "
          f"({m['preprocess_ms']['numpy'] / m['preprocess_ms']['ours']:.1f}x)")
    print("post-processing per frame: " + ", ".join(f"{k} {v:.3f} ms" for k, v in m["postprocess_ms"].items()))
    for r in report["models"]:
        print(f"{Path(r['model']).name}: pipelined {r['pipelined_fps']:.1f} FPS vs inference-only "
              f"{r['infer_only_fps']:.1f} FPS = {r['pipelined_vs_infer_only']:.2f}x; without the video "
              f"{r['pipelined_no_video_fps']:.1f} FPS = {r['pipelined_no_video_fps'] / r['infer_only_fps']:.2f}x")
    (OUT / "bench_runtime.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {OUT / 'bench_runtime.json'} and {OUT / 'bench_runtime.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
