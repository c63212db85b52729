"""FP16 and INT8 (QDQ, static, calibrated on real frames) versions of a verified FP32 ONNX model.

Inputs and outputs stay as in the FP32 model (FP32 probabilities, uint8 fused input), so the
runtime treats every precision alike. Each result is verified against its FP32 source before it
gets its final name: FP16 numerically (1e-2) and at task level, INT8 at task level only.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from runtime.metadata import ModelMeta

CALIBRATION_METHODS = ("entropy", "minmax", "percentile")
UNPOOL_HINT = ("this graph has a MaxUnpool op (ENet's max-unpooling decoder), which ONNX Runtime's FP16 "
               "converter and shape inference cannot handle; retrain or export ENet with decoder=\"interp\" "
               "(or export it with the dynamo exporter, which lowers unpooling to ScatterND)")


def _prepare(onnx_in: str | Path, out: str | Path) -> tuple[Path, Path, Any, ModelMeta]:
    import onnx

    from export.onnx import ExportError, _check_out
    from export.verify import read_meta

    onnx_in = Path(onnx_in)
    if not onnx_in.is_file():
        raise ExportError(f"ONNX model not found: {onnx_in}")
    out = _check_out(out, ".onnx")
    if out.resolve() == onnx_in.resolve():
        raise ExportError(f"output {out} would overwrite its FP32 source")
    meta = read_meta(onnx_in)
    if meta.precision != "fp32":
        raise ExportError(f"{onnx_in} is already {meta.precision}; quantise the FP32 export")
    proto = onnx.load(str(onnx_in))
    if any(n.op_type == "MaxUnpool" for n in proto.graph.node):
        raise ExportError(f"{onnx_in}: {UNPOOL_HINT}")
    return onnx_in, out, proto, meta


def _finish(tmp: Path, out: Path, meta: ModelMeta, fp32: Path, frames: Any, verify_frames: int,
            quiet: bool) -> Path:
    """Verify ``tmp`` against ``fp32``, embed the sidecar (with the verification summary), commit."""
    import onnx

    from export.onnx import ExportError, commit, embed_meta, temp_paths
    from export.verify import OrtRunner, compare, load_frames, model_inputs

    if verify_frames > 0:
        feeds = model_inputs(meta, load_frames(frames, verify_frames))
        ref_run, test_run = OrtRunner(fp32), OrtRunner(tmp)
        rep = compare(meta, [ref_run(f) for f in feeds], [test_run(f) for f in feeds], meta.precision,
                      fp32.name, out.name)
        if not quiet:
            print(rep.table())
        meta.extra["verification"] = {k: v for k, v in rep.to_dict().items() if k not in ("ref", "test")}
        if not rep.ok:
            raise ExportError(f"{out.name} ({meta.precision}) disagrees with {fp32.name}: " + "; ".join(rep.failures))
    proto = onnx.load(str(tmp))
    embed_meta(proto, meta)
    onnx.save_model(proto, str(tmp), save_as_external_data=False)
    _, tmp_side = temp_paths(out)
    meta.save(tmp_side)
    return commit(tmp, tmp_side, out)


def quantize_fp16(onnx_in: str | Path, out: str | Path, frames: Any = None, verify_frames: int = 4,
                  quiet: bool = True) -> Path:
    """FP16 weights and compute with FP32 inputs/outputs (ORT's converter, ``keep_io_types``).

    Resize scales and the converter's block-listed ops stay FP32. ``frames`` feed the check against
    the FP32 model (None = synthetic scenes).
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from export.onnx import discard, temp_paths

    onnx_in, out, proto, meta = _prepare(onnx_in, out)
    tmp, tmp_side = temp_paths(out)
    try:
        half = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=False)
        toposort(half.graph)         # the converter appends its boundary Casts at the end
        onnx.checker.check_model(half)
        onnx.save_model(half, str(tmp), save_as_external_data=False)
        meta.precision = "fp16"
        meta.source_checkpoint = meta.source_checkpoint or str(onnx_in)
        meta.extra["quantization"] = {"from": str(onnx_in.resolve()), "keep_io_types": True}
        return _finish(tmp, out, meta, onnx_in, frames, verify_frames, quiet)
    except Exception:
        discard(tmp, tmp_side)
        raise


def toposort(graph: Any) -> None:
    """Reorder ``graph.node`` in place so every node follows the producers of its inputs."""
    from collections import deque

    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    nodes = list(graph.node)
    waiting = [sum(1 for x in set(n.input) if x not in available) for n in nodes]
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for x in set(n.input):
            if x not in available:
                consumers.setdefault(x, []).append(i)
    ready = deque(i for i, w in enumerate(waiting) if w == 0)
    order = []
    while ready:
        i = ready.popleft()
        order.append(i)
        for y in nodes[i].output:
            for j in consumers.pop(y, []):
                waiting[j] -= 1
                if waiting[j] == 0:
                    ready.append(j)
    if len(order) != len(nodes):
        raise ValueError("graph has a cycle or an input nobody produces; cannot sort it")
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)


