"""Precision-explicit ONNX -> strongly typed TensorRT engine, one recipe for TensorRT 10.x and 11.x.

TensorRT 11 removed weak typing (precision builder flags, INT8 calibrators, ``platform_has_fast_*``),
and JetPack 6 stays on TensorRT 10. So the precision is decided in the ONNX file before the build:

    FP32  the verified export                        python -m export onnx best.pt m.onnx
    FP16  float16 weights and compute                python -m export quantize m.onnx m_fp16.onnx --precision fp16
    INT8  symmetric int8 Q/DQ (TensorRT rules)       python -m export quantize m.onnx m_int8.onnx --precision int8 \\
                                                         --target tensorrt --frames FRAMES
    then  python -m export trt m_xxx.onnx m_xxx.engine

The network is created strongly typed (``STRONGLY_TYPED`` on 10.x; always on in 11.x), no precision
flag is set, and each engine is verified against ONNX Runtime running the same ONNX, at every
shape of its optimisation profile, before it gets its final name. The engine file holds
TensorRT's bytes only; ``model.json`` beside it records what it was built for (TensorRT version,
GPU, compute capability, CUDA runtime, precision recipe, input shapes), which the runtime checks
before deserialising. ``tensorrt`` and ``cuda-python`` are imported inside functions only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from export.artifacts import ExportError, check_out, commit, read_meta, staged
from export.quantize import qdq_violations
from export.verify import OrtRunner, Outputs, compare, load_frames, model_inputs
from runtime.metadata import ModelMeta

PRECISIONS = ("fp32", "fp16", "int8")
GPU_HINT = "install the GPU extra: pip install .[gpu] (on Jetson use JetPack's TensorRT Python bindings)"
DLA_HINT = ("DLA needs a Jetson AGX Orin: TensorRT 10.x on JetPack 6, or TensorRT 11.4.1+ on JetPack 7.2.2+; "
            "build without --dla-core to run on the GPU")


class TensorRTError(RuntimeError):
    """TensorRT is missing, or could not parse, build or run the model."""


def import_tensorrt() -> Any:
    """``import tensorrt`` with a clear error when it is absent or older than 10."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTError(f"TensorRT is not available ({exc}); {GPU_HINT}") from None
    if int(trt.__version__.split(".")[0]) < 10:
        raise TensorRTError(f"TensorRT {trt.__version__} found; lanekd needs TensorRT 10.x or 11.x")
    return trt


def network_flags(trt: Any) -> int:
    """Creation flags for a strongly typed network: the flag on 10.x, nothing on 11.x (always on)."""
    if int(trt.__version__.split(".")[0]) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def onnx_precision(onnx_path: Path, meta: ModelMeta) -> str:
    """The precision a file really has: Q/DQ nodes = int8, float16 weights = fp16, else fp32.

    The graph decides, and the sidecar must agree with it, so a mislabelled file is refused.
    """
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node):
        found = "int8"
    elif any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer):
        found = "fp16"
    else:
        found = "fp32"
    if meta.precision != found:
        raise ExportError(f"{onnx_path}: the sidecar says {meta.precision} but the graph is {found}; re-export it")
    return found


def check_precision(onnx_path: Path, meta: ModelMeta, requested: str | None) -> str:
    """The file's precision; refuse a request it does not meet, and INT8 not made for TensorRT."""
    found = onnx_precision(onnx_path, meta)
    if requested is not None and requested not in PRECISIONS:
        raise ExportError(f"unknown precision {requested!r}; expected one of {PRECISIONS}")
    stem = onnx_path.with_suffix("")
    if requested is not None and requested != found:
        if requested == "fp16":
            how = f"python -m export quantize {onnx_path} {stem}_fp16.onnx --precision fp16"
        else:
            how = (f"python -m export quantize {onnx_path} {stem}_int8.onnx --precision int8 --target tensorrt "
                   f"--frames FRAMES")
        raise ExportError(f"{onnx_path} is an {found.upper()} ONNX, asked for an {requested.upper()} engine: "
                          f"TensorRT 10/11 take the precision from the ONNX (no builder flags); make one first "
                          f"with `{how}` and build from it")
    if found == "int8":
        target = (meta.extra.get("quantization") or {}).get("target")
        problems = [] if target == "tensorrt" else qdq_violations(onnx_path)
        if problems:
            raise ExportError(f"{onnx_path} was quantised for {target or 'another runtime'} ({problems[0]}); re-quantise "
                              f"the FP32 model with `python -m export quantize FP32.onnx {stem}_trt.onnx "
                              f"--precision int8 --target tensorrt --frames FRAMES`")
    return found


