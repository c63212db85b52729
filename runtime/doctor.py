"""What this machine can run: backends and their versions, ONNX Runtime providers, OpenCV's
video I/O, GPUs, a display. Imports each optional library inside a guard; never torch."""
from __future__ import annotations

import importlib.util
import platform
from typing import Any

import cv2
import numpy as np

from runtime.backends.base import BACKENDS, SUFFIXES, auto_onnx_backend, backend_class
from runtime.bench import _pkg_version, gpu_info, is_jetson, jetson_power_mode
from runtime.sinks import has_display


def _cv2_video_backends() -> list[str]:
    try:
        return [cv2.videoio_registry.getBackendName(b) for b in cv2.videoio_registry.getStreamBackends()]
    except AttributeError:
        return []


def doctor() -> dict[str, Any]:
    """A report of what is available; each backend entry says why when it is not."""
    backends: dict[str, Any] = {}
    for name in BACKENDS:
        entry: dict[str, Any] = {}
        try:
            cls = backend_class(name)
            entry["available"] = bool(cls.is_available())
            if entry["available"]:
                entry["version"] = cls.version()
            else:
                entry["reason"] = {"onnxruntime": "onnxruntime is not installed",
                                   "openvino": "openvino is not installed (pip install .[openvino])",
                                   "tensorrt": "tensorrt and/or cuda-python are not installed",
                                   "torch": "torch is not installed"}[name]
        except Exception as exc:     # a library that is installed but broken
            entry = {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
        backends[name] = entry
    if backends["onnxruntime"].get("available"):
        from runtime.backends.onnxruntime import OnnxRuntimeBackend
        backends["onnxruntime"]["providers"] = OnnxRuntimeBackend.available_providers()
    if backends["openvino"].get("available"):
        from runtime.backends.openvino import OpenVinoBackend
        backends["openvino"]["devices"] = OpenVinoBackend.devices()
    report: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(),
        "numpy": np.__version__, "opencv": cv2.__version__,
        "opencv_video_backends": _cv2_video_backends(),
        "cuda-python": _pkg_version("cuda-python") or ("installed" if importlib.util.find_spec("cuda") else None),
        "backends": backends, "gpus": gpu_info(), "display": has_display(),
        "auto": {suffix: (auto_onnx_backend() if natural == "onnxruntime" else natural)
                 for suffix, natural in SUFFIXES.items()},
    }
    if is_jetson():
        report["jetson_power_mode"] = jetson_power_mode()
    return report


def format_doctor(report: dict[str, Any]) -> str:
    lines = [f"python {report['python']}  numpy {report['numpy']}  opencv {report['opencv']} "
             f"(video: {', '.join(report['opencv_video_backends']) or '?'})",
             f"platform {report['platform']}"]
    for name, b in report["backends"].items():
        if b.get("available"):
            extra = f"  providers: {', '.join(b['providers'])}" if b.get("providers") else ""
            extra += f"  devices: {', '.join(b['devices'])}" if b.get("devices") else ""
            lines.append(f"  [ok]  {name:12s} {b.get('version', '')}{extra}")
        else:
            lines.append(f"  [--]  {name:12s} {b.get('reason', '')}")
    lines.append("--backend auto: " + ", ".join(f"{k} -> {v}" for k, v in report["auto"].items()))
    lines.append(f"cuda-python: {report['cuda-python'] or 'not installed'}")
    gpus = report["gpus"]
    lines.append("GPUs: " + (", ".join(f"{g['name']} (driver {g['driver']}, {g['memory']})" for g in gpus)
                             if gpus else "none found (no nvidia-smi)"))
    if "jetson_power_mode" in report:
        lines.append(f"Jetson power mode: {report['jetson_power_mode'] or 'unknown'}")
    lines.append(f"display for --show: {'yes' if report['display'] else 'no'}")
    return "\n".join(lines)