class FrameReader:
    """ONNX Runtime calibration reader: frames through the runtime's own pre-processing."""

    def __init__(self, meta: ModelMeta, frames: Sequence[np.ndarray]) -> None:
        from export.verify import model_inputs

        self._feeds = model_inputs(meta, frames)
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self._feeds):
            return None
        self._i += 1
        return self._feeds[self._i - 1]

    def rewind(self) -> None:
        self._i = 0


def calibration_frames(frames: Any, k: int) -> list[np.ndarray]:
    """Frames for INT8 calibration: a list, an image folder, a video, or "synthetic". None is refused."""
    from export.onnx import ExportError
    from export.verify import load_frames, synthetic_frames

    if frames is None or (isinstance(frames, (list, tuple)) and len(frames) == 0):
        raise ExportError("INT8 needs calibration frames: pass real frames (a list, an image folder or a "
                          "video), or \"synthetic\" for the synthetic road scenes")
    if isinstance(frames, str) and frames == "synthetic":
        return synthetic_frames(k, seed=1000)
    return load_frames(frames, k)


def _pre_process(src: Path, dst: Path) -> None:
    """ORT's ``quant_pre_process`` (optimise + shape inference); symbolic inference first."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src).resolve(), Path(dst).resolve()
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)   # ORT drops "sym_shape_infer_temp.onnx" into the working folder on failure
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
        except Exception:
            # the symbolic shape pass fails on some lowered ops (e.g. ScatterND from unpooling);
            # ONNX's own shape inference is enough for QDQ placement
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        finally:
            os.chdir(cwd)


def quantize_int8(onnx_in: str | Path, out: str | Path, frames: Any = None, method: str = "entropy",
                  per_channel: bool = True, reduce_range: bool = False, activation_type: str = "uint8",
                  exclude_ops: Sequence[str] = (), calib_frames: int = 32, verify_frames: int = 4,
                  verify_source: Any = None, quiet: bool = True) -> Path:
    """Static INT8 QDQ model calibrated on ``calib_frames`` real frames; verified at task level.

    ``method``: entropy | minmax | percentile. ``exclude_ops``: op types left in FP32 (e.g.
    ``Resize``, ``ConvTranspose`` where INT8 kernels are slow). ``verify_source``: frames for the
    check against FP32 (default: synthetic scenes, different from the calibration ones).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from export.onnx import ExportError, discard, temp_paths

    if method not in CALIBRATION_METHODS:
        raise ExportError(f"unknown calibration method {method!r}; expected one of {CALIBRATION_METHODS}")
    if activation_type not in ("uint8", "int8"):
        raise ExportError(f"activation_type must be uint8 or int8, got {activation_type!r}")
    calib = calibration_frames(frames, calib_frames)
    onnx_in, out, proto, meta = _prepare(onnx_in, out)
    tmp, tmp_side = temp_paths(out)
    pre = tmp.with_name(tmp.stem + ".pre.onnx")
    try:
        _pre_process(onnx_in, pre)
        cal = {"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax,
               "percentile": CalibrationMethod.Percentile}[method]
        quantize_static(str(pre), str(tmp), FrameReader(meta, calib), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, reduce_range=reduce_range,
                        activation_type=QuantType.QUInt8 if activation_type == "uint8" else QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=cal,
                        nodes_to_exclude=_excluded_after_prep(pre, exclude_ops) or None)
        meta.precision = "int8"
        meta.extra["quantization"] = {"from": str(onnx_in.resolve()), "format": "QDQ", "method": method,
                                      "per_channel": per_channel, "reduce_range": reduce_range,
                                      "activation_type": activation_type, "weight_type": "int8",
                                      "exclude_ops": list(exclude_ops), "calib_frames": len(calib)}
        return _finish(tmp, out, meta, onnx_in, verify_source, verify_frames, quiet)
    except Exception:
        discard(tmp, tmp_side)
        raise
    finally:
        discard(pre, pre.with_suffix(".onnx.data"))


def _excluded_after_prep(pre: Path, exclude_ops: Sequence[str]) -> list[str]:
    """Node names of the given op types in the pre-processed graph (names change in pre-processing)."""
    if not exclude_ops:
        return []
    import onnx

    return [n.name for n in onnx.load(str(pre)).graph.node if n.op_type in set(exclude_ops)]


def quantization_summary(path: str | Path) -> dict[str, Any]:
    """The quantisation settings and verification summary recorded in a model's sidecar."""
    from export.verify import read_meta

    meta = read_meta(path)
    return json.loads(json.dumps({"precision": meta.precision, **{k: meta.extra.get(k) for k in
                                                                   ("quantization", "verification")}}))
