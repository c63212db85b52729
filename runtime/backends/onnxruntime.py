"""ONNX Runtime backend: CPU, CUDA and TensorRT execution providers.

Providers are chosen by availability and option: ``providers=None`` (auto) uses CUDA when the
installed onnxruntime has it, then CPU; the TensorRT provider is used only when asked for (it
builds an engine on first run, which takes minutes). On a GPU provider the input is bound once
to a device buffer and updated in place (I/O binding), so each frame costs one host->device copy
and the outputs come back in one device->host copy.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from runtime.backends.base import Backend, BackendError, IOSpec

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
              "tensor(int8)": "int8", "tensor(int32)": "int32", "tensor(int64)": "int64",
              "tensor(bool)": "bool", "tensor(double)": "float64"}


def resolve_providers(requested: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """Map aliases to provider names; ``None``/``auto`` -> CUDA (if available) then CPU.

    An explicitly requested provider that is not available is an error, never a silent fallback.
    """
    if not requested or list(requested) == ["auto"]:
        chosen = [p for p in ("CUDAExecutionProvider",) if p in available]
        return chosen + ["CPUExecutionProvider"]
    out = []
    for p in requested:
        for part in str(p).split(","):
            part = part.strip()
            if not part:
                continue
            name = PROVIDER_ALIASES.get(part.lower(), part)
            if name not in available:
                raise BackendError(f"onnxruntime provider {part!r} is not available here; available: "
                                   f"{', '.join(available)}")
            if name not in out:
                out.append(name)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")   # ORT assigns nodes a GPU provider cannot run to the CPU
    return out


class OnnxRuntimeBackend(Backend):
    """Options: ``providers`` (list, aliases cpu/cuda/tensorrt), ``threads`` (intra-op),
    ``inter_threads``, ``device_id``, ``trt_cache`` (TensorRT provider's engine cache folder),
    ``spin`` (CPU only: let idle intra-op threads spin, ONNX Runtime's default; off here).

    The TensorRT provider runs the precision-explicit ONNX as it is (FP16 weights, INT8 Q/DQ):
    its weak-typing FP16 and INT8 switches are never set."""

    name = "onnxruntime"
    suffixes = (".onnx",)

    def __init__(self, path: str | Path, output_names: Sequence[str] | None = None, **options: Any) -> None:
        super().__init__(path, output_names, **options)
        self.session = None
        self.providers: list[str] = []
        self._binding = None
        self._device_inputs: dict[str, Any] = {}

    @classmethod
    def is_available(cls) -> bool:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return False
        return True

    @classmethod
    def version(cls) -> str:
        import onnxruntime as ort
        return ort.__version__

    @classmethod
    def available_providers(cls) -> list[str]:
        import onnxruntime as ort
        return list(ort.get_available_providers())

    def open(self) -> "OnnxRuntimeBackend":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if self.options.get("threads"):
            so.intra_op_num_threads = int(self.options["threads"])
        if self.options.get("inter_threads"):
            so.inter_op_num_threads = int(self.options["inter_threads"])
        so.log_severity_level = 3
        self.providers = resolve_providers(self.options.get("providers"), ort.get_available_providers())
        if self.providers == ["CPUExecutionProvider"] and not self.options.get("spin"):
            # idle intra-op threads sleep instead of spinning between runs: the pipeline's decode,
            # drawing and encoding threads get those cores (1.2-1.6x faster inference on a busy
            # 2-core machine, benchmarks/RESULTS.md "CPU paths"); spin=True turns spinning back on
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        device_id = int(self.options.get("device_id", 0))
        provider_opts: list[dict[str, Any]] = []
        for p in self.providers:
            if p == "TensorrtExecutionProvider":
                o: dict[str, Any] = {"device_id": device_id}
                if self.options.get("trt_cache"):
                    o.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(self.options["trt_cache"]))
                provider_opts.append(o)
            elif p == "CUDAExecutionProvider":
                provider_opts.append({"device_id": device_id})
            else:
                provider_opts.append({})
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=self.providers,
                                                provider_options=provider_opts)
        except Exception as exc:  # ORT raises its own exception types (InvalidGraph, Fail, ...)
            raise BackendError(f"{self.path}: onnxruntime cannot load the model: {exc}") from None
        self.providers = self.session.get_providers()
        self._check_requested()
        if any(p in _GPU_PROVIDERS for p in self.providers):
            self._binding = self.session.io_binding()
        self._open = True
        return self

    def close(self) -> None:
        self._binding = None
        self._device_inputs.clear()
        self.session = None
        self._open = False

    @staticmethod
    def _spec(arg: Any) -> IOSpec:
        shape = tuple(d if isinstance(d, int) else str(d) for d in arg.shape)
        return IOSpec(arg.name, shape, _ORT_TYPES.get(arg.type, arg.type))

    @property
    def inputs(self) -> list[IOSpec]:
        self._require_open()
        return [self._spec(a) for a in self.session.get_inputs()]

    @property
    def outputs(self) -> list[IOSpec]:
        self._require_open()
        return [self._spec(a) for a in self.session.get_outputs()]

    def _require_open(self) -> None:
        if self.session is None:
            raise BackendError(f"{self.path}: backend not opened (call open() or use `with`)")

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._require_open()
        feeds = self._feeds_as_declared(feeds)
        names = self.output_names
        if self._binding is None:
            return dict(zip(names, self.session.run(names, feeds)))
        import onnxruntime as ort

        b = self._binding
        device_id = int(self.options.get("device_id", 0))
        for name, arr in feeds.items():
            dev = self._device_inputs.get(name)
            if dev is None or tuple(dev.shape()) != arr.shape:
                dev = self._device_inputs[name] = ort.OrtValue.ortvalue_from_numpy(arr, "cuda", device_id)
                b.bind_ortvalue_input(name, dev)
            else:
                dev.update_inplace(arr)
        b.clear_binding_outputs()
        for name in names:
            b.bind_output(name, "cpu")
        self.session.run_with_iobinding(b)
        return dict(zip(names, b.copy_outputs_to_cpu()))

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["providers"] = list(self.providers)
        d["io_binding"] = self._binding is not None
        return d