def profile_shapes(inputs: Sequence[tuple[str, Sequence[int]]], min_shapes: dict[str, Sequence[int]] | None,
                   opt_shapes: dict[str, Sequence[int]] | None,
                   max_shapes: dict[str, Sequence[int]] | None) -> dict[str, dict[str, list[int]]]:
    """min/opt/max per dynamic input (default batch 1/1/8); static inputs are absent."""
    out = {}
    for name, shape in inputs:
        shape = list(shape)
        if all(d >= 0 for d in shape):
            continue
        fixed = lambda b: [b if d < 0 and k == 0 else d for k, d in enumerate(shape)]  # noqa: E731
        lo = list((min_shapes or {}).get(name, fixed(1)))
        mid = list((opt_shapes or {}).get(name, fixed(1)))
        hi = list((max_shapes or {}).get(name, fixed(8)))
        if any(d < 0 for d in lo + mid + hi):
            raise ExportError(f"input {name!r} has dynamic dims {shape} beyond batch; give --min/--opt/--max-shape")
        if not all(a <= b <= c for a, b, c in zip(lo, mid, hi)) or not len(lo) == len(mid) == len(hi) == len(shape):
            raise ExportError(f"input {name!r}: need min <= opt <= max with {len(shape)} dims, got {lo}, {mid}, {hi}")
        out[name] = {"min": lo, "opt": mid, "max": hi}
    return out


def _parse(trt: Any, builder: Any, logger: Any, onnx_path: Path) -> tuple[Any, Any]:
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    return network, parser


