"""The one small interface every inference backend implements, and backend selection.

A backend wraps one model file. ``open()`` loads it (``close()`` frees it; both via ``with``),
``inputs``/``outputs`` describe its tensors as the model itself declares them, and
``infer(feeds) -> outputs`` runs it. Third-party libraries (onnxruntime, tensorrt, cuda-python,
torch) are imported inside each backend module, so ``import runtime`` needs none of them.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from runtime.metadata import MetadataError, ModelMeta


class BackendError(RuntimeError):
    """A backend that is unavailable, or a model it cannot run."""


@dataclass(frozen=True)
class IOSpec:
    name: str
    shape: tuple[int | str, ...]     # symbolic or dynamic dims as strings / -1
    dtype: str                       # numpy dtype name


class Backend(ABC):
    """Base class. Subclasses set ``name`` and ``suffixes`` and implement the abstract methods.

    ``output_names`` restricts what ``infer`` fetches (the fused path asks only for the peaks).
    """

    name: ClassVar[str] = ""
    suffixes: ClassVar[tuple[str, ...]] = ()
    reuses_outputs: ClassVar[bool] = False   # True: ``infer`` returns buffers the next call overwrites

    def __init__(self, path: str | Path, output_names: Sequence[str] | None = None, **options: Any) -> None:
        self.path = Path(path)
        self.options = options
        self._requested = list(output_names) if output_names else None
        self._open = False

    # -- lifecycle ---------------------------------------------------------------------------
    @abstractmethod
    def open(self) -> "Backend":
        """Load the model; raises ``BackendError`` with the reason if it cannot."""

    @abstractmethod
    def close(self) -> None:
        """Free the model and any device memory (idempotent)."""

    def __enter__(self) -> "Backend":
        if not self._open:
            self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- description -------------------------------------------------------------------------
    @property
    @abstractmethod
    def inputs(self) -> list[IOSpec]:
        """Input tensors as the model declares them."""

    @property
    @abstractmethod
    def outputs(self) -> list[IOSpec]:
        """Output tensors as the model declares them (all of them, not only the requested)."""

    @property
    def output_names(self) -> list[str]:
        """What ``infer`` returns: the requested outputs, or all."""
        return list(self._requested) if self._requested else [o.name for o in self.outputs]

    @abstractmethod
    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model once. Returned arrays may be reused buffers: copy to keep them."""

    @classmethod
    @abstractmethod
    def is_available(cls) -> bool:
        """Whether this backend's libraries import here (cheap; loads no model)."""

    @classmethod
    def version(cls) -> str:
        return ""

    auto_note: str = ""                      # why ``auto`` did not pick its first choice, if so

    def describe(self) -> dict[str, Any]:
        d = {"backend": self.name, "model": str(self.path), "version": self.version()}
        if self.auto_note:
            d["auto"] = self.auto_note
        return d

    def _feeds_as_declared(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's inputs from ``feeds``; float arrays cast to the declared float type (an
        FP16-input model fed the float32 pre-processing)."""
        out = {}
        for spec in self.inputs:
            if spec.name not in feeds:
                raise BackendError(f"{self.path}: missing input {spec.name!r}")
            arr = feeds[spec.name]
            if arr.dtype.name != spec.dtype and spec.dtype in ("float16", "float32"):
                arr = arr.astype(spec.dtype)
            out[spec.name] = arr
        return out

    def _check_requested(self) -> None:
        names = {o.name for o in self.outputs}
        missing = [n for n in (self._requested or []) if n not in names]
        if missing:
            raise BackendError(f"{self.path}: model has no output(s) {missing}; it has {sorted(names)}")


def library_imports(module: str) -> bool:
    """Whether ``module`` imports here (what each backend's ``is_available`` asks)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


# name -> "module:Class"; imported only when chosen, so a missing library breaks nothing else.
BACKENDS: dict[str, str] = {
    "onnxruntime": "runtime.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "runtime.backends.openvino:OpenVinoBackend",
    "tensorrt": "runtime.backends.tensorrt:TensorRTBackend",
    "torch": "runtime.backends.torch:TorchBackend",
}
SUFFIXES: dict[str, str] = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt",
                            ".pt2": "torch", ".pt": "torch", ".pth": "torch"}


def backend_class(name: str) -> type[Backend]:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def auto_onnx_backend(model: str | Path | None = None) -> str:
    """What ``auto`` runs an ``.onnx`` file on here: ONNX Runtime when it has a GPU provider,
    else OpenVINO when installed (faster on x86 CPUs: benchmarks/RESULTS.md, CPU paths), else
    ONNX Runtime on the CPU. A quantised file (its sidecar says int8) stays on ONNX Runtime:
    OpenVINO 2026.4 crashes compiling lanekd's Q/DQ graphs, and not always in its child probe."""
    ort = backend_class("onnxruntime")
    if ort.is_available() and set(ort.available_providers()) & {"CUDAExecutionProvider",
                                                                "TensorrtExecutionProvider"}:
        return "onnxruntime"
    if model is not None and _sidecar_precision(Path(model)) == "int8":
        return "onnxruntime"
    if backend_class("openvino").is_available():
        return "openvino"
    return "onnxruntime"


