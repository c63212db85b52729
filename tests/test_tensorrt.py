"""TensorRT engines: build FP32/FP16 from a verified ONNX and match ONNX Runtime (skipped without
TensorRT and a GPU); without TensorRT the builder fails with a clear message."""
from __future__ import annotations

import importlib.util

import pytest

from export.onnx import ExportError
from export.tensorrt import TensorRTError, build_engine

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed; this checks the message given without it")
def test_missing_tensorrt_names_the_gpu_extra(tmp_path):
    from export.deploy import DeployModule
    from export.onnx import export_module
    from tests.test_export import SIZE, BumpLanes, bump_meta, road_frames

    module = DeployModule(BumpLanes(SIZE[1]).eval(), "lanes")
    src = export_module(module, bump_meta(module, False, False), tmp_path / "m.onnx", frames=road_frames(1),
                        verify_frames=1)
    with pytest.raises(TensorRTError, match=r"pip install \.\[gpu\]"):
        build_engine(src, tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists()


def test_bad_precision_and_suffix_are_refused_before_tensorrt(tmp_path):
    with pytest.raises(ExportError, match="unknown precision"):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", precision="int4")
    (tmp_path / "m.onnx").write_bytes(b"")
    with pytest.raises(ExportError, match=r"\.engine or \.plan"):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.trt")


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(not HAS_TRT, reason="TensorRT is not installed (pip install .[gpu] on a GPU machine)")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_onnxruntime(precision, tmp_path):
    from export.deploy import DeployModule
    from export.onnx import export_module
    from export.verify import verify
    from tests.test_export import SIZE, BumpLanes, bump_meta, road_frames

    module = DeployModule(BumpLanes(SIZE[1]).eval(), "lanes")
    src = export_module(module, bump_meta(module, False, False), tmp_path / "m.onnx", frames=road_frames(1),
                        verify_frames=1)
    eng = build_engine(src, tmp_path / f"m_{precision}.engine", precision=precision, workspace_gb=1)
    assert eng.read_bytes()[:4] != b"{\n  "        # TensorRT's own bytes, no prepended metadata
    rep = verify(src, eng, frames=road_frames(3, seed=2), k=3, quiet=True)
    assert rep.ok, rep.failures
