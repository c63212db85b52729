"""TensorRT's own runtime (TensorRT 10 and 11 named-tensor API) with cuda-python buffers.

Before an engine is deserialised, its sidecar says what it was built for (TensorRT version, GPU
compute capability); an engine built for another TensorRT or another GPU generation is refused
with one line that names both and the command to rebuild it here.

One engine, one execution context, one CUDA stream. Every I/O tensor gets a device buffer and a
pinned host buffer; a frame is: copy the input host->device, ``execute_async_v3``, copy the
requested outputs device->host, synchronise. With ``cuda_graph=True`` the whole sequence (both
copies and the inference) is captured once into a CUDA graph and replayed, which removes the
per-kernel launch overhead that dominates small models. Dynamic input dims are fixed at open to
the profile's ``opt`` shape with batch 1.
"""
from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from runtime.backends.base import Backend, BackendError, IOSpec
from runtime.metadata import ModelMeta, sidecar_path


def _cudart():
    """cuda-python's runtime module (``cuda.bindings.runtime`` from 12.6, ``cuda.cudart`` before)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart
    return cudart


def _check(result: Any, what: str) -> Any:
    """cuda-python returns ``(err, *values)``; raise on error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    cudart = _cudart()
    if err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(err)[1]
        raise BackendError(f"CUDA error in {what}: {name.decode() if isinstance(name, bytes) else name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _same_release(a: str, b: str) -> bool:
    """TensorRT engines load only in the release that built them (major.minor.patch)."""
    return a.split(".")[:3] == b.split(".")[:3]


def device_info(device_id: int = 0) -> dict[str, str]:
    """This machine's GPU name, compute capability and CUDA runtime version (cuda-python)."""
    cudart = _cudart()
    props = _check(cudart.cudaGetDeviceProperties(int(device_id)), "cudaGetDeviceProperties")
    runtime_version = int(_check(cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion"))
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return {"gpu": name.rstrip("\x00"), "compute_capability": f"{props.major}.{props.minor}",
            "cuda_runtime": f"{runtime_version // 1000}.{runtime_version % 1000 // 10}"}


def engine_mismatch(engine: str | Path, built: dict[str, Any], here: dict[str, str]) -> str | None:
    """Why ``engine`` (sidecar's ``extra["tensorrt"]`` = ``built``) cannot run ``here``, or None.

    ``here`` holds ``version`` (TensorRT) and ``compute_capability``. Built-for values that the
    sidecar does not record (an engine from an older lanekd) are not checked.
    """
    bad = []
    if built.get("version") and not _same_release(str(built["version"]), here["version"]):
        bad.append("TensorRT version")
    if built.get("compute_capability") and str(built["compute_capability"]) != here["compute_capability"]:
        bad.append("compute capability")
    if not bad:
        return None
    source = built.get("from") or "MODEL.onnx"
    return (f"{engine}: built for TensorRT {built.get('version', '?')} on compute capability "
            f"{built.get('compute_capability', '?')} ({built.get('gpu', 'unknown GPU')}), but this machine has "
            f"TensorRT {here['version']} and compute capability {here['compute_capability']} "
            f"({here.get('gpu', 'unknown GPU')}): {' and '.join(bad)} differ; rebuild the engine here with "
            f"`python -m export trt {source} {engine}`")


class _Buffer:
    """A device buffer and a pinned host mirror (as a numpy array) for one tensor."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        cudart = _cudart()
        self.shape, self.dtype = shape, np.dtype(dtype)
        self.nbytes = max(1, int(np.prod(shape)) * self.dtype.itemsize)
        self.device = _check(cudart.cudaMalloc(self.nbytes), "cudaMalloc")
        self.host_ptr = _check(cudart.cudaMallocHost(self.nbytes), "cudaMallocHost")
        raw = (ctypes.c_byte * self.nbytes).from_address(int(self.host_ptr))
        self.host = np.frombuffer(raw, dtype=self.dtype, count=int(np.prod(shape))).reshape(shape)

    def free(self) -> None:
        cudart = _cudart()
        if self.device is not None:
            cudart.cudaFree(self.device)
            self.device = None
        if self.host_ptr is not None:
            self.host = None
            cudart.cudaFreeHost(self.host_ptr)
            self.host_ptr = None


class TensorRTBackend(Backend):
    """Options: ``device_id`` (0), ``cuda_graph`` (False), ``shapes`` ({input name: shape} for the
    dynamic inputs), ``check_compat`` (True: refuse an engine built for another TensorRT or GPU)."""

    name = "tensorrt"
    suffixes = (".engine", ".plan")
    reuses_outputs = True

    def __init__(self, path: str | Path, output_names: Sequence[str] | None = None, **options: Any) -> None:
        super().__init__(path, output_names, **options)
        self._engine = self._context = self._stream = None
        self._graph_exec = self._graph = None
        self._buffers: dict[str, _Buffer] = {}
        self._inputs: list[IOSpec] = []
        self._outputs: list[IOSpec] = []

    @classmethod
    def is_available(cls) -> bool:
        try:
            import tensorrt  # noqa: F401
            _cudart()
        except ImportError:
            return False
        return True

    @classmethod
    def version(cls) -> str:
        import tensorrt as trt
        return trt.__version__

    def open(self) -> "TensorRTBackend":
        import tensorrt as trt

        if int(trt.__version__.split(".")[0]) < 10:
            raise BackendError(f"TensorRT {trt.__version__} found; this runtime needs TensorRT 10 or newer")
        cudart = _cudart()
        device_id = int(self.options.get("device_id", 0))
        _check(cudart.cudaSetDevice(device_id), "cudaSetDevice")
        if self.options.get("check_compat", True) and sidecar_path(self.path).is_file():
            built = ModelMeta.load(sidecar_path(self.path)).extra.get("tensorrt") or {}
            reason = engine_mismatch(self.path, built, {"version": trt.__version__, **device_info(device_id)})
            if reason:
                raise BackendError(reason)
        logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(logger, "")
        self._runtime = trt.Runtime(logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise BackendError(f"{self.path}: TensorRT cannot deserialize this engine (built with another "
                               f"TensorRT version or for another GPU?)")
        self._context = self._engine.create_execution_context()
        self._stream = _check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        for name in names:                      # inputs first: output shapes follow from them
            if engine.get_tensor_mode(name) != trt.TensorIOMode.INPUT:
                continue
            shape = tuple(engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                wanted = (self.options.get("shapes") or {}).get(name)
                if wanted is None:
                    opt = tuple(engine.get_tensor_profile_shape(name, 0)[1])
                    wanted = (1,) + opt[1:]
                shape = tuple(int(d) for d in wanted)
                if not self._context.set_input_shape(name, shape):
                    raise BackendError(f"{self.path}: input {name!r} cannot take shape {shape} (outside the "
                                       f"engine's optimisation profile)")
            self._add(name, shape, trt.nptype(engine.get_tensor_dtype(name)), is_input=True)
        for name in names:
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                continue
            shape = tuple(self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise BackendError(f"{self.path}: output {name!r} has data-dependent shape {shape}")
            self._add(name, shape, trt.nptype(engine.get_tensor_dtype(name)), is_input=False)
        self._check_requested()
        for name, buf in self._buffers.items():
            self._context.set_tensor_address(name, int(buf.device))
        self._open = True
        if self.options.get("cuda_graph"):
            self._capture_graph()
        return self

    def _add(self, name: str, shape: tuple[int, ...], dtype: Any, is_input: bool) -> None:
        self._buffers[name] = _Buffer(shape, dtype)
        spec = IOSpec(name, shape, np.dtype(dtype).name)
        (self._inputs if is_input else self._outputs).append(spec)

    def _enqueue(self) -> None:
        """Copy inputs in, run, copy requested outputs out: all async on the one stream."""
        cudart = _cudart()
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for spec in self._inputs:
            b = self._buffers[spec.name]
            _check(cudart.cudaMemcpyAsync(b.device, b.host_ptr, b.nbytes, h2d, self._stream), "cudaMemcpyAsync")
        if not self._context.execute_async_v3(int(self._stream)):
            raise BackendError(f"{self.path}: execute_async_v3 failed")
        for name in self.output_names:
            b = self._buffers[name]
            _check(cudart.cudaMemcpyAsync(b.host_ptr, b.device, b.nbytes, d2h, self._stream), "cudaMemcpyAsync")

    def _capture_graph(self) -> None:
        cudart = _cudart()
        self._enqueue()                          # one eager run first: TensorRT allocates lazily
        _check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        _check(cudart.cudaStreamBeginCapture(self._stream, mode), "cudaStreamBeginCapture")
        try:
            self._enqueue()
        finally:
            self._graph = _check(cudart.cudaStreamEndCapture(self._stream), "cudaStreamEndCapture")
        self._graph_exec = _check(cudart.cudaGraphInstantiate(self._graph, 0), "cudaGraphInstantiate")

    def close(self) -> None:
        cudart = _cudart() if self._stream is not None or self._buffers else None
        if cudart is not None:
            if self._stream is not None:
                cudart.cudaStreamSynchronize(self._stream)
            if self._graph_exec is not None:
                cudart.cudaGraphExecDestroy(self._graph_exec)
                cudart.cudaGraphDestroy(self._graph)
            for b in self._buffers.values():
                b.free()
            if self._stream is not None:
                cudart.cudaStreamDestroy(self._stream)
        self._graph_exec = self._graph = self._stream = None
        self._buffers.clear()
        self._context = self._engine = None
        self._open = False

    @property
    def inputs(self) -> list[IOSpec]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[IOSpec]:
        return list(self._outputs)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self._open:
            raise BackendError(f"{self.path}: backend not opened (call open() or use `with`)")
        cudart = _cudart()
        for spec in self._inputs:
            if spec.name not in feeds:
                raise BackendError(f"{self.path}: missing input {spec.name!r}")
            arr = feeds[spec.name]
            host = self._buffers[spec.name].host
            if arr.shape != host.shape:
                raise BackendError(f"{self.path}: input {spec.name!r} has shape {arr.shape}, engine wants {host.shape}")
            np.copyto(host, arr, casting="same_kind")
        if self._graph_exec is not None:
            _check(cudart.cudaGraphLaunch(self._graph_exec, self._stream), "cudaGraphLaunch")
        else:
            self._enqueue()
        _check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return {name: self._buffers[name].host for name in self.output_names}

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["cuda_graph"] = self._graph_exec is not None
        return d
