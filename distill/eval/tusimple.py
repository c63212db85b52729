"""TuSimple lane accuracy, FP and FN, as ``TuSimple/tusimple-benchmark:evaluate/lane.py``.

Rules (the version LaneATT / UFLD / CLRNet ship): a predicted lane whose length differs from
``h_samples`` is an error; run time > 200 ms or more than #GT + 2 predictions scores (0, 0, 1);
per GT lane the threshold is ``20 / cos(atan(k))`` with ``k`` the least-squares slope of x on y over
its valid points (x >= 0); any negative x (not only -2) becomes -100 on both sides; lane accuracy is
the fraction of *all* h_samples within the threshold (strict <); each GT lane takes its best
prediction (not one-to-one), matched when >= 0.85; FP = #pred - #matched; with more than 4 GT
lanes FN loses 1 (if > 0) and the worst lane accuracy is dropped. Dataset values are plain means
over the GT images. The slope is fitted as scikit-learn's ``LinearRegression`` (the official
code's) fits it: both variables centred on their means, then ``scipy.linalg.lstsq``; ``np.polyfit``
differs in the last bit often enough to flip a point that lies exactly on the threshold.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.linalg

PIXEL_THRESH = 20
PT_THRESH = 0.85
MAX_RUN_TIME_MS = 200


def get_angle(xs: np.ndarray, y_samples: np.ndarray) -> float:
    """atan of the least-squares slope dx/dy over the valid (x >= 0) points; 0 with < 2 points."""
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(y_samples, dtype=np.float64)
    valid = xs >= 0
    xs, ys = xs[valid], ys[valid]
    if len(xs) > 1:
        yc, xc = ys - ys.mean(), xs - xs.mean()
        k = scipy.linalg.lstsq(yc[:, None], xc, cond=len(yc) * np.finfo(np.float64).eps)[0][0]
        return float(np.arctan(k))
    return 0.0


def line_accuracy(pred: np.ndarray, gt: np.ndarray, thresh: float) -> float:
    pred = np.where(np.asarray(pred, dtype=np.float64) >= 0, pred, -100.0)
    gt = np.where(np.asarray(gt, dtype=np.float64) >= 0, gt, -100.0)
    return float(np.sum(np.where(np.abs(pred - gt) < thresh, 1.0, 0.0)) / len(gt))


def bench(pred: Sequence[Sequence[float]], gt: Sequence[Sequence[float]], y_samples: Sequence[float],
          running_time: float) -> tuple[float, float, float]:
    """Per-image (accuracy, fp rate, fn rate) of ``LaneEval.bench``."""
    if any(len(p) != len(y_samples) for p in pred):
        raise ValueError("Format of lanes error: a predicted lane's length differs from h_samples "
                         f"({[len(p) for p in pred]} vs {len(y_samples)})")
    if running_time > MAX_RUN_TIME_MS or len(gt) + 2 < len(pred):
        return 0.0, 0.0, 1.0
    ys = np.asarray(y_samples, dtype=np.float64)
    threshs = [PIXEL_THRESH / np.cos(get_angle(np.asarray(g, dtype=np.float64), ys)) for g in gt]
    line_accs: list[float] = []
    fn, matched = 0.0, 0.0
    for x_gts, thresh in zip(gt, threshs):
        accs = [line_accuracy(np.asarray(p, dtype=np.float64), np.asarray(x_gts, dtype=np.float64), thresh)
                for p in pred]
        max_acc = max(accs) if accs else 0.0
        if max_acc < PT_THRESH:
            fn += 1
        else:
            matched += 1
        line_accs.append(max_acc)
    fp = len(pred) - matched
    if len(gt) > 4 and fn > 0:
        fn -= 1
    s = sum(line_accs)
    if len(gt) > 4:
        s -= min(line_accs)
    return (s / max(min(4.0, len(gt)), 1.0),
            fp / len(pred) if len(pred) > 0 else 0.0,
            fn / max(min(len(gt), 4.0), 1.0))


def f1_from_rates(fp: float, fn: float) -> float:
    """F1 = 2(1-FP)(1-FN) / ((1-FP)+(1-FN)), the formula LaneATT and UFLD-v2 report."""
    p, r = 1.0 - fp, 1.0 - fn
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _read_jsonl(path: Path, what: str, keys: Sequence[str]) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    out = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc})") from None
            missing = [k for k in keys if not isinstance(rec, dict) or k not in rec]
            if missing:
                raise ValueError(f"{path}:{lineno}: missing {', '.join(missing)}")
            rec["_line"] = lineno
            out.append(rec)
    return out


def evaluate_tusimple(pred_file: str | Path, gt_file: str | Path, per_image: bool = False) -> dict:
    """``LaneEval.bench_one_submit``: mean accuracy, FP and FN over the GT images, plus F1.

    Like the official code: every prediction needs ``raw_file``, ``lanes`` and ``run_time``; the
    files must have as many lines; a ``raw_file`` not in the GT is an error.
    """
    pred_file, gt_file = Path(pred_file), Path(gt_file)
    preds = _read_jsonl(pred_file, "prediction", ("raw_file", "lanes", "run_time"))
    gts_list = _read_jsonl(gt_file, "ground-truth", ("raw_file", "lanes", "h_samples"))
    if len(preds) != len(gts_list):
        raise ValueError(f"{pred_file} has {len(preds)} predictions but {gt_file} has {len(gts_list)} images")
    gts = {g["raw_file"]: g for g in gts_list}
    acc = fp = fn = 0.0
    rows = []
    for p in preds:
        g = gts.get(p["raw_file"])
        if g is None:
            raise ValueError(f"{pred_file}:{p['_line']}: raw_file {p['raw_file']!r} is not in {gt_file}")
        try:
            a, f_p, f_n = bench(p["lanes"], g["lanes"], g["h_samples"], p["run_time"])
        except ValueError as exc:
            raise ValueError(f"{pred_file}:{p['_line']}: {exc}") from None
        acc, fp, fn = acc + a, fp + f_p, fn + f_n
        if per_image:
            rows.append({"raw_file": p["raw_file"], "accuracy": a, "fp": f_p, "fn": f_n})
    num = len(gts)
    res = {"images": num, "accuracy": acc / num if num else 0.0, "fp": fp / num if num else 0.0,
           "fn": fn / num if num else 0.0}
    res["f1"] = f1_from_rates(res["fp"], res["fn"])
    res["f1_formula"] = "2(1-FP)(1-FN)/((1-FP)+(1-FN))"
    if per_image:
        res["per_image"] = rows
    return res


def format_table(res: dict) -> str:
    return (f"{'images':>8}{'Accuracy':>10}{'FP':>8}{'FN':>8}{'F1':>8}\n"
            f"{res['images']:>8}{100 * res['accuracy']:>10.2f}{100 * res['fp']:>8.2f}"
            f"{100 * res['fn']:>8.2f}{100 * res['f1']:>8.2f}\n"
            f"F1 = {res['f1_formula']}")
