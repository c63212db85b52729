"""CULane-style F1 on LLAMAS, as ``karstenBehrendt/unsupervised_llamas:culane_metric/evaluate.py``
(the "discrete", official-like mode; LaneATT and CLRNet ship the same code).

- GT lanes are per-row x values of the 717-row image; only rows 300..716 are used and negative x
  is absent (``add_ys``); a lane with <= 1 valid point is ignored. GT is not interpolated.
- Predictions (``.lines.txt``) with < 2 points are dropped; the rest are interpolated by an
  interpolating B-spline (``splprep(s=0, k=min(3, n-1))``) sampled at 50 parameter values uniform
  in [0, 1].
- Both are truncated to int32 and drawn 30 px wide with ``cv2.line`` on a 717x1276 canvas;
  IoU = |A & B| / |A | B|; ``linear_sum_assignment(1 - IoU)``; TP when IoU > 0.5.
- Totals are summed over images; P = R = F1 = 0 when there is no TP.

Ground truth on disk is either the dataset's label JSON (``labels/<split>/<drive>/<stem>.json``,
turned into per-row x values by :func:`distill.data.llamas.llamas_row_xs`, which reproduces
``spline_creator.get_horizontal_values_for_four_lanes``; the prediction for it is
``<pred_root>/<drive>/<stem>.lines.txt``, the label's last two path parts, as the official script
looks it up) or, when the folder holds no JSON, ``.lines.txt`` files with the per-row points
(e.g. written with :func:`gt_lane_from_row_xs`), predictions at the same relative path.

Where the official script stops (an assertion when a kept lane has <= 1 point on rows 300..716,
``min()`` of nothing when no marker can be extended), this module keeps such a lane as an
unmatchable GT lane (a miss) and raises a DataError naming the label, respectively.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from scipy.interpolate import splev, splprep
from scipy.optimize import linear_sum_assignment

from distill.data.llamas import llamas_row_xs
from distill.eval.culane import prf
from runtime.lane_io import read_culane_lines

IMG_SIZE = (717, 1276)      # (height, width)
FIRST_ROW = 300


def gt_lane_from_row_xs(xs: Sequence[float]) -> np.ndarray | None:
    """Per-row x values (717 of them, negative = absent) -> (N, 2) GT points on rows 300..716.

    None when the lane has <= 1 valid point (LLAMAS ignores it).
    """
    xs = np.asarray(xs, dtype=np.float64)
    if len(xs) != IMG_SIZE[0]:
        raise ValueError(f"expected {IMG_SIZE[0]} per-row x values, got {len(xs)}")
    if (xs >= 0).sum() <= 1:
        return None
    tail = xs[FIRST_ROW:]
    valid = tail >= 0
    return np.stack([tail[valid], np.arange(FIRST_ROW, IMG_SIZE[0], dtype=np.float64)[valid]], axis=1)


def interpolate_lane(points: np.ndarray, n: int = 50) -> np.ndarray:
    """B-spline through the points (s=0), sampled at ``n`` parameter values uniform in [0, 1].

    Consecutive duplicate points are dropped first, as the current official script does (they
    break ``splprep``); a lane left with one point is returned as that point (nothing is drawn).
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(p) > 1:
        p = p[np.r_[True, np.any(p[1:] != p[:-1], axis=1)]]
    if len(p) < 2:
        return p
    tck, _ = splprep([p[:, 0].tolist(), p[:, 1].tolist()], s=0, t=n, k=min(3, len(p) - 1))
    return np.array(splev(np.linspace(0.0, 1.0, n), tck)).T


def _draw(lane: np.ndarray, width: int, img_size: tuple[int, int]) -> np.ndarray:
    img = np.zeros(img_size, dtype=np.uint8)
    pts = np.asarray(lane).astype(np.int32)
    for a, b in zip(pts[:-1], pts[1:]):
        cv2.line(img, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), color=(1,), thickness=width)
    return img > 0


def llamas_counts(pred: Sequence[np.ndarray], gt: Sequence[np.ndarray], width: int = 30,
                  iou_threshold: float = 0.5, img_size: tuple[int, int] = IMG_SIZE) -> tuple[int, int, int]:
    """(tp, fp, fn) for one image. ``pred``: lanes of >= 2 points; ``gt``: per-row GT lanes."""
    pred = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in pred]
    pred = [p for p in pred if len(p) >= 2]
    gt = [np.asarray(g, dtype=np.float64).reshape(-1, 2) for g in gt]
    if len(pred) == 0:
        return 0, 0, len(gt)
    if len(gt) == 0:
        return 0, len(pred), 0
    pm = [_draw(interpolate_lane(p), width, img_size) for p in pred]
    gm = [_draw(g, width, img_size) for g in gt]
    ious = np.zeros((len(pm), len(gm)))
    with np.errstate(invalid="ignore", divide="ignore"):
        for i, a in enumerate(pm):
            for j, b in enumerate(gm):
                ious[i, j] = (a & b).sum() / (a | b).sum()
    rows, cols = linear_sum_assignment(1 - ious)
    tp = int((ious[rows, cols] > iou_threshold).sum())
    return tp, len(pred) - tp, len(gt) - tp


def _gt_and_pred_files(anno_root: Path, pred_root: Path) -> list[tuple[str, Path, Path]]:
    """(name, ground-truth file, prediction file) for every GT file under ``anno_root``."""
    labels = sorted(anno_root.rglob("*.json"))
    if labels:
        return [(f"{f.parent.name}/{f.stem}", f, pred_root / f.parent.name / f"{f.stem}.lines.txt")
                for f in labels]
    lines = sorted(anno_root.rglob("*.lines.txt"))
    return [(str(f.relative_to(anno_root)), f, pred_root / f.relative_to(anno_root)) for f in lines]


def read_gt(path: Path) -> list[np.ndarray]:
    """GT lanes of one image from a label JSON or a per-row ``.lines.txt``; lanes of <= 1 point dropped."""
    if path.suffix == ".json":
        return [g for g in map(gt_lane_from_row_xs, llamas_row_xs(path)) if g is not None]
    return [g for g in read_culane_lines(path) if len(g) > 1]


def evaluate_llamas(anno_root: str | Path, pred_root: str | Path, width: int = 30,
                    iou_threshold: float = 0.5, img_size: tuple[int, int] = IMG_SIZE,
                    per_image: bool = False) -> dict:
    """Every GT file under ``anno_root`` (label JSON, else ``.lines.txt``) against its prediction
    under ``pred_root`` (missing prediction = no lanes)."""
    anno_root, pred_root = Path(anno_root), Path(pred_root)
    if not anno_root.is_dir():
        raise FileNotFoundError(f"annotation folder not found: {anno_root}")
    files = _gt_and_pred_files(anno_root, pred_root)
    if not files:
        raise FileNotFoundError(f"no label .json or .lines.txt ground truth under {anno_root}")
    tp = fp = fn = 0
    rows = []
    for name, gf, pf in files:
        gt = read_gt(gf)
        pred = read_culane_lines(pf) if os.path.isfile(pf) else []
        c = llamas_counts(pred, gt, width, iou_threshold, img_size)
        tp, fp, fn = tp + c[0], fp + c[1], fn + c[2]
        if per_image:
            rows.append({"name": name, "tp": c[0], "fp": c[1], "fn": c[2]})
    res = {"images": len(files), **prf(tp, fp, fn)}       # P = R = F1 = 0 without a TP, as LLAMAS
    if per_image:
        res["per_image"] = rows
    return res
