"""The export formats table: what can be produced, from what, with which options.

Options are validated against the table before anything runs; conversion goes through a dict of
pure functions, each returning the artefact's path.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    source: str                    # what it converts from: "checkpoint" or "onnx"
    needs_gpu: bool
    options: tuple[str, ...]
    description: str


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("onnx", ".onnx", "checkpoint", False,
           ("opset", "dynamic_batch", "dynamic_hw", "fused_pre", "fused_post", "verify_frames", "frames"),
           "FP32 ONNX (static 1xCxHxW by default), verified against PyTorch, model.json sidecar"),
    Format("onnx-fp16", ".onnx", "onnx", False, ("frames", "verify_frames", "fp16_io"),
           "FP16 ONNX (onnxconverter-common), FP32 I/O unless fp16_io, Resize/Softmax kept FP32"),
    Format("onnx-int8", ".onnx", "onnx", False,
           ("frames", "method", "target", "per_channel", "reduce_range", "activation_type", "exclude_ops",
            "calib_frames", "verify_frames", "verify_source"),
           "INT8 Q/DQ ONNX calibrated on real frames; target cpu (ORT defaults) or tensorrt (symmetric int8)"),
    Format("tensorrt", ".engine", "onnx", True,
           ("precision", "min_shapes", "opt_shapes", "max_shapes", "workspace_gb", "timing_cache", "dla_core"),
           "strongly typed TensorRT 10/11 engine, precision taken from the ONNX, model.json sidecar"),
)}


def _converters() -> dict[str, Callable[..., Path]]:
    from export.onnx import export_onnx
    from export.quantize import quantize_fp16, quantize_int8
    from export.tensorrt import build_engine

    return {"onnx": export_onnx, "onnx-fp16": quantize_fp16, "onnx-int8": quantize_int8, "tensorrt": build_engine}


def validate(fmt: str, source: str | Path, out: str | Path, options: dict[str, Any]) -> Format:
    """Check the format name, the source/output suffixes and the options; return the table row."""
    from export.artifacts import ExportError

    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    f = FORMATS[fmt]
    bad = sorted(set(options) - set(f.options))
    if bad:
        raise ExportError(f"format {fmt!r} takes no option(s) {bad}; allowed: {', '.join(f.options)}")
    want_src = (".onnx",) if f.source == "onnx" else (".pt", ".pth", ".ckpt")
    if Path(source).suffix.lower() not in want_src:
        raise ExportError(f"format {fmt!r} converts from a {f.source} ({'/'.join(want_src)}), got {source}")
    suffixes = (f.suffix, ".plan") if fmt == "tensorrt" else (f.suffix,)
    if Path(out).suffix.lower() not in suffixes:
        raise ExportError(f"format {fmt!r} writes {'/'.join(suffixes)} files, got {out}")
    return f


def convert(fmt: str, source: str | Path, out: str | Path, **options: Any) -> Path:
    """Validate, then run the conversion for ``fmt``; returns the written artefact's path."""
    validate(fmt, source, out, options)
    return _converters()[fmt](source, out, **options)


def formats_table() -> str:
    """The formats table as text (``python -m export formats``)."""
    head = f"{'format':<10} {'suffix':<8} {'from':<11} {'GPU':<4} description / options"
    lines = [head, "-" * len(head)]
    for f in FORMATS.values():
        lines.append(f"{f.name:<10} {f.suffix:<8} {f.source:<11} {'yes' if f.needs_gpu else 'no':<4} {f.description}")
        lines.append(f"{'':<36}options: {', '.join(f.options)}")
    return "\n".join(lines)
