"""TensorRT, one recipe for 10.x and 11.x: the precision lives in the ONNX, the builder refuses a file
that does not carry the precision asked for, no removed weak-typing API is referenced anywhere, and
the runtime refuses an engine built for another TensorRT or GPU before deserialising it. Building
and running engines needs a GPU and TensorRT (skipped here with the reason)."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from export.deploy import DeployModule
from export.onnx import ExportError, export_module
from export.tensorrt import TensorRTError, build_engine
from runtime.backends.tensorrt import engine_mismatch
from tests.test_export import SIZE, BumpLanes, bump_meta, road_frames

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
ROOT = Path(__file__).resolve().parents[1]

# Python APIs that TensorRT 11 removed (NVIDIA's 10.x -> 11.x migration guide), and ONNX Runtime's
# TensorRT-provider weak-typing switches; none may appear in lanekd's code.
REMOVED = [r"BuilderFlag\.(FP16|INT8|BF16|FP8|INT4|FP4|OBEY_PRECISION_CONSTRAINTS|PREFER_PRECISION_CONSTRAINTS|DIRECT_IO)",
           r"int8_calibrator", r"IInt8\w*Calibrator", r"platform_has_fast_(fp16|int8)", r"calibration_profile",
           r"quantization_flag", r"\bdevice_memory_size\b", r"trt_fp16_enable", r"trt_int8_enable"]


@pytest.fixture()
def fp32_onnx(tmp_path) -> Path:
    module = DeployModule(BumpLanes(SIZE[1]).eval(), "lanes")
    return export_module(module, bump_meta(module, False, False), tmp_path / "m.onnx", frames=road_frames(1),
                         verify_frames=1)


def test_no_code_path_uses_an_api_tensorrt_11_removed():
    sources = [p for d in ("export", "runtime", "demo", "benchmarks", "distill") for p in (ROOT / d).rglob("*.py")]
    assert any(p.name == "tensorrt.py" for p in sources)
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in sources
            for i, line in enumerate(p.read_text().splitlines(), 1) for pat in REMOVED if re.search(pat, line)]
    assert hits == []


def test_the_pattern_list_catches_the_old_builder():
    old = "config.set_flag(trt.BuilderFlag.FP16)\nconfig.int8_calibrator = c\nbuilder.platform_has_fast_int8"
    assert sum(bool(re.search(p, old)) for p in REMOVED) == 3


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed; this checks the message given without it")
def test_missing_tensorrt_names_the_gpu_extra(fp32_onnx, tmp_path):
    with pytest.raises(TensorRTError, match=r"pip install \.\[gpu\]"):
        build_engine(fp32_onnx, tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists()


def test_fp32_onnx_asked_for_int8_names_the_quantize_command(fp32_onnx, tmp_path):
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ExportError, match=r"an FP32 ONNX, asked for an INT8 engine.*export quantize .*--precision int8 --target tensorrt"):
        build_engine(fp32_onnx, tmp_path / "m.engine", precision="int8")
    with pytest.raises(ExportError, match=r"export quantize .*--precision fp16"):
        build_engine(fp32_onnx, tmp_path / "m.engine", precision="fp16")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_int8_quantised_for_the_cpu_is_refused(fp32_onnx, tmp_path):
    from export.quantize import quantize_int8

    cpu = quantize_int8(fp32_onnx, tmp_path / "cpu.onnx", road_frames(2), method="minmax", calib_frames=2,
                        verify_frames=1, verify_source=road_frames(1, seed=4))
    with pytest.raises(ExportError, match=r"quantised for cpu.*--target tensorrt"):
        build_engine(cpu, tmp_path / "cpu.engine")


def test_bad_precision_and_suffix_are_refused_before_tensorrt(tmp_path):
    with pytest.raises(ExportError, match="unknown precision"):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", precision="int4")
    (tmp_path / "m.onnx").write_bytes(b"")
    with pytest.raises(ExportError, match=r"\.engine or \.plan"):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.trt")


BUILT = {"version": "10.3.0.30", "compute_capability": "8.7", "gpu": "Orin", "from": "/models/m_int8.onnx"}


@pytest.mark.parametrize("here, differs", [
    ({"version": "11.4.0.106", "compute_capability": "8.7", "gpu": "Orin"}, "TensorRT version"),
    ({"version": "10.3.0.26", "compute_capability": "9.0", "gpu": "NVIDIA H200"}, "compute capability"),
])
def test_engine_for_another_tensorrt_or_gpu_is_refused_with_the_rebuild_command(here, differs):
    msg = engine_mismatch("m.engine", BUILT, here)
    assert msg is not None and "\n" not in msg
    assert f"{differs} differ" in msg
    assert "built for TensorRT 10.3.0.30 on compute capability 8.7" in msg
    assert f"TensorRT {here['version']} and compute capability {here['compute_capability']}" in msg
    assert "python -m export trt /models/m_int8.onnx m.engine" in msg


def test_engine_for_this_machine_passes():
    assert engine_mismatch("m.engine", BUILT, {"version": "10.3.0.99", "compute_capability": "8.7"}) is None
    assert engine_mismatch("m.engine", {}, {"version": "11.4.0", "compute_capability": "9.0"}) is None


def test_engine_sidecar_is_checked_before_deserialising(tmp_path):
    """The backend reads the sidecar's built-for record first (so a foreign engine never reaches TensorRT)."""
    src = (ROOT / "runtime" / "backends" / "tensorrt.py").read_text()
    open_body = src[src.index("    def open(self)"):]
    assert open_body.index("engine_mismatch(") < open_body.index("deserialize_cuda_engine(")


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(not HAS_TRT, reason="TensorRT is not installed (pip install .[gpu] on a GPU machine)")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_matches_onnxruntime(precision, fp32_onnx, tmp_path):
    from export.artifacts import read_meta
    from export.parity import verify
    from export.quantize import quantize_fp16, quantize_int8

    src = {"fp32": lambda: fp32_onnx, "fp16": lambda: quantize_fp16(fp32_onnx, tmp_path / "h.onnx"),
           "int8": lambda: quantize_int8(fp32_onnx, tmp_path / "q.onnx", road_frames(4), target="tensorrt",
                                         calib_frames=4)}[precision]()
    eng = build_engine(src, tmp_path / f"m_{precision}.engine", workspace_gb=1)
    assert eng.read_bytes()[:4] != b"{\n  "        # TensorRT's own bytes, no prepended metadata
    built = read_meta(eng).extra["tensorrt"]
    assert built["strongly_typed"] and built["compute_capability"] and built["version"]
    rep = verify(src, eng, frames=road_frames(3, seed=2), k=3, quiet=True)
    assert rep.ok, rep.failures
