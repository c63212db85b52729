"""CULane-style F1 on LLAMAS, as ``karstenBehrendt/unsupervised_llamas:culane_metric/evaluate.py``
(the "discrete", official-like mode; LaneATT and CLRNet ship the same code).

- GT lanes are per-row x values of the 717-row image, of l1, l0, r0 and r1 only (the four the
  benchmark scores); only rows 300..716 are used and negative x is absent (``add_ys``); a lane
  with <= 1 valid point is ignored. GT is not interpolated.
- Predictions (``.lines.txt``) with < 2 points are dropped; the rest are interpolated by an
  interpolating B-spline (``splprep(s=0, k=min(3, n-1))``) sampled at 50 parameter values uniform
  in [0, 1].
- Both are truncated to int32 and drawn 30 px wide with ``cv2.line`` on a 717x1276 canvas;
  IoU = |A & B| / |A | B|; ``linear_sum_assignment(1 - IoU)``; TP when IoU > 0.5.
- Totals are summed over images; P = R = F1 = 0 when there is no TP.

Ground truth on disk is either the dataset's label JSON (``labels/<split>/<drive>/<stem>.json``,
turned into per-row x values by :func:`distill.data.llamas.llamas_label_rows`, which reproduces
``spline_creator.get_horizontal_values_for_four_lanes``; the prediction for it is
``<pred_root>/<drive>/<stem>.lines.txt``, the label's last two path parts, as the official script
looks it up) or, when the folder holds no JSON, ``.lines.txt`` files with the per-row points
(e.g. written with :func:`gt_lane_from_row_xs`), predictions at the same relative path. Lane files
are read as Python's text mode reads them (``\\n``, ``\\r\\n`` and a lone ``\\r`` each end a
line), as the official ``open(path, 'r')`` does; the CULane evaluator keeps the C++ ``\\n`` only.

Inputs the official script stops on, and what this module does instead (counts in the result):

- Missing prediction file (``open`` raises): scored as an image without predictions, counted in
  ``missing_predictions`` and warned about once; a ``pred_root`` that is not a folder is an error.
- Prediction lane whose points are all one point (``splprep`` gets ``k=0`` once the duplicates
  are dropped): kept as a predicted lane that covers no pixel, so a FP; ``point_predictions``.
- GT lane with >= 2 valid rows of which <= 1 lies on rows 300..716 (the ``add_ys`` assertion):
  kept as a GT lane that covers no pixel, so a FN; ``gt_lanes_above_rows``.
- Label lane with an empty marker list (``min()`` of nothing in the size filter): dropped like
  the other lanes of fewer than two markers; ``empty_marker_lanes``.
- Label lane, of any id, that the spline creator cannot build (no marker that is neither
  horizontal nor vertical; nearest marker with world_start.z == world_end.z; a marker row
  outside the image): DataError naming the label and the lane id, as is any other bad label.
  With ``skip_bad``, such a lane beyond l1, l0, r0, r1 is skipped (it is no ground truth; the
  image is scored as usual; ``skipped_lanes``), while a bad l1/l0/r0/r1 or a bad label leaves the
  image out of the scores (``skipped_images``; the reasons in ``bad``, label name -> messages).
- Odd number of values or a value that is not a finite number in a lane file (``IndexError`` /
  ``ValueError``, or NaN into ``splprep``): LaneFileError naming the file and line.
- A predicted and a GT lane both drawn as nothing, e.g. both beyond the image's right edge (IoU
  0/0, a NaN that ``linear_sum_assignment`` refuses): IoU 0; ``empty_iou_pairs``.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple, Sequence

import cv2
import numpy as np
from scipy.interpolate import splev, splprep
from scipy.optimize import linear_sum_assignment

from distill.data.llamas import LANE_SLOTS, llamas_label_rows
from distill.data.sample import DataError
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
    return _counts(pred, gt, width, iou_threshold, img_size)[:3]


def _counts(pred: Sequence[np.ndarray], gt: Sequence[np.ndarray], width: int, iou_threshold: float,
            img_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(tp, fp, fn, pairs of lanes both drawn as nothing) for one image."""
    pred = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in pred]
    pred = [p for p in pred if len(p) >= 2]
    gt = [np.asarray(g, dtype=np.float64).reshape(-1, 2) for g in gt]
    if len(pred) == 0:
        return 0, 0, len(gt), 0
    if len(gt) == 0:
        return 0, len(pred), 0, 0
    pm = [_draw(interpolate_lane(p), width, img_size) for p in pred]
    gm = [_draw(g, width, img_size) for g in gt]
    ious = np.zeros((len(pm), len(gm)))
    empty = 0
    for i, a in enumerate(pm):
        for j, b in enumerate(gm):
            union = (a | b).sum()
            ious[i, j] = (a & b).sum() / union if union else 0.0    # both drawn as nothing: no match
            empty += not union
    rows, cols = linear_sum_assignment(1 - ious)
    tp = int((ious[rows, cols] > iou_threshold).sum())
    return tp, len(pred) - tp, len(gt) - tp, empty


