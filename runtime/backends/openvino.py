"""OpenVINO backend: the same ONNX file and sidecar as ONNX Runtime, compiled for the CPU.

OpenVINO reads the ONNX directly (FP32, and the Q/DQ INT8 file, whose Q/DQ pairs it folds into
INT8 kernels), so no conversion step or extra artefact is needed. The model is compiled with the
latency hint (one stream, all cores on one request), which is what a frame-by-frame pipeline wants.

Precision: on CPUs with BF16 support OpenVINO would run an FP32 model in bfloat16 by default; this
backend keeps the file's own precision (``inference_precision="f32"``) unless asked otherwise, so an
FP32 file gives FP32 answers here as on every other backend. ``inference_precision="bf16"`` (or
``"device"``, OpenVINO's own default) opts in to the faster, less exact mode.

Quantised graphs: OpenVINO 2026.4's CPU plugin dies with a segmentation fault while compiling some
Q/DQ graphs (ENet's and ERFNet's INT8 files from ``export quantize``: the initial block's
conv+max-pool concat feeding a float BatchNormalization). A crash cannot be caught in-process, so a
graph with FakeQuantize ops is first compiled once in a child process (``compiles_in_child``); when
that dies, ``open()`` raises ``OpenVinoCrash`` with the reason instead of taking the caller down.

One ``ov.Core`` per process (``core()``): the CPU plugin of every Core that compiles installs a
signal alternate stack (sigaltstack) on the compiling thread and, when it is destroyed, puts back the
one it found. Two Cores released in the order they were created (two backends opened, then closed
in turn) leave the thread's alternate stack pointing at the first plugin's freed memory; the next
Python signal handler on that thread (Ctrl-C, SIGTERM, torch DataLoader's SIGCHLD) cannot be
delivered and the kernel kills the process with SIGSEGV, before faulthandler (which runs on that
stack too) can say anything. With one Core there is one plugin and one alternate stack, kept until
the interpreter exits.
"""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from runtime.backends.base import Backend, BackendError, IOSpec, library_imports

PRECISIONS = ("f32", "bf16", "f16", "device")
_OV_TYPES = {"f32": "float32", "f16": "float16", "u8": "uint8", "i8": "int8", "i32": "int32", "i64": "int64",
             "boolean": "bool", "f64": "float64"}


class OpenVinoCrash(BackendError):
    """OpenVINO cannot compile this model here without crashing the process."""


_CORE = None
_CORE_LOCK = threading.Lock()


def core() -> Any:
    """This process's ``ov.Core``, made on first use and kept (see the module docstring)."""
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            import openvino as ov

            _CORE = ov.Core()
        return _CORE


_PROBE = ("import sys, json, openvino as ov; c = ov.Core(); "
          "c.compile_model(c.read_model(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]))")


def compiles_in_child(path: str | Path, device: str, config: dict[str, str], timeout: float = 300.0) -> str:
    """Compile ``path`` in a child Python; "" when it works, else why not (the signal or error)."""
    import json

    try:
        r = subprocess.run([sys.executable, "-c", _PROBE, str(path), device, json.dumps(config)],
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"compiling took over {timeout:.0f} s"
    if r.returncode == 0:
        return ""
    if r.returncode < 0:
        return f"the compiler crashed (signal {-r.returncode})"
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    return lines[-1] if lines else f"exit code {r.returncode}"


def _graph_io_names(path: Path) -> tuple[list[str], list[str]]:
    """The ONNX graph's input names (initialisers excluded) and output names, in order."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in g.initializer}
    return [i.name for i in g.input if i.name not in inits], [o.name for o in g.output]


class OpenVinoBackend(Backend):
    """Options: ``threads`` (inference threads), ``device`` (default ``CPU``), ``inference_precision``
    (``f32`` default, ``bf16``, ``f16``, or ``device`` for OpenVINO's default on that device)."""

    name = "openvino"
    suffixes = (".onnx",)
    reuses_outputs = True     # outputs are views of the infer request's tensors

    def __init__(self, path: str | Path, output_names: Sequence[str] | None = None, **options: Any) -> None:
        super().__init__(path, output_names, **options)
        self.compiled = None
        self.request = None
        self._inputs: list[IOSpec] = []
        self._outputs: list[IOSpec] = []
        self._ports: dict[str, Any] = {}
        self.config: dict[str, str] = {}

    @classmethod
    def is_available(cls) -> bool:
        return library_imports("openvino")

    @classmethod
    def version(cls) -> str:
        import openvino as ov
        return ov.__version__.split("-")[0]

    @classmethod
    def devices(cls) -> list[str]:
        return list(core().available_devices)

    def _compile_config(self) -> dict[str, str]:
        precision = str(self.options.get("inference_precision") or "f32")
        if precision not in PRECISIONS:
            raise BackendError(f"openvino inference_precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if self.options.get("threads"):
            config["INFERENCE_NUM_THREADS"] = str(int(self.options["threads"]))
        if precision != "device":
            config["INFERENCE_PRECISION_HINT"] = precision
        return config

    def open(self) -> "OpenVinoBackend":
        device = str(self.options.get("device") or "CPU")
        self.config = self._compile_config()
        ov_core = core()
        if device not in ov_core.available_devices:
            raise BackendError(f"openvino device {device!r} is not available here; available: "
                               f"{', '.join(ov_core.available_devices)}")
        try:
            model = ov_core.read_model(str(self.path))
            if any(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops()):
                why = compiles_in_child(self.path, device, self.config)
                if why:
                    raise OpenVinoCrash(f"{self.path}: openvino {self.version()} cannot compile this quantised "
                                        f"model ({why}); run it with --backend onnxruntime")
            self.compiled = ov_core.compile_model(model, device, self.config)
        except BackendError:
            raise
        except Exception as exc:   # OpenVINO raises RuntimeError / its own types with the parser's text
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"{self.path}: openvino cannot load the model: {first}") from None
        # OpenVINO may give a port several names (a graph output and the tensor it was fused
        # from); the ONNX graph's own input/output names are the ones callers and sidecars use
        in_names, out_names = _graph_io_names(self.path)
        self._inputs = [self._spec(self.compiled.input(n), n) for n in in_names]
        self._ports = {n: self.compiled.output(n) for n in out_names}
        self._outputs = [self._spec(port, n) for n, port in self._ports.items()]
        self.request = self.compiled.create_infer_request()
        try:
            self._check_requested()
        except BackendError:
            self.close()
            raise
        self._open = True
        return self

    def close(self) -> None:
        self.request = None
        self.compiled = None
        self._ports = {}
        self._open = False

    @staticmethod
    def _spec(port: Any, name: str) -> IOSpec:
        shape = tuple(d.get_length() if d.is_static else "?" for d in port.get_partial_shape())
        return IOSpec(name, shape, _OV_TYPES.get(port.get_element_type().get_type_name(), str(port.get_element_type())))

    def _require_open(self) -> None:
        if self.request is None:
            raise BackendError(f"{self.path}: backend not opened (call open() or use `with`)")

    @property
    def inputs(self) -> list[IOSpec]:
        self._require_open()
        return list(self._inputs)

    @property
    def outputs(self) -> list[IOSpec]:
        self._require_open()
        return list(self._outputs)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._require_open()
        inputs = self._feeds_as_declared(feeds)
        # share_inputs: the request reads the caller's array in place (no copy); the pipeline
        # keeps each input alive until its outputs are taken
        self.request.infer(inputs, share_inputs=True)
        return {n: self.request.get_tensor(self._ports[n]).data for n in self.output_names}

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["device"] = str(self.options.get("device") or "CPU")
        d["config"] = dict(self.config)
        return d