def _sidecar_precision(model: Path) -> str | None:
    from runtime.metadata import sidecar_path

    try:
        return ModelMeta.load(sidecar_path(model)).precision
    except MetadataError:
        return None


def choose_backend(model: str | Path, backend: str = "auto") -> str:
    """The backend for ``model``: from its suffix when ``auto``, else checked against it."""
    suffix = Path(model).suffix.lower()
    natural = SUFFIXES.get(suffix)
    if backend == "auto":
        if natural is None:
            raise BackendError(f"{model}: cannot tell the backend from the suffix {suffix!r}; "
                               f"known: {', '.join(sorted(SUFFIXES))}")
        return auto_onnx_backend(model) if natural == "onnxruntime" else natural
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of auto, {', '.join(sorted(BACKENDS))}")
    if natural is not None and natural != backend and suffix not in backend_class(backend).suffixes:
        raise BackendError(f"{model}: a {suffix} file runs on the {natural} backend, not {backend}")
    return backend


def create_backend(model: str | Path, backend: str = "auto", output_names: Sequence[str] | None = None,
                   **options: Any) -> Backend:
    """Instantiate (not open) the backend for ``model``; raises if its library is unavailable."""
    path = Path(model)
    if not path.is_file():
        raise BackendError(f"model not found: {path}")
    if backend == "auto" and options.get("providers") and SUFFIXES.get(path.suffix.lower()) == "onnxruntime":
        backend = "onnxruntime"             # ONNX Runtime's own options mean ONNX Runtime
    name = choose_backend(path, backend)
    cls = backend_class(name)
    if not cls.is_available():
        raise BackendError(f"backend {name!r} is not available here (its library does not import); "
                           f"see `python -m runtime doctor`")
    return cls(path, output_names=output_names, **options)


def check_against_meta(backend: Backend, meta: ModelMeta) -> None:
    """Fail early when the model's own input disagrees with its sidecar (size, layout, dtype)."""
    from runtime.preprocess import input_layout

    layout, want = input_layout(meta)
    if len(backend.inputs) != 1:
        raise MetadataError(f"{backend.path}: expected one input, the model has "
                            f"{[i.name for i in backend.inputs]}")
    got = backend.inputs[0]
    if got.name != meta.inputs[0].name:
        raise MetadataError(f"{backend.path}: input is named {got.name!r}, the sidecar says {meta.inputs[0].name!r}")
    dims = list(got.shape)
    if len(dims) != 4 or any(isinstance(d, int) and d > 0 and d != w for d, w in zip(dims[1:], want)):
        raise MetadataError(f"{backend.path}: model input {got.name!r} has shape {dims}, but the sidecar's "
                            f"{layout} geometry needs [N, {', '.join(map(str, want))}]")
    want_dtype = "uint8" if layout == "NHWC" else "float32"
    if got.dtype not in (want_dtype, "float16") or (layout == "NHWC" and got.dtype != "uint8"):
        raise MetadataError(f"{backend.path}: model input dtype {got.dtype}, the sidecar layout {layout} "
                            f"needs {want_dtype}")
    names = {o.name for o in backend.outputs}
    missing = [o.name for o in meta.outputs if o.name not in names]
    if missing:
        raise MetadataError(f"{backend.path}: sidecar lists output(s) {missing} the model lacks "
                            f"(model outputs: {sorted(names)})")
    check_output_shapes(backend, meta)


def _fixed(d: Any) -> bool:
    return isinstance(d, int) and not isinstance(d, bool) and d > 0


def check_output_shapes(backend: Backend, meta: ModelMeta) -> None:
    """Each output's rank, and every dim both the model and the sidecar fix, must agree: lanes
    decoded from a model with other class counts or sizes than its sidecar says would be garbage."""
    model = {o.name: list(o.shape) for o in backend.outputs}
    for spec in meta.outputs:
        got, want = model.get(spec.name), list(spec.shape)
        if got is None or not want or not got:
            continue
        bad = len(got) != len(want) or any(_fixed(g) and _fixed(w) and g != w for g, w in zip(got, want))
        if bad:
            raise MetadataError(f"{backend.path}: output {spec.name!r} has shape {got}, but its sidecar "
                                f"{backend.path.with_suffix('.json').name} says {want}; the sidecar belongs "
                                f"to another model (export them together)")