def _use_dla(trt: Any, builder: Any, config: Any, dla_core: int) -> None:
    """Put the engine on a DLA core with GPU fallback, or say why this TensorRT/device cannot."""
    cores = getattr(builder, "num_DLA_cores", 0)
    if not hasattr(trt.DeviceType, "DLA") or cores == 0:
        raise TensorRTError(f"TensorRT {trt.__version__} on this device has no DLA support; {DLA_HINT}")
    if not 0 <= dla_core < cores:
        raise TensorRTError(f"DLA core {dla_core} requested but this device has {cores} (0..{cores - 1})")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = int(dla_core)
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def build_engine(onnx: str | Path, out: str | Path, precision: str | None = None,
                 min_shapes: dict[str, Sequence[int]] | None = None,
                 opt_shapes: dict[str, Sequence[int]] | None = None,
                 max_shapes: dict[str, Sequence[int]] | None = None, workspace_gb: float = 2.0,
                 timing_cache: str | Path | None = None, dla_core: int | None = None, frames: Any = None,
                 verify_frames: int = 4, quiet: bool = True) -> Path:
    """Build a strongly typed engine from a precision-explicit ONNX; write ``out`` (+ ``model.json``).

    ``precision`` (optional) is a check: the ONNX must already be that precision. Dynamic dims take
    ``min/opt/max_shapes`` per input name (default batch 1/1/8). ``dla_core`` builds for that DLA
    core with GPU fallback (Jetson). The engine is verified against ONNX Runtime on ``frames``
    (None = synthetic scenes) at each profile shape; ``verify_frames=0`` skips that.
    """
    if precision is not None and precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    onnx_path = Path(onnx)
    out = check_out(out, ".engine", ".plan")
    if not onnx_path.is_file():
        raise ExportError(f"ONNX model not found: {onnx_path}")
    meta = read_meta(onnx_path)
    found = check_precision(onnx_path, meta, precision)
    trt = import_tensorrt()
    from runtime.backends.tensorrt import device_info

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    inputs = [(network.get_input(i).name, tuple(network.get_input(i).shape)) for i in range(network.num_inputs)]
    shapes = profile_shapes(inputs, min_shapes, opt_shapes, max_shapes)
    if shapes:
        profile = builder.create_optimization_profile()
        for name, s in shapes.items():
            profile.set_shape(name, s["min"], s["opt"], s["max"])
        config.add_optimization_profile(profile)
    if timing_cache is not None:
        tc = Path(timing_cache)
        cache = config.create_timing_cache(tc.read_bytes() if tc.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    if dla_core is not None:
        _use_dla(trt, builder, config, dla_core)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTError(f"TensorRT could not build {onnx_path} ({found}, strongly typed; see the log above)")
    if timing_cache is not None:
        Path(timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))

    recipe = {"fp32": "fp32 ONNX", "fp16": "fp16 ONNX (onnxconverter-common)",
              "int8": "int8 Q/DQ ONNX (quantize --target tensorrt)"}[found]
    meta.precision = found
    meta.extra["tensorrt"] = {"version": trt.__version__, **device_info(), "from": str(onnx_path.resolve()),
                              "strongly_typed": True, "precision_recipe": recipe, "dla_core": dla_core,
                              "input_shapes": shapes or {n: list(s) for n, s in inputs}}
    meta.versions["tensorrt"] = trt.__version__
    with staged(out) as (tmp, tmp_side):
        tmp.write_bytes(bytes(serialized))
        meta.save(tmp_side)
        if verify_frames > 0:
            _verify_engine(tmp, onnx_path, meta, shapes, frames, verify_frames, quiet)
        return commit(tmp, tmp_side, out)


def _verify_engine(engine: Path, onnx_path: Path, meta: ModelMeta, shapes: dict[str, dict[str, list[int]]],
                   frames: Any, k: int, quiet: bool) -> None:
    """The engine against ONNX Runtime on the same ONNX, at each profile shape (batch 1 when static)."""
    feeds = model_inputs(meta, load_frames(frames, k))
    name = meta.inputs[0].name
    batches = sorted({s[0] for s in shapes.get(name, {}).values()} or {1})
    ort_run = OrtRunner(onnx_path)
    for batch in batches:
        batch_feeds = [{name: np.concatenate([f[name]] * batch)} for f in feeds]
        runner = EngineRunner(engine, {name: batch_feeds[0][name].shape} if shapes else None)
        try:
            test = [runner(f) for f in batch_feeds]
        finally:
            runner.close()
        ref = [ort_run(f) for f in batch_feeds]
        rep = compare(meta, [_first(r) for r in ref], [_first(t) for t in test], meta.precision, onnx_path.name,
                      f"{engine.name} (batch {batch})")
        if not quiet:
            print(rep.table())
        if not rep.ok:
            raise ExportError(f"engine disagrees with ONNX Runtime at batch {batch}: " + "; ".join(rep.failures))


def _first(out: Outputs) -> Outputs:
    """Sample 0 of a batch (verification compares one frame at a time)."""
    return {n: a[:1] for n, a in out.items()}


class EngineRunner:
    """An engine as a verification runner: the runtime's TensorRT backend, outputs copied out."""

    def __init__(self, path: str | Path, shapes: dict[str, Sequence[int]] | None = None) -> None:
        import_tensorrt()
        from runtime.backends.tensorrt import TensorRTBackend

        self.backend = TensorRTBackend(path, shapes=shapes, check_compat=False).open()

    def __call__(self, feeds: Outputs) -> Outputs:
        return {n: np.array(a, copy=True) for n, a in self.backend.infer(feeds).items()}

    def close(self) -> None:
        self.backend.close()
