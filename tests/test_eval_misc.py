"""mIoU confusion matrix, the LLAMAS CULane-style metric, and their CLI paths."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from distill.data.llamas import llamas_row_xs
from distill.data.sample import DataError
from distill.eval.llamas import evaluate_llamas, gt_lane_from_row_xs, interpolate_lane, llamas_counts
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


def test_miou_cli(tmp_path, capsys):
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
    assert cli_main("python -m distill", "", ["distill.eval.cli"],
                    ["eval", "--metric", "miou", "--gt-dir", str(tmp_path / "gt"), "--pred-dir",
                     str(tmp_path / "pr"), "--num-classes", "2"]) == 2
    assert "a.png" in capsys.readouterr().err


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
    dup = np.array([[600, 716], [600, 716], [610, 600], [620, 500], [630, 400]], float)
    np.testing.assert_allclose(interpolate_lane(dup), interpolate_lane(dup[1:]))   # duplicates dropped


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


def test_cli_requires_inputs(capsys):
    assert cli_main("python -m distill", "", ["distill.eval.cli"],
                    ["eval", "--metric", "culane", "--anno-root", "a", "--pred-root", "b"]) == 2
    assert "--list and --split-dir" in capsys.readouterr().err
    assert cli_main("python -m distill", "", ["distill.eval.cli"], ["eval", "--metric", "tusimple", "--pred", "x"]) == 2
    assert "--gt" in capsys.readouterr().err


# ------------------------------------------------- LLAMAS label JSON -> per-row ground truth

def _marker(x0, y0, x1, y1, z):
    return {"pixel_start": {"x": x0, "y": y0}, "pixel_end": {"x": x1, "y": y1},
            "world_start": {"x": 0.0, "y": 0.0, "z": z}, "world_end": {"x": 0.0, "y": 0.0, "z": z + 1}}


def _label(path, lanes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"projection_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                                "lanes": [{"lane_id": k, "markers": m} for k, m in lanes.items()]}))
    return path


def test_llamas_rows_extend_to_bottom_and_fill_gaps(tmp_path):
    # two dashes on the line x = 1300 - y; the nearest (z 5) is continued down to row 716
    lab = _label(tmp_path / "a.json", {"l0": [_marker(600, 700, 610, 690, 5.0), _marker(620, 680, 630, 670, 8.0)]})
    l1, l0, r0, r1 = llamas_row_xs(lab)
    assert l1 == r0 == r1 == [-1] * 717
    xs = np.array(l0)
    assert (xs[:670] == -1).all()
    assert np.allclose(xs[670:], 1300 - np.arange(670, 717))         # dash gap 681..689 interpolated
    gt = gt_lane_from_row_xs(xs)
    assert len(gt) == 47 and gt[0].tolist() == [630, 670] and gt[-1].tolist() == [584, 716]


def test_llamas_rows_round_half_even_and_average_with_the_start_counted_twice(tmp_path):
    near, far = _marker(100, 710, 105, 700, 5.0), _marker(110, 690, 112, 680, 9.0)
    stub = _marker(120, 690, 121, 689, 20.0)            # under 3 rows tall: only its start counts
    xs = llamas_row_xs(_label(tmp_path / "b.json", {"r0": [near, far, stub]}))[2]
    # extension (97, 716) -> (100, 710); x = 97 + (716 - y) / 2 rounded half to even
    assert [xs[y] for y in (716, 715, 713, 711, 710)] == [97, 98, 98, 100, 100]
    assert [xs[y] for y in (709, 707, 705, 700)] == [100, 102, 102, 105]       # 100.5 -> 100, 102.5 -> 102
    assert xs[690] == pytest.approx((110 + 110 + 120) / 3)                      # far start twice, stub once
    assert np.allclose(xs[691:700], 105 + (xs[690] - 105) * np.arange(9, 0, -1) / 10)
    assert xs[681:686] == [112, 112, 111, 111, 111] and xs[680] == 112 and xs[679] == -1


def test_llamas_rows_extension_edges_and_filters(tmp_path):
    # leaves the image on the left before the bottom: continued to x = 0 at row 660
    left = llamas_row_xs(_label(tmp_path / "c.json", {"l0": [_marker(10, 650, 20, 640, 3.0),
                                                              _marker(30, 630, 40, 620, 4.0)]}))[1]
    assert left[661] == -1 and left[660] == 0 and left[650] == 10
    # nearest marker behind the camera: no extension
    back = llamas_row_xs(_label(tmp_path / "d.json", {"r0": [_marker(600, 700, 610, 690, -1.0),
                                                              _marker(620, 680, 630, 670, 2.0)]}))[2]
    assert back[701] == -1 and back[700] == 600
    # lanes l3/l5 renumber to l0/l1; a lane spanning under 20 rows and a one-marker lane are dropped
    lanes = {"l5": [_marker(100, 700, 110, 690, 1.0), _marker(120, 680, 130, 670, 2.0)],
             "l3": [_marker(300, 700, 310, 690, 1.0), _marker(320, 680, 330, 670, 2.0)],
             "r0": [_marker(900, 700, 890, 690, 1.0), _marker(880, 690, 870, 680, 2.0)],
             "r4": [_marker(900, 700, 890, 690, 1.0)]}
    l1, l0, r0, r1 = llamas_row_xs(_label(tmp_path / "e.json", lanes))
    assert l0[700] == 300 and l1[700] == 100 and r0 == r1 == [-1] * 717
    # a repeated id: numbered twice (l0 -> l1), the later lane of the two wins; l0 stays empty
    dup = {"l0": [_marker(100, 700, 110, 690, 1.0), _marker(120, 680, 130, 670, 2.0)],
           "r0": [_marker(900, 700, 890, 690, 1.0), _marker(880, 680, 870, 670, 2.0)]}
    lab = _label(tmp_path / "g.json", dup)
    content = json.loads(lab.read_text())
    content["lanes"].insert(1, {"lane_id": "l0", "markers": [_marker(300, 700, 310, 690, 1.0),
                                                             _marker(320, 680, 330, 670, 2.0)]})
    lab.write_text(json.dumps(content))
    l1, l0, r0, _ = llamas_row_xs(lab)
    assert l0 == [-1] * 717 and l1[700] == 300 and r0[700] == 900
    bad = _label(tmp_path / "f.json", {"l0": [_marker(100, 700, 100, 690, 1.0), _marker(100, 680, 100, 660, 2.0)]})
    with pytest.raises(DataError, match="f.json: lane l0: no marker"):
        llamas_row_xs(bad)


def test_llamas_eval_from_label_json(tmp_path):
    lanes = {"l0": [_marker(600, 700, 610, 690, 5.0), _marker(620, 680, 630, 670, 8.0)],
             "r0": [_marker(900, 700, 890, 680, 5.0), _marker(880, 670, 870, 650, 8.0)]}
    drive = "images-2014-12-22-12-35-10_mapping_280S_ramps"
    _label(tmp_path / f"labels/valid/{drive}/1_0.json", lanes)
    _label(tmp_path / f"labels/valid/{drive}/2_0.json", lanes)
    ys = np.arange(670, 717, 5.0)
    write_culane_lines(tmp_path / f"pred/{drive}/1_0.lines.txt", [np.stack([1300 - ys, ys], 1)])
    with pytest.warns(UserWarning, match="1 of 2 prediction file"):
        res = evaluate_llamas(tmp_path / "labels/valid", tmp_path / "pred", per_image=True)
    assert (res["images"], res["tp"], res["fp"], res["fn"]) == (2, 1, 0, 3)       # 2_0 has no prediction file
    assert res["missing_predictions"] == 1
    assert [r["name"] for r in res["per_image"]] == [f"{drive}/1_0", f"{drive}/2_0"]
