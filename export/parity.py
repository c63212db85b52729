"""``export verify``: compare any two builds of one model (checkpoint, ONNX, TensorRT engine).

The one place that knows every format's runner; the stages themselves only know their own.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from export.artifacts import read_meta
from export.verify import (OrtRunner, Runner, TorchRunner, VerifyReport, compare, load_frames, lower_precision,
                           model_inputs)
from runtime.metadata import ModelMeta
from runtime.sinks import write_json

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def open_runner(path: str | Path, meta: ModelMeta | None = None) -> tuple[Runner, ModelMeta]:
    """A runner for a checkpoint (wrapped as ``meta`` describes), an ``.onnx`` or an ``.engine``/``.plan``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model not found: {path}")
    suffix = path.suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        if meta is None:
            from export.onnx import meta_from_checkpoint

            meta = meta_from_checkpoint(path)
        return TorchRunner(path, meta), meta
    own = read_meta(path)
    if suffix == ".onnx":
        return OrtRunner(path), own
    if suffix in (".engine", ".plan"):
        from export.tensorrt import EngineRunner

        return EngineRunner(path), own
    raise ValueError(f"{path}: unknown model type {suffix!r}; expected .pt, .onnx, .engine or .plan")


def verify(a: str | Path, b: str | Path, frames: str | Path | Sequence[np.ndarray] | None = None, k: int = 8,
           json_out: str | Path | None = None, quiet: bool = False) -> VerifyReport:
    """Compare model ``b`` against reference ``a`` on ``k`` real frames; print and optionally save the report.

    A checkpoint side is wrapped the way the other side was exported, so pass at most one.
    """
    a, b = Path(a), Path(b)
    if a.suffix.lower() in CHECKPOINT_SUFFIXES and b.suffix.lower() in CHECKPOINT_SUFFIXES:
        raise ValueError("verify compares an exported model with its source or another export; got two checkpoints")
    if a.suffix.lower() in CHECKPOINT_SUFFIXES:
        run_b, meta_b = open_runner(b)
        run_a, meta_a = open_runner(a, meta_b)
    else:
        run_a, meta_a = open_runner(a)
        run_b, meta_b = open_runner(b, meta_a)
    for attr in ("fused_preprocess", "fused_postprocess", "layout", "task", "geometry"):
        if getattr(meta_a, attr) != getattr(meta_b, attr):
            raise ValueError(f"{a.name} and {b.name} differ in {attr} ({getattr(meta_a, attr)!r} vs "
                             f"{getattr(meta_b, attr)!r}); export both the same way to compare them")
    feeds = model_inputs(meta_b, load_frames(frames, k))
    rep = compare(meta_b, [run_a(f) for f in feeds], [run_b(f) for f in feeds],
                  lower_precision(meta_a.precision, meta_b.precision), str(a), str(b))
    if not quiet:
        print(rep.table())
    if json_out is not None:
        write_json(json_out, rep.to_dict())
    return rep
