"""The ``run``, ``bench`` and ``doctor`` subcommands of ``python -m runtime``: thin wrappers over
``runtime.pipeline.run``, ``runtime.bench.bench`` and ``runtime.doctor.doctor``."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from runtime.backends.base import BACKENDS, BackendError
from runtime.cli import non_negative_int, positive_int
from runtime.metadata import MetadataError
from runtime.sinks import SinkError
from runtime.sources import SourceError

_FMT = argparse.ArgumentDefaultsHelpFormatter
_EXPECTED = (SourceError, SinkError, MetadataError, BackendError, FileNotFoundError, ValueError)


def _backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="auto", choices=["auto", *BACKENDS],
                   help="inference backend; auto picks it from the model suffix")
    p.add_argument("--providers", nargs="+", default=None,
                   help="onnxruntime providers in order (cpu, cuda, tensorrt); default: CUDA if available, then CPU")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="intra-op threads for the backend (default: its own)")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("run", help="run a model on a video, camera, stream or images",
                              formatter_class=_FMT, description=_run_cmd.__doc__)
    p.add_argument("--model", required=True, help="model.onnx / model.engine / model.pt2 (sidecar .json beside it)")
    p.add_argument("--source", required=True, help="video file, camera index, image folder or glob, rtsp:// or http:// URL")
    p.add_argument("--out", default=None, help="annotated video (mp4v)")
    p.add_argument("--jsonl", default=None, help="per-frame lanes in original-frame coordinates")
    p.add_argument("--summary", default=None, help="summary JSON (frames, drops, FPS, per-stage latency)")
    _backend_args(p)
    p.add_argument("--show", action="store_true", help="show the annotated frames in a window (needs a display)")
    p.add_argument("--max-frames", type=positive_int, default=None, help="stop after this many frames")
    p.add_argument("--max-corrupt", type=non_negative_int, default=30,
                   help="unreadable frames in a row that end the run")
    p.add_argument("--live", choices=["auto", "yes", "no"], default="auto",
                   help="newest-frame-wins reading (auto: for cameras and streams)")
    p.add_argument("--no-hud", action="store_true", help="do not draw the FPS / latency overlay")
    p.set_defaults(func=_run_cmd)

    b = subparsers.add_parser("bench", help="per-stage latency and FPS of one or more models",
                              formatter_class=_FMT, description=_bench_cmd.__doc__)
    b.add_argument("--model", action="append", required=True, help="model to benchmark; repeat to compare")
    b.add_argument("--source", required=True, help="a video file or image folder (real frames)")
    b.add_argument("--frames", type=positive_int, default=200, help="timed frames per model")
    b.add_argument("--warmup", type=non_negative_int, default=20, help="untimed frames first")
    _backend_args(b)
    b.add_argument("--backends", default=None, metavar="LIST",
                   help="'all' (every backend available here that runs the model files) or a comma list "
                        "(e.g. onnxruntime,openvino): each model on each, side by side, the winner named")
    b.add_argument("--rounds", type=positive_int, default=3,
                   help="with --backends: interleaved timing rounds (the median is reported)")
    b.add_argument("--json", default=None, help="write the report here")
    b.add_argument("--png", default=None, help="write the chart here")
    b.add_argument("--no-pipelined", action="store_true", help="skip the threaded-pipeline throughput run")
    b.set_defaults(func=_bench_cmd)

    d = subparsers.add_parser("doctor", help="which backends, providers and devices are available",
                              formatter_class=_FMT, description=_doctor_cmd.__doc__)
    d.add_argument("--json", action="store_true", help="print the report as JSON")
    d.set_defaults(func=_doctor_cmd)


def _fail(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


def _run_cmd(args: argparse.Namespace) -> int:
    """Run a model over a source; write the annotated video, lane JSONL and summary asked for."""
    from runtime.pipeline import run

    live = {"auto": None, "yes": True, "no": False}[args.live]
    print(f"run: model={args.model} source={args.source} backend={args.backend} providers={args.providers} "
          f"threads={args.threads} out={args.out} jsonl={args.jsonl} summary={args.summary}", file=sys.stderr)
    try:
        s = run(args.model, args.source, out=args.out, jsonl=args.jsonl, summary=args.summary,
                backend=args.backend, providers=args.providers, threads=args.threads, show=args.show,
                max_frames=args.max_frames, max_corrupt=args.max_corrupt, live=live, hud=not args.no_hud,
                verbose=True)
    except _EXPECTED as exc:
        return _fail(exc)
    lat = s["latency_ms"]
    stages = "  ".join(f"{k} {v['mean']:.2f}" for k, v in lat.items() if v.get("n"))
    print(f"{s['frames']} frames ({s['frames_decoded']} decoded, {s['dropped']} dropped, {s['corrupt']} corrupt) "
          f"in {s['wall_s']:.1f} s: {s['fps']:.1f} FPS; mean ms: {stages}")
    for item in s.get("source", {}).get("corrupt_files", []):
        print(f"corrupt: {item}")
    print(f"ended: {s['end_reason']}")
    for kind, path in s["outputs"].items():
        if path:
            print(f"wrote {kind}: {path}")
    if s["error"]:
        print(f"error: {s['error']}", file=sys.stderr)
        return 1
    return 0


def _bench_cmd(args: argparse.Namespace) -> int:
    """Time decode, preprocess, inference, postprocess, draw and write per model on real frames."""
    from runtime.bench import bench

    print(f"bench: models={args.model} source={args.source} frames={args.frames} warmup={args.warmup} "
          f"backend={args.backend} providers={args.providers} threads={args.threads}", file=sys.stderr)
    try:
        r = bench(args.model, args.source, frames=args.frames, warmup=args.warmup, backend=args.backend,
                  providers=args.providers, threads=args.threads, json_path=args.json, png_path=args.png,
                  pipelined=not args.no_pipelined, backends=args.backends, rounds=args.rounds)
    except _EXPECTED as exc:
        return _fail(exc)
    for key in ("json", "png"):
        if r.get(key):
            print(f"wrote {key}: {r[key]}")
    return 0


def _doctor_cmd(args: argparse.Namespace) -> int:
    """Report the available backends, ONNX Runtime providers, GPUs and display."""
    from runtime.doctor import doctor, format_doctor

    report = doctor()
    print(json.dumps(report, indent=2) if args.json else format_doctor(report))
    return 0
