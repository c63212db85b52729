"""``python -m export onnx|quantize|trt|verify|formats``: thin wrappers over the export functions.

Expected failures (bad input, a failed verification, no TensorRT) are reported in one line by the
error boundary every ``python -m`` entry point shares (``runtime.cli``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from export.formats import convert, formats_table

FMT = argparse.ArgumentDefaultsHelpFormatter


def _frames(text: str | None) -> str | None:
    """CLI frames: a folder/video path, "synthetic" or None (synthetic scenes where allowed)."""
    return None if text in (None, "") else text


def _print_written(path: Path) -> int:
    from runtime.metadata import sidecar_path

    print(f"wrote {path}\nwrote {sidecar_path(path)}")
    return 0


def run_onnx(args: argparse.Namespace) -> int:
    print(f"export onnx: {args.checkpoint} -> {args.out} (opset {args.opset}, dynamic batch {args.dynamic_batch}, "
          f"dynamic hw {args.dynamic_hw}, fused pre {args.fused_pre}, fused post {args.fused_post})")
    frames = None if args.frames == "synthetic" else _frames(args.frames)
    out = convert("onnx", args.checkpoint, args.out, opset=args.opset, dynamic_batch=args.dynamic_batch,
                  dynamic_hw=args.dynamic_hw, fused_pre=args.fused_pre, fused_post=args.fused_post,
                  verify_frames=args.verify_frames, frames=frames)
    return _print_written(out)


def run_quantize(args: argparse.Namespace) -> int:
    target = f", target {args.target}" if args.precision == "int8" else ""
    print(f"export quantize: {args.model} -> {args.out} ({args.precision}{target})")
    if args.precision == "fp16":
        frames = None if args.frames == "synthetic" else _frames(args.frames)
        out = convert("onnx-fp16", args.model, args.out, frames=frames, verify_frames=args.verify_frames,
                      fp16_io=args.fp16_io)
    else:
        out = convert("onnx-int8", args.model, args.out, frames=_frames(args.frames), method=args.method,
                      target=args.target, per_channel=not args.per_tensor, reduce_range=args.reduce_range,
                      activation_type=args.activation_type, exclude_ops=tuple(args.exclude_ops),
                      calib_frames=args.calib_frames, verify_frames=args.verify_frames)
    from export.quantize import quantization_summary

    print(quantization_summary(out))
    return _print_written(out)


def _shapes(items: list[str] | None) -> dict[str, list[int]] | None:
    if not items:
        return None
    out = {}
    for item in items:
        name, _, dims = item.partition(":")
        try:
            out[name] = [int(d) for d in dims.split("x")]
        except ValueError:
            raise SystemExit(f"shape must be NAME:1x3x288x800, got {item!r}") from None
    return out


def run_trt(args: argparse.Namespace) -> int:
    print(f"export trt: {args.model} -> {args.out} (precision from the ONNX, workspace {args.workspace_gb} GiB)")
    out = convert("tensorrt", args.model, args.out, precision=args.precision, min_shapes=_shapes(args.min_shape),
                  opt_shapes=_shapes(args.opt_shape), max_shapes=_shapes(args.max_shape),
                  workspace_gb=args.workspace_gb, timing_cache=args.timing_cache, dla_core=args.dla_core)
    return _print_written(out)


def run_verify(args: argparse.Namespace) -> int:
    from export.parity import verify

    frames = None if args.frames == "synthetic" else _frames(args.frames)
    rep = verify(args.a, args.b, frames=frames, k=args.k, json_out=args.json)
    if args.json:
        print(f"wrote {args.json}")
    return 0 if rep.ok else 1


def run_formats(args: argparse.Namespace) -> int:
    print(formats_table())
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("onnx", help="checkpoint -> verified ONNX + model.json", formatter_class=FMT)
    p.add_argument("checkpoint", help="lanekd checkpoint (.pt)")
    p.add_argument("out", help="output .onnx (its folder must exist)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (17 or 18)")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="a dynamic batch dim instead of the static 1xCxHxW a video runtime feeds")
    p.add_argument("--dynamic-hw", action="store_true", help="dynamic input height/width")
    p.add_argument("--fused-pre", action="store_true", help="uint8 BGR NHWC input; the graph normalises")
    p.add_argument("--fused-post", action="store_true", help="output per-row lane peaks (or a class map)")
    p.add_argument("--frames", default="synthetic", help="verification frames: folder, video or 'synthetic'")
    p.add_argument("--verify-frames", type=int, default=8, help="frames compared against PyTorch")
    p.set_defaults(func=run_onnx)

    p = subparsers.add_parser("quantize", help="FP32 ONNX -> FP16 or INT8 (Q/DQ) ONNX: the precision lives here",
                              formatter_class=FMT)
    p.add_argument("model", help="FP32 .onnx with its model.json")
    p.add_argument("out", help="output .onnx")
    p.add_argument("--precision", choices=("fp16", "int8"), default="int8")
    p.add_argument("--target", choices=("cpu", "tensorrt"), default="cpu",
                   help="INT8 rules: cpu = ONNX Runtime's defaults (uint8 activations); tensorrt = symmetric int8 "
                        "Q/DQ that TensorRT 10 and 11 build from")
    p.add_argument("--frames", default=None,
                   help="calibration frames (INT8: required; folder, video or 'synthetic'); FP16: check frames")
    p.add_argument("--fp16-io", action="store_true", help="FP16: float16 inputs/outputs too (default float32)")
    p.add_argument("--method", choices=("entropy", "minmax", "percentile"), default="entropy")
    p.add_argument("--per-tensor", action="store_true", help="cpu target: per-tensor instead of per-channel weights")
    p.add_argument("--reduce-range", action="store_true", help="cpu target: 7-bit weights (older x86 without VNNI)")
    p.add_argument("--activation-type", choices=("uint8", "int8"), default=None,
                   help="cpu target: activation type (default uint8; tensorrt always int8)")
    p.add_argument("--exclude-ops", nargs="*", default=[], help="op types kept in FP32, e.g. Resize ConvTranspose")
    p.add_argument("--calib-frames", type=int, default=32)
    p.add_argument("--verify-frames", type=int, default=4)
    p.set_defaults(func=run_quantize)

    p = subparsers.add_parser("trt", help="precision-explicit ONNX -> strongly typed TensorRT engine (10.x and 11.x)",
                              formatter_class=FMT)
    p.add_argument("model", help=".onnx with its model.json: FP32, FP16 (quantize --precision fp16) or INT8 Q/DQ "
                                 "(quantize --precision int8 --target tensorrt)")
    p.add_argument("out", help="output .engine or .plan")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default=None,
                   help="optional check: refuse unless the ONNX already is this precision")
    p.add_argument("--min-shape", nargs="*", help="NAME:1x3x288x800 per dynamic input")
    p.add_argument("--opt-shape", nargs="*", help="NAME:1x3x288x800")
    p.add_argument("--max-shape", nargs="*", help="NAME:8x3x288x800")
    p.add_argument("--workspace-gb", type=float, default=2.0)
    p.add_argument("--timing-cache", default=None, help="timing cache file (read if present, then written)")
    p.add_argument("--dla-core", type=int, default=None, help="build for this DLA core with GPU fallback (Jetson)")
    p.set_defaults(func=run_trt)

    p = subparsers.add_parser("verify", help="compare two builds of a model on real frames", formatter_class=FMT)
    p.add_argument("a", help="reference: checkpoint, .onnx or .engine")
    p.add_argument("b", help="model under test: .onnx or .engine")
    p.add_argument("--frames", default="synthetic", help="folder, video or 'synthetic'")
    p.add_argument("-k", type=int, default=8, help="number of frames")
    p.add_argument("--json", default=None, help="write the report here")
    p.set_defaults(func=run_verify)

    p = subparsers.add_parser("formats", help="list the export formats and their options", formatter_class=FMT)
    p.set_defaults(func=run_formats)
