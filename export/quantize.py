"""FP16 and INT8 (Q/DQ, static, calibrated on real frames) versions of a verified FP32 ONNX model.

Precision is decided here, in the ONNX file, never by a runtime's builder flags: TensorRT 10 and 11
build the same strongly typed engine from it, and ONNX Runtime and OpenVINO run it as it is.

- FP16: onnxconverter-common's float16 converter (the maintained ONNX tool; ModelOpt's AutoCast
  would pull in CUDA-only dependencies). Weights and compute become float16; inputs and outputs
  stay float32 unless ``fp16_io``; Resize and Softmax (with the converter's own block list) stay
  float32, for accuracy of the class probabilities and of the upsampling coordinates.
- INT8, ``target="cpu"``: ONNX Runtime's CPU defaults (uint8 asymmetric activations, int8
  per-channel weights), the fastest QDQ kernels ORT has on x86.
- INT8, ``target="tensorrt"``: what TensorRT's explicit quantisation accepts and fuses: symmetric
  int8 activations and weights (zero point 0), per-channel weight scales on the output-channel axis
  (0 for Conv, 1 for ConvTranspose), float biases (TensorRT takes no int32 bias DQ), and Q/DQ only
  on the inputs of Conv / ConvTranspose / MatMul / Gemm and of residual Adds, as TensorRT's Q/DQ
  placement guide recommends. ``qdq_violations`` checks a file against these rules.

Each result is verified against its FP32 source before it gets its final name: FP16 numerically
(1e-2) and at task level, INT8 at task level only; NaN/Inf outputs fail either.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from export.artifacts import ExportError, check_out, commit, read_meta, staged, discard
from export.onnx import embed_meta
from export.verify import OrtRunner, check_build, load_frames, model_inputs, synthetic_frames
from runtime.metadata import ModelMeta

CALIBRATION_METHODS = ("entropy", "minmax", "percentile")
INT8_TARGETS = ("cpu", "tensorrt")
FP16_KEEP_FP32 = ("Resize", "Softmax")
TRT_QUANTIZED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Add")
OUTPUT_CHANNEL_AXIS = {"Conv": 0, "ConvTranspose": 1, "Gemm": 0, "MatMul": 1}
UNPOOL_HINT = ("this graph has a MaxUnpool op (ENet's max-unpooling decoder), which ONNX Runtime's FP16 "
               "converter and shape inference cannot handle; retrain or export ENet with decoder=\"interp\" "
               "(or export it with the dynamo exporter, which lowers unpooling to ScatterND)")


def _prepare(onnx_in: str | Path, out: str | Path) -> tuple[Path, Path, Any, ModelMeta]:
    import onnx

    onnx_in = Path(onnx_in)
    if not onnx_in.is_file():
        raise ExportError(f"ONNX model not found: {onnx_in}")
    out = check_out(out, ".onnx")
    if out.resolve() == onnx_in.resolve():
        raise ExportError(f"output {out} would overwrite its FP32 source")
    meta = read_meta(onnx_in)
    if meta.precision != "fp32":
        raise ExportError(f"{onnx_in} is already {meta.precision}; quantise the FP32 export")
    proto = onnx.load(str(onnx_in))
    if any(n.op_type == "MaxUnpool" for n in proto.graph.node):
        raise ExportError(f"{onnx_in}: {UNPOOL_HINT}")
    return onnx_in, out, proto, meta


def _finish(tmp: Path, tmp_side: Path, out: Path, meta: ModelMeta, fp32: Path, frames: Any, verify_frames: int,
            quiet: bool) -> Path:
    """Verify ``tmp`` against ``fp32``, embed the sidecar (with the verification summary), commit."""
    import onnx

    if verify_frames > 0:
        feeds = model_inputs(meta, load_frames(frames, verify_frames))
        rep = check_build(meta, OrtRunner(fp32), OrtRunner(tmp), feeds, meta.precision, fp32.name, out.name)
        if not quiet:
            print(rep.table())
        meta.extra["verification"] = {k: v for k, v in rep.to_dict().items() if k not in ("ref", "test")}
        if not rep.ok:
            raise ExportError(f"{out.name} ({meta.precision}) disagrees with {fp32.name}: " + "; ".join(rep.failures))
    proto = onnx.load(str(tmp))
    embed_meta(proto, meta)
    onnx.save_model(proto, str(tmp), save_as_external_data=False)
    meta.save(tmp_side)
    return commit(tmp, tmp_side, out)


def quantize_fp16(onnx_in: str | Path, out: str | Path, frames: Any = None, verify_frames: int = 4,
                  fp16_io: bool = False, quiet: bool = True) -> Path:
    """FP16 weights and compute (onnxconverter-common), float32 I/O unless ``fp16_io``; verified.

    ``frames`` feed the check against the FP32 model (None = synthetic scenes).
    """
    import onnx
    from onnxconverter_common import __version__ as occ_version
    from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    onnx_in, out, proto, meta = _prepare(onnx_in, out)
    if meta.fused_preprocess and fp16_io:
        raise ExportError("fp16_io does not apply to a fused-pre-processing model (its input is uint8 BGR)")
    with staged(out) as (tmp, tmp_side):
        blocked = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP16_KEEP_FP32))
        half = convert_float_to_float16(proto, keep_io_types=not fp16_io, op_block_list=blocked)
        if not fp16_io:
            _float32_outputs(half.graph)
        toposort(half.graph)         # the converter appends its boundary Casts at the end
        onnx.checker.check_model(half)
        onnx.save_model(half, str(tmp), save_as_external_data=False)
        meta.precision = "fp16"
        if fp16_io:
            for t in meta.inputs + meta.outputs:
                t.dtype = "float16" if t.dtype == "float32" else t.dtype
        meta.source_checkpoint = meta.source_checkpoint or str(onnx_in)
        kept = sorted({n.op_type for n in proto.graph.node} & set(blocked))
        meta.extra["quantization"] = {"from": str(onnx_in.resolve()), "tool": f"onnxconverter-common {occ_version}",
                                      "keep_io_types": not fp16_io, "fp32_ops": kept}
        return _finish(tmp, tmp_side, out, meta, onnx_in, frames, verify_frames, quiet)


def _float32_outputs(graph: Any) -> None:
    """Make every float16 graph output float32 again, as ``keep_io_types`` promises.

    onnxconverter-common misses two cases: an output made by a block-listed op (our FP32 Softmax
    gets a Cast back to float16 after it) and an output that is a folded constant (a fixed
    existence head). That Cast now casts to float32, the constant is stored as float32, and any
    other float16 output gets a Cast to float32.
    """
    import onnx
    from onnx import helper, numpy_helper

    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    for out in graph.output:
        if out.type.tensor_type.elem_type != f16:
            continue
        out.type.tensor_type.elem_type = f32
        node = producer.get(out.name)
        if node is None and out.name in inits:
            inits[out.name].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(inits[out.name]).astype(np.float32),
                                                             out.name))
        elif node is not None and node.op_type == "Cast":
            for a in node.attribute:
                if a.name == "to":
                    a.i = f32
        elif node is not None:
            half_name = f"{out.name}_fp16"
            node.output[list(node.output).index(out.name)] = half_name
            graph.node.append(helper.make_node("Cast", [half_name], [out.name], to=f32, name=f"{out.name}_to_fp32"))


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


def _target_settings(target: str, per_channel: bool, reduce_range: bool, activation_type: str) -> dict[str, Any]:
    """quantize_static's settings for a target; TensorRT's are fixed, the CPU's are the user's."""
    if target not in INT8_TARGETS:
        raise ExportError(f"unknown INT8 target {target!r}; expected one of {INT8_TARGETS}")
    if activation_type not in ("uint8", "int8"):
        raise ExportError(f"activation_type must be uint8 or int8, got {activation_type!r}")
    if target == "cpu":
        return {"per_channel": per_channel, "reduce_range": reduce_range, "activation_type": activation_type,
                "extra_options": {}}
    if not per_channel or reduce_range or activation_type != "int8":
        raise ExportError("--target tensorrt fixes symmetric int8 activations and per-channel int8 weights; "
                          "--per-tensor, --reduce-range and --activation-type uint8 apply to --target cpu only")
    return {"per_channel": True, "reduce_range": False, "activation_type": "int8",
            "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                              "OpTypesToExcludeOutputQuantization": list(TRT_QUANTIZED_OPS)}}


def quantize_int8(onnx_in: str | Path, out: str | Path, frames: Any = None, method: str = "entropy",
                  target: str = "cpu", per_channel: bool = True, reduce_range: bool = False,
                  activation_type: str | None = None, exclude_ops: Sequence[str] = (), calib_frames: int = 32,
                  verify_frames: int = 4, verify_source: Any = None, quiet: bool = True) -> Path:
    """Static INT8 Q/DQ model for ``target`` (cpu | tensorrt), calibrated on real frames; verified.

    ``method``: entropy | minmax | percentile. ``activation_type`` defaults to the target's (uint8
    for cpu, int8 for tensorrt). ``exclude_ops``: op types left in FP32 (e.g. ``Resize``,
    ``ConvTranspose`` where INT8 kernels are slow). ``verify_source``: frames for the check against
    FP32 (default: synthetic scenes, different from the calibration ones).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise ExportError(f"unknown calibration method {method!r}; expected one of {CALIBRATION_METHODS}")
    act = activation_type or ("int8" if target == "tensorrt" else "uint8")
    settings = _target_settings(target, per_channel, reduce_range, act)
    calib = calibration_frames(frames, calib_frames)
    onnx_in, out, proto, meta = _prepare(onnx_in, out)
    with staged(out) as (tmp, tmp_side):
        pre = tmp.with_name(tmp.stem + ".pre.onnx")
        try:
            _pre_process(onnx_in, pre)
            pre_graph = _load_graph(pre)
            op_types = list(TRT_QUANTIZED_OPS) if target == "tensorrt" else None
            excluded = [n.name for n in pre_graph.node if n.op_type in set(exclude_ops)]
            if target == "tensorrt":
                excluded += _constant_adds(pre_graph)
            cal = {"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax,
                   "percentile": CalibrationMethod.Percentile}[method]
            quantize_static(str(pre), str(tmp), FrameReader(meta, calib), quant_format=QuantFormat.QDQ,
                            per_channel=settings["per_channel"], reduce_range=settings["reduce_range"],
                            activation_type=QuantType.QUInt8 if act == "uint8" else QuantType.QInt8,
                            weight_type=QuantType.QInt8, calibrate_method=cal, op_types_to_quantize=op_types,
                            nodes_to_exclude=excluded or None, extra_options=settings["extra_options"])
        finally:
            discard(pre, pre.with_suffix(".onnx.data"))
        if target == "tensorrt":
            problems = qdq_violations(tmp)
            if problems:
                raise ExportError(f"{out.name}: the Q/DQ graph breaks TensorRT's rules: " + "; ".join(problems[:5]))
        meta.precision = "int8"
        meta.extra["quantization"] = {"from": str(onnx_in.resolve()), "format": "QDQ", "target": target,
                                      "method": method, "per_channel": settings["per_channel"],
                                      "reduce_range": settings["reduce_range"], "activation_type": act,
                                      "weight_type": "int8", "symmetric_activations": target == "tensorrt",
                                      "exclude_ops": list(exclude_ops), "calib_frames": len(calib)}
        return _finish(tmp, tmp_side, out, meta, onnx_in, verify_source, verify_frames, quiet)