def _gt_and_pred_files(anno_root: Path, pred_root: Path) -> list[tuple[str, Path, Path]]:
    """(name, ground-truth file, prediction file) for every GT file under ``anno_root``."""
    labels = sorted(anno_root.rglob("*.json"))
    if labels:
        return [(f"{f.parent.name}/{f.stem}", f, pred_root / f.parent.name / f"{f.stem}.lines.txt")
                for f in labels]
    lines = sorted(anno_root.rglob("*.lines.txt"))
    return [(str(f.relative_to(anno_root)), f, pred_root / f.relative_to(anno_root)) for f in lines]


class GroundTruth(NamedTuple):
    """GT lanes of one image and what reading them noted."""
    lanes: list[np.ndarray]         # (N, 2) per-row points; a lane above rows 300..716 has N <= 1
    skipped: list[str]              # lanes beyond l1..r1 the spline creator rejects (skip_bad)
    empty_lanes: int                # label lanes with an empty marker list (dropped)


def read_gt(path: Path, skip_bad: bool = False) -> GroundTruth:
    """GT lanes of one image from a label JSON or a per-row ``.lines.txt``.

    Label lanes with <= 1 valid row are dropped, as the official script does. A lane the spline
    creator rejects raises its DataError; with ``skip_bad`` only one among l1, l0, r0, r1 does.
    """
    if path.suffix != ".json":
        lanes = read_culane_lines(path, universal_newlines=True)
        return GroundTruth([g for g in lanes if len(g) > 1], [], 0)
    label = llamas_label_rows(path)
    if label.bad and not skip_bad:
        raise DataError(label.bad[0][1])
    used = [msg for lane_id, msg in label.bad if lane_id in LANE_SLOTS]
    if used:                                    # its ground truth would be incomplete: leave it out
        raise DataError(used[0])
    lanes = [g for g in map(gt_lane_from_row_xs, label.rows) if g is not None]
    return GroundTruth(lanes, [msg for _, msg in label.bad], label.empty_lanes)


def _point_lanes(lanes: Sequence[np.ndarray]) -> int:
    """Lanes of >= 2 points that are all the same point."""
    return sum(1 for p in lanes if len(p) >= 2 and bool((p == p[0]).all()))


def evaluate_llamas(anno_root: str | Path, pred_root: str | Path, width: int = 30,
                    iou_threshold: float = 0.5, img_size: tuple[int, int] = IMG_SIZE,
                    per_image: bool = False, skip_bad: bool = False) -> dict:
    """Every GT file under ``anno_root`` (label JSON, else ``.lines.txt``) against its prediction
    under ``pred_root``. ``images`` counts the images scored; the module docstring lists the other
    counts (inputs the official script stops on) and what ``skip_bad`` skips."""
    anno_root, pred_root = Path(anno_root), Path(pred_root)
    if not anno_root.is_dir():
        raise FileNotFoundError(f"annotation folder not found: {anno_root}")
    if not pred_root.is_dir():
        raise FileNotFoundError(f"prediction folder not found: {pred_root}")
    files = _gt_and_pred_files(anno_root, pred_root)
    if not files:
        raise FileNotFoundError(f"no label .json or .lines.txt ground truth under {anno_root}")
    tp = fp = fn = 0
    notes = dict.fromkeys(("missing_predictions", "point_predictions", "gt_lanes_above_rows",
                           "empty_marker_lanes", "empty_iou_pairs", "skipped_lanes", "skipped_images"), 0)
    bad: dict[str, list[str]] = {}
    missing: list[Path] = []
    rows = []
    for name, gf, pf in files:
        try:
            gt = read_gt(gf, skip_bad)
        except DataError as exc:
            if not skip_bad:
                raise
            bad[name] = [str(exc)]
            notes["skipped_images"] += 1
            continue
        if gt.skipped:
            bad[name] = gt.skipped
        if pf.is_file():
            pred = read_culane_lines(pf, universal_newlines=True)
        else:
            pred = []
            missing.append(pf)
        notes["point_predictions"] += _point_lanes(pred)
        notes["gt_lanes_above_rows"] += sum(1 for g in gt.lanes if len(g) < 2)
        notes["empty_marker_lanes"] += gt.empty_lanes
        notes["skipped_lanes"] += len(gt.skipped)
        c = _counts(pred, gt.lanes, width, iou_threshold, img_size)
        tp, fp, fn = tp + c[0], fp + c[1], fn + c[2]
        notes["empty_iou_pairs"] += c[3]
        if per_image:
            rows.append({"name": name, "tp": c[0], "fp": c[1], "fn": c[2]})
    notes["missing_predictions"] = len(missing)
    if missing:
        warnings.warn(f"{pred_root}: {len(missing)} of {len(files)} prediction file(s) missing (first: "
                      f"{missing[0]}), scored as images without predictions", stacklevel=2)
    res = {"images": len(files) - notes["skipped_images"], **prf(tp, fp, fn), **notes}
    if skip_bad:
        res["bad"] = bad
    if per_image:
        res["per_image"] = rows
    return res
