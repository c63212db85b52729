"""ONNX -> TensorRT engine (TensorRT 10 Python API only), with ``model.json`` beside it.

The engine file holds TensorRT's serialized bytes and nothing else. FP16 and INT8 are honoured or
refused, never silently downgraded. INT8 prefers explicit quantisation (a QDQ model from
``export.quantize``); implicit INT8 with an entropy calibrator and a cache file is kept for older
stacks (e.g. Jetson). ``tensorrt`` and ``cuda-python`` are imported inside functions only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from runtime.metadata import ModelMeta

PRECISIONS = ("fp32", "fp16", "int8")
GPU_HINT = "install the GPU extra: pip install .[gpu] (on Jetson use JetPack's TensorRT Python bindings)"


class TensorRTError(RuntimeError):
    """TensorRT is missing, or could not parse or build the model."""


def import_tensorrt() -> Any:
    """``import tensorrt`` with a clear error when it is absent."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTError(f"TensorRT is not available ({exc}); {GPU_HINT}") from None
    if int(trt.__version__.split(".")[0]) < 10:
        raise TensorRTError(f"TensorRT {trt.__version__} found; lanekd needs TensorRT >= 10")
    return trt


def import_cudart() -> Any:
    """cuda-python's runtime module (new and old import paths)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as exc:
            raise TensorRTError(f"cuda-python is not available ({exc}); {GPU_HINT}") from None
    return cudart


def _check(result: tuple) -> Any:
    """Unwrap a cuda-python ``(err, *values)`` tuple, raising on an error code."""
    err, *rest = result
    if int(err) != 0:
        raise TensorRTError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else (rest or None)


class DeviceBuffer:
    """A device allocation of ``nbytes`` (cuda-python), freed on ``free()``."""

    def __init__(self, nbytes: int) -> None:
        self.cudart = import_cudart()
        self.nbytes = int(nbytes)
        self.ptr = _check(self.cudart.cudaMalloc(max(1, self.nbytes)))

    def upload(self, host: np.ndarray) -> None:
        host = np.ascontiguousarray(host)
        if host.nbytes > self.nbytes:
            raise ValueError(f"{host.nbytes} bytes do not fit a {self.nbytes}-byte buffer")
        _check(self.cudart.cudaMemcpy(self.ptr, host.ctypes.data, host.nbytes,
                                      self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))

    def download(self, host: np.ndarray) -> np.ndarray:
        _check(self.cudart.cudaMemcpy(host.ctypes.data, self.ptr, host.nbytes,
                                      self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost))
        return host

    def free(self) -> None:
        if self.ptr:
            _check(self.cudart.cudaFree(self.ptr))
            self.ptr = 0


def make_entropy_calibrator(meta: ModelMeta, frames: Sequence[np.ndarray], cache: str | Path | None) -> Any:
    """An ``IInt8EntropyCalibrator2`` feeding ``frames`` through the runtime's pre-processing.

    With ``cache`` set, an existing cache file is used instead of the frames, and a new
    calibration is written there.
    """
    trt = import_tensorrt()
    from export.verify import model_inputs

    feeds = [next(iter(f.values())) for f in model_inputs(meta, frames)] if frames else []
    cache_path = Path(cache) if cache else None

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.i = 0
            self.buf = DeviceBuffer(feeds[0].nbytes) if feeds else None

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.i >= len(feeds):
                return None
            self.buf.upload(feeds[self.i])
            self.i += 1
            return [int(self.buf.ptr)]

        def read_calibration_cache(self) -> bytes | None:
            if cache_path is not None and cache_path.is_file():
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache_bytes: Any) -> None:
            if cache_path is not None:
                cache_path.write_bytes(bytes(cache_bytes))

    if not feeds and not (cache_path and cache_path.is_file()):
        raise TensorRTError("implicit INT8 needs calibration frames or an existing calibration cache")
    return EntropyCalibrator()


def _parse(trt: Any, builder: Any, logger: Any, onnx_path: Path) -> Any:
    network = builder.create_network(0)          # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    return network, parser


def _is_qdq(network: Any, trt: Any) -> bool:
    return any(network.get_layer(i).type in (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE)
               for i in range(network.num_layers))


def build_engine(onnx: str | Path, out: str | Path, precision: str = "fp32", calib_frames: Any = None,
                 calib_cache: str | Path | None = None, min_shapes: dict[str, Sequence[int]] | None = None,
                 opt_shapes: dict[str, Sequence[int]] | None = None,
                 max_shapes: dict[str, Sequence[int]] | None = None, workspace_gb: float = 2.0,
                 timing_cache: str | Path | None = None, dla_core: int | None = None) -> Path:
    """Build a TensorRT engine from an ONNX model and write ``out`` (+ ``model.json``); return ``out``.

    Dynamic dims (e.g. batch) take ``min/opt/max_shapes`` per input name (default: batch 1/1/8).
    ``precision="int8"`` uses the QDQ scales when the model has them (explicit quantisation),
    otherwise an entropy calibrator over ``calib_frames`` / ``calib_cache`` (implicit INT8).
    ``dla_core`` builds for that DLA core with GPU fallback (Jetson).
    """
    from export.onnx import ExportError, _check_out, discard, temp_paths
    from export.verify import load_frames, read_meta

    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    onnx_path = Path(onnx)
    if not onnx_path.is_file():
        raise ExportError(f"ONNX model not found: {onnx_path}")
    out = Path(out)
    if out.suffix.lower() not in (".engine", ".plan"):
        raise ExportError(f"engine output must end in .engine or .plan: {out}")
    _check_out(out, out.suffix.lower())
    meta = read_meta(onnx_path)
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))

    qdq = _is_qdq(network, trt)
    if precision == "fp16" or (precision == "int8" and qdq):
        if not builder.platform_has_fast_fp16:
            raise TensorRTError("this GPU has no fast FP16; build fp32 instead (no silent downgrade)")
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if not builder.platform_has_fast_int8:
            raise TensorRTError("this GPU has no fast INT8; build fp16 or fp32 instead (no silent downgrade)")
        config.set_flag(trt.BuilderFlag.INT8)
        if not qdq:
            frames = load_frames(calib_frames, 64) if calib_frames is not None else []
            config.int8_calibrator = make_entropy_calibrator(meta, frames, calib_cache)
    elif qdq:
        raise ExportError(f"{onnx_path} is a QDQ (INT8) model; build it with precision='int8'")

    profile = builder.create_optimization_profile()
    needs_profile = False
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shape = list(t.shape)
        if all(d >= 0 for d in shape):
            continue
        needs_profile = True
        fixed = lambda b: [b if d < 0 and k == 0 else d for k, d in enumerate(shape)]  # noqa: E731
        lo = list((min_shapes or {}).get(t.name, fixed(1)))
        mid = list((opt_shapes or {}).get(t.name, fixed(1)))
        hi = list((max_shapes or {}).get(t.name, fixed(8)))
        if any(d < 0 for d in lo + mid + hi):
            raise ExportError(f"input {t.name!r} has dynamic dims {shape} beyond batch; give min/opt/max shapes")
        profile.set_shape(t.name, lo, mid, hi)
    if needs_profile:
        config.add_optimization_profile(profile)

    cache_obj = None
    if timing_cache is not None:
        tc = Path(timing_cache)
        cache_obj = config.create_timing_cache(tc.read_bytes() if tc.is_file() else b"")
        config.set_timing_cache(cache_obj, ignore_mismatch=False)
    if dla_core is not None:
        if builder.num_DLA_cores <= dla_core:
            raise TensorRTError(f"DLA core {dla_core} requested but this device has {builder.num_DLA_cores}")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTError(f"TensorRT could not build {onnx_path} at {precision} (see the log above)")
    if timing_cache is not None:
        Path(timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))

    meta.precision = precision
    meta.extra["tensorrt"] = {"version": trt.__version__, "from": str(onnx_path.resolve()),
                              "int8_mode": ("explicit-qdq" if qdq else "implicit-calibrator") if precision == "int8" else None,
                              "dla_core": dla_core}
    meta.versions["tensorrt"] = trt.__version__
    tmp, tmp_side = temp_paths(out)
    try:
        tmp.write_bytes(bytes(serialized))
        meta.save(tmp_side)
        from export.onnx import commit

        return commit(tmp, tmp_side, out)
    except Exception:
        discard(tmp, tmp_side)
        raise


class EngineRunner:
    """Run a serialized engine with the named-tensor API (``execute_async_v3``), for verification."""

    def __init__(self, path: str | Path) -> None:
        trt = import_tensorrt()
        self.cudart = import_cudart()
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise TensorRTError(f"{path}: not an engine this TensorRT ({trt.__version__}) can load")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.inputs]
        self.stream = _check(self.cudart.cudaStreamCreate())

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        bufs = []
        try:
            for name in self.inputs:
                x = np.ascontiguousarray(feeds[name])
                self.context.set_input_shape(name, x.shape)
                buf = DeviceBuffer(x.nbytes)
                buf.upload(x)
                bufs.append(buf)
                self.context.set_tensor_address(name, int(buf.ptr))
            outs = {}
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                host = np.empty(shape, dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))
                buf = DeviceBuffer(host.nbytes)
                bufs.append(buf)
                self.context.set_tensor_address(name, int(buf.ptr))
                outs[name] = (host, buf)
            if not self.context.execute_async_v3(self.stream):
                raise TensorRTError("execute_async_v3 failed")
            _check(self.cudart.cudaStreamSynchronize(self.stream))
            return {n: b.download(h) for n, (h, b) in outs.items()}
        finally:
            for b in bufs:
                b.free()