def _load_graph(path: Path) -> Any:
    import onnx

    return onnx.load(str(path)).graph


def _constant_adds(graph: Any) -> list[str]:
    """Adds with a constant operand (a bias, a shift): not residual joins, so TensorRT wants no Q/DQ there."""
    consts = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in graph.node if n.op_type == "Add" and any(x in consts for x in n.input)]


def qdq_violations(path: str | Path) -> list[str]:
    """Where a Q/DQ ONNX file breaks TensorRT's explicit-quantisation rules (empty = conformant).

    Rules: every Q/DQ has an int8 zero point equal to 0; a weight (an initializer's DQ) feeding a
    Conv / ConvTranspose / Gemm / MatMul is per-channel on that op's output-channel axis; no DQ of an
    int32 tensor (TensorRT has no int32 bias dequantisation).
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    problems = []
    for n in graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zp = inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if zp is None or zp.data_type != onnx.TensorProto.INT8:
            problems.append(f"{n.name}: zero point is not int8")
        elif np.any(numpy_helper.to_array(zp) != 0):
            problems.append(f"{n.name}: zero point is not 0 (asymmetric)")
        src = inits.get(n.input[0])
        if n.op_type != "DequantizeLinear" or src is None:
            continue
        if src.data_type == onnx.TensorProto.INT32:
            problems.append(f"{n.name}: dequantises an int32 tensor (a quantised bias)")
            continue
        for user in consumers.get(n.output[0], []):
            if user.op_type not in OUTPUT_CHANNEL_AXIS or user.input[1] != n.output[0]:
                continue
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            scale = numpy_helper.to_array(inits[n.input[1]]) if n.input[1] in inits else np.zeros(1)
            want = OUTPUT_CHANNEL_AXIS[user.op_type]
            if scale.size != src.dims[want] or (scale.size > 1 and axis != want):
                problems.append(f"{n.name}: {user.op_type} weight scales are not per-channel on axis {want}")
    return problems


def quantization_summary(path: str | Path) -> dict[str, Any]:
    """The quantisation settings and verification summary recorded in a model's sidecar."""
    meta = read_meta(path)
    return json.loads(json.dumps({"precision": meta.precision, **{k: meta.extra.get(k) for k in
                                                                   ("quantization", "verification")}}))
