"""FP16 and INT8 (QDQ) models: they run, keep FP32 I/O, agree with FP32 at task level within the
stated bounds, carry their sidecar, and refuse bad input without leaving files behind."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from export.deploy import DeployModule
from export.onnx import ExportError, embedded_meta, export_module
from export.quantize import qdq_violations, quantize_fp16, quantize_int8
from export.parity import verify
from export.verify import OrtRunner, model_inputs
from runtime.metadata import ModelMeta, sidecar_path
from tests.test_export import SIZE, BumpLanes, bump_meta, road_frames

torch.set_num_threads(1)


class ConvBumps(BumpLanes):
    """``BumpLanes`` behind a small conv stack, so quantisation has convolutions to work on."""

    def __init__(self, width: int) -> None:
        super().__init__(width)
        torch.manual_seed(0)
        self.feat = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1))
        with torch.no_grad():       # start near the identity so the lane structure survives
            self.feat[0].weight.mul_(0.1)
            self.feat[0].weight[:3, :, 1, 1] += torch.eye(3)
            self.feat[2].weight.zero_()
            self.feat[2].weight[:, :3, 0, 0] = torch.eye(3)

    def forward_taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return super().forward_taps(self.feat(x))


@pytest.fixture(scope="module")
def fp32(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("q")
    module = DeployModule(ConvBumps(SIZE[1]).eval(), "lanes")
    return export_module(module, bump_meta(module, False, False), d / "model.onnx", frames=road_frames(2),
                         verify_frames=2)


def _io(path: Path) -> list[int]:
    m = onnx.load(str(path))
    return [t.type.tensor_type.elem_type for t in list(m.graph.input) + list(m.graph.output)]


def test_fp16_runs_keeps_fp32_io_and_agrees(fp32, tmp_path):
    out = quantize_fp16(fp32, tmp_path / "model_fp16.onnx", frames=road_frames(3, seed=7), verify_frames=3)
    assert set(_io(out)) == {TensorProto.FLOAT}
    inits = {i.data_type for i in onnx.load(str(out)).graph.initializer}
    assert TensorProto.FLOAT16 in inits
    meta = ModelMeta.load(sidecar_path(out))
    assert meta.precision == "fp16" and embedded_meta(out).to_dict() == meta.to_dict()
    v = meta.extra["verification"]
    assert v["ok"] and v["argmax_agreement"] >= 0.99 and v["outputs"]["probs"]["max_abs"] <= 1e-2


def test_int8_qdq_calibrated_agrees_at_task_level(fp32, tmp_path):
    frames = road_frames(6, seed=11)
    out = quantize_int8(fp32, tmp_path / "model_int8.onnx", frames, method="minmax", calib_frames=6,
                        verify_source=road_frames(3, seed=12), verify_frames=3)
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert set(_io(out)) == {TensorProto.FLOAT}
    meta = ModelMeta.load(sidecar_path(out))
    assert meta.precision == "int8" and meta.extra["quantization"]["method"] == "minmax"
    rep = verify(fp32, out, frames=road_frames(3, seed=13), k=3, quiet=True)
    assert rep.precision == "int8" and rep.ok
    assert rep.argmax_agreement >= 0.95 and rep.lane_count_match >= 0.75
    feeds = model_inputs(meta, road_frames(1, seed=14))
    assert OrtRunner(out)(feeds[0])["probs"].dtype == np.float32


def test_fp16_io_option_gives_float16_inputs_and_outputs(fp32, tmp_path):
    out = quantize_fp16(fp32, tmp_path / "io16.onnx", frames=road_frames(2, seed=7), verify_frames=2, fp16_io=True)
    assert set(_io(out)) == {TensorProto.FLOAT16}
    meta = ModelMeta.load(sidecar_path(out))
    assert meta.inputs[0].dtype == "float16" and meta.extra["quantization"]["keep_io_types"] is False
    assert "Softmax" in meta.extra["quantization"]["fp32_ops"]
    softmax = [n for n in onnx.load(str(out)).graph.node if n.op_type == "Softmax"]
    producers = {o: n for n in onnx.load(str(out)).graph.node for o in n.output}
    cast_in = producers[softmax[0].input[0]]          # the converter feeds the FP32 Softmax through a Cast
    assert cast_in.op_type == "Cast" and cast_in.attribute[0].i == TensorProto.FLOAT


def _qdq_nodes(path: Path):
    m = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    return m, inits, [n for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]


def test_int8_tensorrt_target_is_symmetric_per_channel_and_agrees(fp32, tmp_path):
    out = quantize_int8(fp32, tmp_path / "trt_int8.onnx", road_frames(6, seed=11), method="minmax", target="tensorrt",
                        calib_frames=6, verify_source=road_frames(3, seed=12), verify_frames=3)
    m, inits, qdq = _qdq_nodes(out)
    assert qdq, "no Q/DQ nodes"
    for n in qdq:                                 # every Q/DQ: an int8 zero point that is exactly 0
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), n.name
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    producers = {o: n for n in m.graph.node for o in n.output}
    for conv in convs:                            # both Conv inputs come through a DequantizeLinear
        w_dq, x_dq = producers[conv.input[1]], producers[conv.input[0]]
        assert w_dq.op_type == "DequantizeLinear" and x_dq.op_type == "DequantizeLinear"
        w = inits[w_dq.input[0]]
        scale = inits[w_dq.input[1]]
        assert scale.shape == (w.shape[0],)       # one scale per output channel (axis 0)
        if len(conv.input) > 2:
            assert conv.input[2] in inits         # the bias stays a float initializer: no int32 DQ for TensorRT
    assert not [n for n in m.graph.node if n.op_type == "QuantizeLinear" and producers.get(n.input[0]) is not None
                and producers[n.input[0]].op_type == "Conv"]          # no Q on Conv outputs
    assert qdq_violations(out) == []
    meta = ModelMeta.load(sidecar_path(out))
    assert meta.extra["quantization"]["target"] == "tensorrt" and meta.extra["quantization"]["activation_type"] == "int8"
    rep = verify(fp32, out, frames=road_frames(3, seed=13), k=3, quiet=True)
    assert rep.ok and rep.argmax_agreement >= 0.95


def test_cpu_target_keeps_uint8_activations_and_fails_the_tensorrt_rules(fp32, tmp_path):
    out = quantize_int8(fp32, tmp_path / "cpu_int8.onnx", road_frames(4, seed=11), method="minmax", calib_frames=4,
                        verify_source=road_frames(2, seed=12), verify_frames=2)
    _, inits, qdq = _qdq_nodes(out)
    assert any(inits[n.input[2]].dtype == np.uint8 for n in qdq)
    assert ModelMeta.load(sidecar_path(out)).extra["quantization"]["target"] == "cpu"
    assert any("zero point is not int8" in p for p in qdq_violations(out))


def test_tensorrt_target_refuses_cpu_only_options(fp32, tmp_path):
    for kwargs in ({"per_channel": False}, {"reduce_range": True}, {"activation_type": "uint8"}):
        with pytest.raises(ExportError, match="apply to --target cpu only"):
            quantize_int8(fp32, tmp_path / "t.onnx", road_frames(1), target="tensorrt", **kwargs)
    with pytest.raises(ExportError, match="unknown INT8 target"):
        quantize_int8(fp32, tmp_path / "t.onnx", road_frames(1), target="npu")
    assert list(tmp_path.iterdir()) == []


def test_int8_without_frames_is_refused(fp32, tmp_path):
    with pytest.raises(ExportError, match="INT8 needs calibration frames"):
        quantize_int8(fp32, tmp_path / "q.onnx", frames=None)
    with pytest.raises(ExportError, match="INT8 needs calibration frames"):
        quantize_int8(fp32, tmp_path / "q.onnx", frames=[])
    with pytest.raises(ExportError, match="unknown calibration method"):
        quantize_int8(fp32, tmp_path / "q.onnx", frames=road_frames(1), method="magic")
    assert list(tmp_path.iterdir()) == []


def test_quantising_a_quantised_model_is_refused(fp32, tmp_path):
    half = quantize_fp16(fp32, tmp_path / "h.onnx", frames=road_frames(1), verify_frames=1)
    with pytest.raises(ExportError, match="already fp16"):
        quantize_fp16(half, tmp_path / "h2.onnx")


def test_maxunpool_graph_is_refused_with_a_hint(fp32, tmp_path):
    pool = helper.make_node("MaxPool", ["x"], ["p", "i"], kernel_shape=[2, 2], strides=[2, 2])
    unpool = helper.make_node("MaxUnpool", ["p", "i"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    graph = helper.make_graph([pool, unpool], "unpool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    src = tmp_path / "enet.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(src))
    sidecar_path(src).write_text(sidecar_path(fp32).read_text())
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ExportError, match='decoder="interp"'):
        quantize_fp16(src, tmp_path / "enet_fp16.onnx")
    with pytest.raises(ExportError, match='decoder="interp"'):
        quantize_int8(src, tmp_path / "enet_int8.onnx", frames=road_frames(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_missing_sidecar_is_refused(fp32, tmp_path):
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(fp32.read_bytes())
    with pytest.raises(Exception, match="no sidecar"):
        quantize_fp16(bare, tmp_path / "bare_fp16.onnx")
