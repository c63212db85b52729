"""A stand-in lane model that needs no training: a real ONNX graph plus its sidecar.

A 1x1 convolution on the normalised image makes each lane slot respond to one colour (red, green,
blue, white lanes on a grey road; ``LANE_BGR``), so frames drawn in those colours decode to known
lanes. It exercises every runtime path a trained model does (full probability maps or fused
row peaks, fused uint8 pre-processing, existence output, marking classes) in microseconds, which
is what the test-suite and the runtime benchmarks need. Built with ``onnx.helper`` only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime.geometry import Geometry
from runtime.metadata import IMAGENET_MEAN, IMAGENET_STD, ModelMeta, TensorSpec
from runtime.postprocess import LaneDecodeConfig, sample_rows

# BGR colour of each lane slot; the stand-in recognises them
LANE_BGR = {1: (0, 0, 255), 2: (0, 255, 0), 3: (255, 0, 0), 4: (255, 255, 255)}

# 1x1 conv on normalised RGB: background bias 2; slot k responds to its colour.
WEIGHT = np.array([[0, 0, 0], [2, -1, -1], [-1, 2, -1], [-1, -1, 2], [2, 2, 2]], np.float32)
BIAS = np.array([2, 0, 0, 0, -9], np.float32)


def _const(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr), name)


def build_standin(path: str | Path, *, fused_pre: bool = False, fused_post: bool = False, marking: bool = False,
                  exist: bool = True, in_hw: tuple[int, int] = (32, 96), frame_hw: tuple[int, int] = (72, 200),
                  crop_top: int = 8, rows: list[float] | None = None) -> Path:
    """Write ``path`` (.onnx) and its ``.json`` sidecar; returns ``path``.

    ``rows``: the original-frame rows the lanes are sampled on (default: every 5 px from the
    bottom up to row 21).
    """
    h, w = in_hw
    nodes, inits = [], []
    mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
    if fused_pre:
        inp = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", h, w, 3])
        # fold BGR->RGB and (x - mean) / std into the conv
        wk = np.zeros((5, 3), np.float32)
        for c in range(3):
            wk[:, 2 - c] = WEIGHT[:, c] / std[c]
        bk = BIAS - (WEIGHT * (mean / std)).sum(axis=1)
        nodes += [helper.make_node("Cast", ["image"], ["xf"], to=TensorProto.FLOAT),
                  helper.make_node("Transpose", ["xf"], ["x"], perm=[0, 3, 1, 2])]
    else:
        inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, h, w])
        wk, bk = WEIGHT, BIAS
        nodes.append(helper.make_node("Identity", ["input"], ["x"]))
    inits += [_const("W", wk.reshape(5, 3, 1, 1)), _const("B", bk.astype(np.float32))]
    nodes += [helper.make_node("Conv", ["x", "W", "B"], ["logits"]),
              helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    outputs = []
    g = Geometry(frame_hw[0], frame_hw[1], h, w, crop_top)
    rows_y = [float(y) for y in range(frame_hw[0] - 1, 20, -5)] if rows is None else list(rows)
    if marking:
        if fused_post:
            nodes += [helper.make_node("ArgMax", ["probs"], ["am"], axis=1, keepdims=0),
                      helper.make_node("Cast", ["am"], ["classes"], to=TensorProto.UINT8)]
            outputs.append(helper.make_tensor_value_info("classes", TensorProto.UINT8, ["N", h, w]))
        else:
            outputs.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 5, h, w]))
    else:
        if exist:
            inits += [_const("s1", np.array([1])), _const("s5", np.array([5])), _const("ax1", np.array([1]))]
            nodes += [helper.make_node("ReduceMax", ["logits"], ["lmax"], axes=[2, 3], keepdims=0),
                      helper.make_node("Slice", ["lmax", "s1", "s5", "ax1"], ["lsl"]),
                      helper.make_node("Sigmoid", ["lsl"], ["exist"])]
        if fused_post:
            in_rows = sample_rows(g, LaneDecodeConfig(rows=rows_y))[1]
            inits += [_const("rows", in_rows.astype(np.int64)), _const("c1", np.array([1])),
                      _const("c5", np.array([5])), _const("cax", np.array([1]))]
            nodes += [helper.make_node("Slice", ["probs", "c1", "c5", "cax"], ["lanes"]),
                      helper.make_node("Gather", ["lanes", "rows"], ["band"], axis=2),
                      helper.make_node("ReduceMax", ["band"], ["peak_vals"], axes=[3], keepdims=0),
                      helper.make_node("ArgMax", ["band"], ["am"], axis=3, keepdims=0),
                      helper.make_node("Cast", ["am"], ["peak_cols"], to=TensorProto.INT32)]
            if exist:
                outputs.append(helper.make_tensor_value_info("exist", TensorProto.FLOAT, ["N", 4]))
            outputs += [helper.make_tensor_value_info("peak_vals", TensorProto.FLOAT, ["N", 4, len(in_rows)]),
                        helper.make_tensor_value_info("peak_cols", TensorProto.INT32, ["N", 4, len(in_rows)])]
        else:
            outputs.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 5, h, w]))
            if exist:
                outputs.append(helper.make_tensor_value_info("exist", TensorProto.FLOAT, ["N", 4]))
    graph = helper.make_graph(nodes, "tiny_lanes", [inp], outputs, initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="lanekd-standin")
    m.ir_version = 8
    onnx.checker.check_model(m)
    path = Path(path)
    onnx.save(m, str(path))
    in_spec = TensorSpec(inp.name, ["N", h, w, 3] if fused_pre else ["N", 3, h, w], "uint8" if fused_pre else "float32")
    meta = ModelMeta(
        model="tiny", task="marking" if marking else "lanes",
        classes=["background", "red", "green", "blue", "white"] if marking else ["background", "l1", "l2", "l3", "l4"],
        lane_slots=0 if marking else 4, geometry=g, inputs=[in_spec],
        outputs=[TensorSpec(o.name, [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim],
                            "float32") for o in outputs],
        layout="NHWC" if fused_pre else "NCHW", fused_preprocess=fused_pre, fused_postprocess=fused_post,
        sample_rows=rows_y)
    meta.save(path.with_suffix(".json"))
    return path
