"""mIoU confusion matrix, the LLAMAS CULane-style metric, and their CLI paths."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from distill.eval.llamas import gt_lane_from_row_xs, interpolate_lane, llamas_counts
from distill.eval.miou import ConfusionMatrix
from runtime.cli import main as cli_main
from runtime.lane_io import write_culane_lines


def test_confusion_matrix_and_miou():
    cm = ConfusionMatrix(3)
    gt = np.array([[0, 0, 1, 255], [2, 2, 1, 1]])
    pred = np.array([[0, 1, 1, 2], [2, 0, 1, 1]])
    cm.update(pred, gt)
    assert cm.mat.sum() == 7                                    # the 255 pixel is ignored
    iou = cm.iou()
    assert iou[0] == pytest.approx(1 / 3) and iou[1] == pytest.approx(3 / 4) and iou[2] == pytest.approx(1 / 2)
    assert cm.miou() == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    cm4 = ConfusionMatrix(4)
    cm4.update(pred, gt)
    assert np.isnan(cm4.iou()[3]) and cm4.miou() == pytest.approx(cm.miou())   # absent class skipped
    assert "mIoU" in cm.table(["bg", "solid", "dashed"])
    with pytest.raises(ValueError, match="class 7"):
        cm.update(np.zeros((1, 2)), np.array([[7, 0]]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((1, 2)), np.zeros((2, 1)))


def test_miou_cli(tmp_path):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pr").mkdir()
    gt = np.zeros((8, 8), np.uint8)
    gt[:, 4:] = 1
    gt[0, 0] = 255
    pred = gt.copy()
    pred[0, 0] = 1
    pred[7, 7] = 0
    cv2.imwrite(str(tmp_path / "gt/a.png"), gt)
    cv2.imwrite(str(tmp_path / "pr/a.png"), pred)
    out = tmp_path / "m.json"
    assert cli_main("python -m distill", "", ["distill.eval.cli"],
                    ["eval", "--metric", "miou", "--gt-dir", str(tmp_path / "gt"), "--pred-dir",
                     str(tmp_path / "pr"), "--num-classes", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["iou"]["0"] == pytest.approx(31 / 32) and res["iou"]["1"] == pytest.approx(31 / 32)
    (tmp_path / "pr/a.png").unlink()
    with pytest.raises(FileNotFoundError, match="a.png"):
        cli_main("python -m distill", "", ["distill.eval.cli"],
                 ["eval", "--metric", "miou", "--gt-dir", str(tmp_path / "gt"), "--pred-dir",
                  str(tmp_path / "pr"), "--num-classes", "2"])


def _row_xs(x_bottom, slope):
    xs = np.full(717, -1.0)
    ys = np.arange(200, 717)
    xs[200:] = x_bottom + slope * (716 - ys)
    return xs


def test_llamas_gt_rows_and_counts():
    g1 = gt_lane_from_row_xs(_row_xs(400, 0.6))
    g2 = gt_lane_from_row_xs(_row_xs(900, -0.6))
    assert g1[:, 1].min() == 300 and len(g1) == 417          # rows 300..716 only
    one = np.full(717, -1.0)
    one[500] = 10
    assert gt_lane_from_row_xs(one) is None                    # <= 1 valid point: ignored
    pred = [g[::40] for g in (g1, g2)]                         # sparse points, B-spline interpolated
    assert llamas_counts(pred, [g1, g2]) == (2, 0, 0)
    assert llamas_counts([p + [40, 0] for p in pred], [g1, g2]) == (0, 2, 2)
    assert llamas_counts([pred[0], np.array([[5.0, 5.0]])], [g1, g2]) == (1, 0, 1)   # 1-point pred dropped
    assert llamas_counts([], [g1]) == (0, 0, 1) and llamas_counts(pred, []) == (0, 2, 0)
    s = interpolate_lane(pred[0])
    assert len(s) == 50 and np.allclose(s[[0, -1]], pred[0][[0, -1]])


def test_llamas_cli(tmp_path):
    g = gt_lane_from_row_xs(_row_xs(400, 0.6))
    write_culane_lines(tmp_path / "anno/valid/images-2014-12-22-12-35-10_mapping_280S_ramps/a.lines.txt", [g])
    write_culane_lines(tmp_path / "pred/valid/images-2014-12-22-12-35-10_mapping_280S_ramps/a.lines.txt",
                       [g[::50], g[::50] + [300, 0]])
    out = tmp_path / "l.json"
    assert cli_main("python -m distill", "", ["distill.eval.cli"],
                    ["eval", "--metric", "llamas", "--anno-root", str(tmp_path / "anno"), "--pred-root",
                     str(tmp_path / "pred"), "--json", str(out), "--per-image"]) == 0
    res = json.loads(out.read_text())
    assert (res["tp"], res["fp"], res["fn"]) == (1, 1, 0) and len(res["per_image"]) == 1


def test_cli_requires_inputs():
    with pytest.raises(ValueError, match="--list and --split-dir"):
        cli_main("python -m distill", "", ["distill.eval.cli"],
                 ["eval", "--metric", "culane", "--anno-root", "a", "--pred-root", "b"])
    with pytest.raises(ValueError, match="--gt"):
        cli_main("python -m distill", "", ["distill.eval.cli"], ["eval", "--metric", "tusimple", "--pred", "x"])
