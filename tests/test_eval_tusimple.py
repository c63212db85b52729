"""TuSimple LaneEval: the anchors of METRICS.md and the file-level rules."""
from __future__ import annotations

import json

import pytest

from distill.eval.tusimple import bench, evaluate_tusimple, f1_from_rates
from runtime.cli import main as cli_main

H = list(range(160, 720, 10))           # 56 rows; the GT lanes are absent on the first 8
K = 300 / 550                           # |dx/dy|: thresh = 20 / cos(atan K) ~ 22.8 px


def lane(x240: float, sign: float) -> list[float]:
    return [-2 if y < 240 else x240 + sign * K * (y - 240) for y in H]


GT = [lane(600, -1), lane(700, 1)]


def shifted(l, dx):
    return [v + dx if v >= 0 else v for v in l]


def test_shift_anchors():
    assert bench([shifted(l, 21) for l in GT], GT, H, 0) == (1.0, 0.0, 0.0)
    acc, fp, fn = bench([shifted(l, 25) for l in GT], GT, H, 0)
    assert acc == pytest.approx(8 / 56) and (fp, fn) == (1.0, 1.0)


def test_threshold_slope_fitted_as_scikit_learn_fits_it():
    """A point exactly 25 px off where 20/cos(theta) is 25 + 1 ulp with LinearRegression's
    centred least squares (np.polyfit gives 25.0 and would miss every point)."""
    ys = list(range(160, 720, 10))
    gt = [0.75 * y if y % 20 == 0 else -2 for y in ys]
    pred = [x + 25 if x >= 0 else -2 for x in gt]
    assert bench([pred], [gt], ys, 0) == (1.0, 0.0, 0.0)


def test_truncated_lanes():
    pred = [l[:-10] + [-2] * 10 for l in GT]
    acc, fp, fn = bench(pred, GT, H, 0)
    assert acc == pytest.approx(46 / 56) and round(acc, 3) == 0.821 and (fp, fn) == (1.0, 1.0)


def test_extra_predictions():
    far = [v + 400 if v >= 0 else v for v in GT[0]]
    acc, fp, fn = bench(GT + [far], GT, H, 0)
    assert (acc, fn) == (1.0, 0.0) and fp == pytest.approx(1 / 3)
    assert bench(GT + [far, far, far], GT, H, 0) == (0.0, 0.0, 1.0)       # 5 > 2 + 2


def test_more_than_four_gt_lanes():
    gts = [lane(100 + 250 * i, 1) for i in range(5)]
    # four found: the fifth GT's FN is forgiven and its accuracy (8/56) dropped from the sum
    assert bench(gts[:4], gts, H, 0) == (1.0, 0.0, 0.0)
    acc, fp, fn = bench(gts[:3], gts, H, 0)
    assert fn == pytest.approx(1 / 4) and acc == pytest.approx((3 + 8 / 56) / 4)


def test_rules():
    with pytest.raises(ValueError, match="Format of lanes"):
        bench([GT[0][:-1]], GT, H, 0)
    assert bench(GT, GT, H, 201) == (0.0, 0.0, 1.0)
    assert bench(GT, GT, H, 200) == (1.0, 0.0, 0.0)
    assert bench([], GT, H, 0) == (0.0, 0.0, 1.0)          # no prediction: accuracy 0 per GT lane
    # best prediction per GT lane, not one-to-one: one prediction serves two close GT lanes, and
    # FP = #pred - #matched goes negative, exactly as in the official code
    close = [lane(600, 1), lane(610, 1)]
    assert bench([shifted(close[0], 5)], close, H, 0) == (1.0, -1.0, 0.0)
    # integers and any negative value (not only -2) are handled like the official code
    assert bench([[int(round(v)) if v >= 0 else -1 for v in GT[0]]], [GT[0]], H, 0) == (1.0, 0.0, 0.0)


def test_f1_formula():
    assert f1_from_rates(0.0, 0.0) == 1.0
    assert f1_from_rates(0.1, 0.2) == pytest.approx(2 * 0.9 * 0.8 / 1.7)


def _write(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_files_and_cli(tmp_path):
    gt, pred = tmp_path / "gt.json", tmp_path / "pred.json"
    _write(gt, [{"raw_file": "a.jpg", "lanes": GT, "h_samples": H},
                {"raw_file": "b.jpg", "lanes": GT, "h_samples": H}])
    _write(pred, [{"raw_file": "b.jpg", "lanes": [shifted(l, 25) for l in GT], "run_time": 10},
                  {"raw_file": "a.jpg", "lanes": GT, "run_time": 10}])
    res = evaluate_tusimple(pred, gt, per_image=True)
    assert res["accuracy"] == pytest.approx((1 + 8 / 56) / 2)
    assert (res["fp"], res["fn"]) == (0.5, 0.5) and res["f1"] == pytest.approx(0.5)
    assert [r["raw_file"] for r in res["per_image"]] == ["b.jpg", "a.jpg"]
    out = tmp_path / "r.json"
    assert cli_main("python -m distill", "", ["distill.eval.cli"],
                    ["eval", "--metric", "tusimple", "--gt", str(gt), "--pred", str(pred),
                     "--json", str(out), "--per-image"]) == 0
    assert json.loads(out.read_text())["per_image"][1]["accuracy"] == 1.0


def test_file_errors(tmp_path):
    gt, pred = tmp_path / "gt.json", tmp_path / "pred.json"
    _write(gt, [{"raw_file": "a.jpg", "lanes": GT, "h_samples": H}])
    _write(pred, [{"raw_file": "x.jpg", "lanes": GT, "run_time": 1}])
    with pytest.raises(ValueError, match=r"pred.json:1: raw_file 'x.jpg'"):
        evaluate_tusimple(pred, gt)
    _write(pred, [{"raw_file": "a.jpg", "lanes": GT}])
    with pytest.raises(ValueError, match="missing run_time"):
        evaluate_tusimple(pred, gt)
    _write(pred, [{"raw_file": "a.jpg", "lanes": [GT[0][:3]], "run_time": 1}])
    with pytest.raises(ValueError, match=r"pred.json:1: Format of lanes"):
        evaluate_tusimple(pred, gt)
    pred.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"pred.json:1"):
        evaluate_tusimple(pred, gt)
    _write(pred, [])
    with pytest.raises(ValueError, match="0 predictions"):
        evaluate_tusimple(pred, gt)
