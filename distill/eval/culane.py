"""The CULane lane metric, count-for-count the official C++ evaluator.

Reference: ``XingangPan/SCNN:tools/lane_evaluation`` (``evaluate.cpp``, ``counter.cpp``,
``lane_compare.cpp``, ``spline.cpp``, ``hungarianGraph.hpp``). What is reproduced, and how:

- Files: every ``\n``-separated line of a ``.lines.txt`` is one lane, a blank line included (the
  C++ ``getline`` loop pushes it as a lane with 0 points, which then counts as an FP/FN). Values
  are read as the C++ ``while (ss >> x >> y)`` reads them: number by number, stopping the line at
  the first value it cannot read (a trailing odd value, ``nan``/``inf``, a word, an overflowing
  exponent), and stored as ``cv::Point2f`` (float32). Such cut-short lines are counted in the
  result (``lines_cut_short``) and warned about. A missing prediction file is an image without
  predictions; a missing annotation file is an image without lanes, as in the C++ (warned about;
  an error when no listed annotation exists at all, which means a wrong root).
- Lanes with more than 2 points: natural cubic spline by chord length, 50 samples per segment plus
  the last point, with the C++ arithmetic (float32 differences, double maths, float32 results).
- Drawing: ``cv::Point2f`` -> ``cv::Point`` is ``cvRound`` (round half to even); segments are drawn
  30 px thick with OpenCV itself, which must be 4.x or older: OpenCV 5 rasterises thick lines that
  cross the border differently, so the package pins ``opencv-python-headless<5``. One
  ``cv2.polylines`` call per lane, consecutive duplicate points
  dropped, on a canvas clipped to the lane's bounding box: the pixel set is identical to the C++
  per-segment ``cv::line`` loop (the caps are circles at the shared vertices; the rasteriser is
  translation-invariant), which a test checks.
- IoU ``inter / (sum1 + sum2 - inter)``; 0 when either lane has < 2 points; NaN (0/0) when both are
  drawn entirely outside the image, as in the C++.
- Matching: the official Kuhn-Munkres (equality tolerance 1e-2, the same DFS order and the same
  transpose when there are more GT lanes than predictions), reimplemented, so ties and near-ties
  resolve the way the official tool resolves them. ``linear_sum_assignment`` can pick a different
  optimum, and because of the 1e-2 tolerance the official result is not always an exact optimum.
- TP only for IoU > threshold (strict); FN = #GT - TP; FP = #pred - TP.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np


SPLIT_NAMES = ("test0_normal", "test1_crowd", "test2_hlight", "test3_shadow", "test4_noline",
               "test5_arrow", "test6_curve", "test7_cross", "test8_night")
CROSSROAD = "test7_cross"
# CLRNet's mF1 thresholds, exactly as np.linspace gives them (0.6000000000000001 included).
MF1_THRESHOLDS = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))

_INT_MIN = -(2 ** 31)
_SPLINE_TIMES = 50


# --------------------------------------------------------------------------- reading
# one number as libstdc++'s ``istream >> double`` accepts it (C locale): sign, digits with an
# optional point, optional exponent. "1e" or "." start a number but fail it, which ends the line.
_MANTISSA = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")
_EXPONENT = re.compile(r"[eE][+-]?\d+")
_WS = " \t\n\v\f\r"


def _read_double(line: str, pos: int) -> tuple[float | None, int]:
    while pos < len(line) and line[pos] in _WS:
        pos += 1
    m = _MANTISSA.match(line, pos)
    if m is None:
        return None, pos
    end = m.end()
    if end < len(line) and line[end] in "eE":
        e = _EXPONENT.match(line, end)
        if e is None:
            return None, pos
        end = e.end()
    value = float(line[pos:end])
    if math.isinf(value):                   # overflow: failbit in libstdc++
        return None, pos
    return value, end


def parse_lane_line(line: str) -> tuple[np.ndarray, bool]:
    """One text line -> (float32 (N, 2) points, whether unread text was left), as ``ss >> x >> y``."""
    pts: list[tuple[float, float]] = []
    pos = 0
    while True:
        start = pos
        x, pos = _read_double(line, pos)
        y, pos = _read_double(line, pos) if x is not None else (None, pos)
        if y is None:
            pos = start                         # an x without its y is unread text too
            break
        pts.append((x, y))
    cut = line[pos:].strip(_WS) != ""
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2).astype(np.float32), cut


def read_lanes_counting_cuts(path: str | Path) -> tuple[list[np.ndarray], int]:
    """Lanes of a ``.lines.txt`` as the C++ evaluator reads them, and how many lines were cut short.

    A missing file is no lanes (``ifstream`` fails and the C++ returns). Bytes are read as latin-1,
    so no file fails to decode.
    """
    try:
        text = Path(path).read_bytes().decode("latin-1")
    except FileNotFoundError:
        return [], 0
    lines = text.split("\n")
    if lines and lines[-1] == "":            # getline yields no line after a final newline
        lines.pop()
    lanes, cuts = [], 0
    for line in lines:
        pts, cut = parse_lane_line(line)
        lanes.append(pts)
        cuts += cut
    return lanes, cuts


def read_lanes_like_official(path: str | Path) -> list[np.ndarray]:
    """Read a ``.lines.txt`` as the C++ evaluator does: one lane per text line, float32 points.

    A blank line is a lane with no points (the official tool counts it); a missing file is no lanes.
    """
    return read_lanes_counting_cuts(path)[0]


# --------------------------------------------------------------------------- spline
def spline_interp_times(points: np.ndarray, times: int = _SPLINE_TIMES) -> np.ndarray:
    """``Spline::splineInterpTimes`` for > 2 points: natural cubic spline by chord length.

    ``times`` samples per segment (t = 0, h/times, ...), then the last knot. Returns float32
    (N, 2), as the C++ stores ``Point2f``. Duplicate consecutive knots give NaN, as in the C++.
    """
    p = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    n = len(p)
    if n <= 2:
        raise ValueError(f"the spline needs more than 2 points, got {n}")
    # float32 differences (Point2f - Point2f), then double maths
    dx = (p[1:, 0] - p[:-1, 0]).astype(np.float64)
    dy = (p[1:, 1] - p[:-1, 1]).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.sqrt(dx * dx + dy * dy)
        sx, sy = dx / h, dy / h
        a_ = h[:-1].tolist()
        b_ = (2 * (h[:-1] + h[1:])).tolist()
        c_ = h[1:].tolist()
        rx = (6 * (sx[1:] - sx[:-1])).tolist()
        ry = (6 * (sy[1:] - sy[:-1])).tolist()
    m = n - 2
    mx = [0.0] * n
    my = [0.0] * n
    # Thomas algorithm, same operation order as the reference (plain floats: IEEE doubles).
    with np.errstate(all="ignore"):
        c_[0] = _div(c_[0], b_[0])
        rx[0] = _div(rx[0], b_[0])
        ry[0] = _div(ry[0], b_[0])
        for i in range(1, m):
            tmp = b_[i] - a_[i] * c_[i - 1]
            c_[i] = _div(c_[i], tmp)
            rx[i] = _div(rx[i] - a_[i] * rx[i - 1], tmp)
            ry[i] = _div(ry[i] - a_[i] * ry[i - 1], tmp)
        mx[n - 2] = rx[m - 1]
        my[n - 2] = ry[m - 1]
        for i in range(n - 4, -1, -1):
            mx[i + 1] = rx[i] - c_[i] * mx[i + 2]
            my[i + 1] = ry[i] - c_[i] * my[i + 2]
    mx[0] = mx[n - 1] = 0.0
    my[0] = my[n - 1] = 0.0
    mxa, mya = np.array(mx), np.array(my)
    with np.errstate(all="ignore"):
        ax, ay = p[:-1, 0].astype(np.float64), p[:-1, 1].astype(np.float64)
        bx = sx - (2 * h * mxa[:-1] + h * mxa[1:]) / 6
        by = sy - (2 * h * mya[:-1] + h * mya[1:]) / 6
        cx, cy = mxa[:-1] / 2, mya[:-1] / 2
        dxc = (mxa[1:] - mxa[:-1]) / (6 * h)
        dyc = (mya[1:] - mya[:-1]) / (6 * h)
        t = (h / times)[:, None] * np.arange(times, dtype=np.float64)[None, :]
        t2 = t * t                      # pow(t, 2): GCC folds it into a multiply
        t3 = np.power(t, 3.0)           # pow(t, 3): libm
        xs = ax[:, None] + bx[:, None] * t + cx[:, None] * t2 + dxc[:, None] * t3
        ys = ay[:, None] + by[:, None] * t + cy[:, None] * t2 + dyc[:, None] * t3
    out = np.empty(((n - 1) * times + 1, 2), dtype=np.float32)
    out[:-1, 0] = xs.ravel()
    out[:-1, 1] = ys.ravel()
    out[-1] = p[-1]
    return out


def _div(a: float, b: float) -> float:
    """C++ double division (inf/NaN instead of Python's ZeroDivisionError)."""
    try:
        return a / b
    except ZeroDivisionError:
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


def cv_round(points: np.ndarray) -> np.ndarray:
    """``cvRound`` of float32 values: round half to even; NaN or out of int range -> INT_MIN."""
    v = np.asarray(points, dtype=np.float32)
    r = np.rint(v.astype(np.float64))
    bad = ~np.isfinite(r) | (r < _INT_MIN) | (r > 2 ** 31 - 1)
    r = np.where(bad, _INT_MIN, r)
    return r.astype(np.int64)


def lane_polyline(lane: np.ndarray) -> np.ndarray | None:
    """The integer polyline the C++ draws for a lane, or None for a lane of < 2 points."""
    lane = np.asarray(lane, dtype=np.float32).reshape(-1, 2)
    if len(lane) < 2:
        return None
    pts = lane if len(lane) == 2 else spline_interp_times(lane)
    return cv_round(pts)


# --------------------------------------------------------------------------- drawing / IoU
@dataclass
class _Drawn:
    """A drawn lane: a 0/1 mask covering rows [y0, y0+h) and columns [x0, x0+w) of the image."""

    y0: int
    x0: int
    mask: np.ndarray
    area: int


_SANE = 1 << 24


def draw_lane(poly: np.ndarray, width: int, img_size: tuple[int, int]) -> _Drawn:
    """Rasterise an integer polyline ``width`` px thick, as the C++ ``cv::line`` loop does."""
    H, W = img_size
    keep = np.ones(len(poly), dtype=bool)
    keep[1:] = np.any(poly[1:] != poly[:-1], axis=1)
    p = poly[keep]
    if len(p) == 1:
        p = np.vstack([p, p])
    margin = width + 2
    if np.abs(p).max() < _SANE:
        x0 = max(0, int(p[:, 0].min()) - margin)
        y0 = max(0, int(p[:, 1].min()) - margin)
        x1 = min(W, int(p[:, 0].max()) + margin + 1)
        y1 = min(H, int(p[:, 1].max()) + margin + 1)
        if x1 <= x0 or y1 <= y0:
            return _Drawn(0, 0, np.zeros((0, 0), np.uint8), 0)
        canvas = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        shifted = (p - np.array([x0, y0])).astype(np.int32)
    else:   # NaN/overflowed points (INT_MIN): draw exactly what the C++ draws, on the full frame
        x0 = y0 = 0
        canvas = np.zeros((H, W), dtype=np.uint8)
        shifted = p.astype(np.int32)
    cv2.polylines(canvas, [shifted.reshape(-1, 1, 2)], False, 1, thickness=int(width))
    return _Drawn(y0, x0, canvas, int(cv2.countNonZero(canvas)))


def _intersection(a: _Drawn, b: _Drawn) -> int:
    if a.area == 0 or b.area == 0:
        return 0
    ya, yb = max(a.y0, b.y0), min(a.y0 + a.mask.shape[0], b.y0 + b.mask.shape[0])
    xa, xb = max(a.x0, b.x0), min(a.x0 + a.mask.shape[1], b.x0 + b.mask.shape[1])
    if yb <= ya or xb <= xa:
        return 0
    ma = a.mask[ya - a.y0:yb - a.y0, xa - a.x0:xb - a.x0]
    mb = b.mask[ya - b.y0:yb - b.y0, xa - b.x0:xb - b.x0]
    return int(cv2.countNonZero(cv2.bitwise_and(ma, mb)))


def iou_matrix(gt: Sequence[np.ndarray], pred: Sequence[np.ndarray], width: int = 30,
               img_size: tuple[int, int] = (590, 1640)) -> np.ndarray:
    """(#GT, #pred) IoU matrix of the official ``get_lane_similarity``; each lane drawn once."""
    def draw_all(lanes):
        out = []
        for lane in lanes:
            poly = lane_polyline(lane)
            out.append(None if poly is None else draw_lane(poly, width, img_size))
        return out

    g, p = draw_all(gt), draw_all(pred)
    ious = np.zeros((len(g), len(p)), dtype=np.float64)
    for i, a in enumerate(g):
        if a is None:
            continue
        for j, b in enumerate(p):
            if b is None:
                continue
            inter = _intersection(a, b)
            union = a.area + b.area - inter
            ious[i, j] = inter / union if union else math.nan
    return ious


# --------------------------------------------------------------------------- matching
def official_km_match(sim: np.ndarray) -> np.ndarray:
    """GT -> prediction index (-1 unmatched) by the official ``pipartiteGraph`` (tolerance 1e-2).

    The left side is the smaller one (the matrix is transposed when there are more GT lanes than
    predictions), exactly as ``Counter::makeMatch`` does; NaN similarities behave as in C++.
    """
    m, n = sim.shape
    transposed = m > n
    w = (sim.T if transposed else sim).tolist()
    left_n, right_n = len(w), (len(w[0]) if w else 0)
    left_match = [-1] * left_n
    right_match = [-1] * right_n
    right_w = [0.0] * right_n
    left_w = []
    for row in w:
        best = -1e5
        for v in row:
            if best < v:
                best = v
        left_w.append(best)
    left_used = [False] * left_n
    right_used = [False] * right_n

    def augment(u: int) -> bool:
        left_used[u] = True
        for v in range(right_n):
            if not right_used[v] and abs(left_w[u] + right_w[v] - w[u][v]) < 1e-2:
                right_used[v] = True
                if right_match[v] == -1 or augment(right_match[v]):
                    right_match[v] = u
                    left_match[u] = v
                    return True
        return False

    for u in range(left_n):
        while True:
            for i in range(left_n):
                left_used[i] = False
            for j in range(right_n):
                right_used[j] = False
            if augment(u):
                break
            d = 1e10
            for i in range(left_n):
                if left_used[i]:
                    for j in range(right_n):
                        if not right_used[j]:
                            cand = left_w[i] + right_w[j] - w[i][j]
                            if cand < d:        # std::min(d, cand): NaN never wins
                                d = cand
            if d == 1e10:
                return _gt_side(left_match, right_match, transposed)
            for i in range(left_n):
                if left_used[i]:
                    left_w[i] -= d
            for j in range(right_n):
                if right_used[j]:
                    right_w[j] += d
    return _gt_side(left_match, right_match, transposed)


def _gt_side(left_match: list[int], right_match: list[int], transposed: bool) -> np.ndarray:
    return np.array(right_match if transposed else left_match, dtype=np.int64)


# --------------------------------------------------------------------------- one image
def _as_lanes(lanes: Iterable) -> list[np.ndarray]:
    return [np.asarray(l, dtype=np.float32).reshape(-1, 2) for l in lanes]


def culane_counts(pred: Sequence, gt: Sequence, width: int = 30,
                  iou_thresholds: Sequence[float] = (0.5,),
                  img_size: tuple[int, int] = (590, 1640)) -> dict[float, tuple[int, int, int]]:
    """(tp, fp, fn) per IoU threshold for one image, as ``Counter::count_im_pair``.

    ``pred``/``gt``: lanes as (N, 2) (x, y) sequences in original-frame pixels; ``img_size`` is
    (height, width) of the canvas (CULane: 590 x 1640).
    """
    return _counts(_as_lanes(pred), _as_lanes(gt), width, tuple(iou_thresholds), img_size)[0]


def _counts(pred, gt, width, thresholds, img_size):
    if not gt:
        return {t: (0, len(pred), 0) for t in thresholds}, None
    if not pred:
        return {t: (0, 0, len(gt)) for t in thresholds}, None
    sim = iou_matrix(gt, pred, width, img_size)
    match = official_km_match(sim)
    out = {}
    for t in thresholds:
        tp = 0
        for i, j in enumerate(match):
            if j >= 0 and sim[i, j] > t:
                tp += 1
        out[t] = (tp, len(pred) - tp, len(gt) - tp)
    return out, sim


def lane_width_for(frame_w: int, width: int = 30, ref_w: int = 1640) -> int:
    """The protocol's lane width (30 px at CULane's 1640 px) scaled to a frame of another width."""
    return max(1, round(width * frame_w / ref_w))


# --------------------------------------------------------------------------- datasets
def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall and F1 from micro-averaged counts (0 where undefined)."""
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": p, "recall": r, "f1": f}


def _lines_name(entry: str) -> str:
    """``/driver_37/x.jpg`` -> ``driver_37/x.lines.txt`` (the C++ strips the last extension)."""
    stem = entry[: entry.rfind(".")] if "." in entry else entry
    return stem.lstrip("/") + ".lines.txt"


def read_list(list_file: str | Path) -> list[str]:
    """Image names of a CULane list file (first column; blank lines skipped)."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise FileNotFoundError(f"list file not found: {list_file}")
    names = []
    for line in list_file.read_text().splitlines():
        if line.strip():
            names.append(line.split()[0])
    return names


def _eval_one(job):
    anno_path, pred_path, width, thresholds, img_size = job
    gt, cut_gt = read_lanes_counting_cuts(anno_path)
    pred, cut_pred = read_lanes_counting_cuts(pred_path)
    counts, _ = _counts(pred, gt, width, thresholds, img_size)
    return [counts[t] for t in thresholds], cut_gt + cut_pred


def evaluate_culane(anno_root: str | Path, pred_root: str | Path, list_file: str | Path,
                    width: int = 30, iou_thresholds: Sequence[float] = (0.5,),
                    img_size: tuple[int, int] = (590, 1640), workers: int = 2,
                    per_image: bool = False) -> dict:
    """Evaluate one CULane list. Totals are summed over images (as ``evaluate.cpp``).

    Returns ``{"images", "tp", "fp", "fn", "precision", "recall", "f1"`` (first threshold),
    ``"by_threshold": {"0.50": {...}}``, ``"mF1"`` (mean F1 over the thresholds when more than
    one), and ``"per_image": [{"name", "tp", "fp", "fn"}]`` (first threshold) when asked.
    P, R, F are 0 where undefined (the C++ prints -1).
    """
    anno_root, pred_root = Path(anno_root), Path(pred_root)
    names = read_list(list_file)
    thresholds = tuple(float(t) for t in iou_thresholds)
    if not thresholds:
        raise ValueError("at least one IoU threshold is needed")
    jobs, missing = [], []
    for name in names:
        rel = _lines_name(name)
        anno = anno_root / rel
        if not anno.is_file():
            missing.append(str(anno))
        jobs.append((str(anno), str(pred_root / rel), int(width), thresholds, tuple(img_size)))
    if names and len(missing) == len(names):
        raise FileNotFoundError(f"{list_file}: none of its {len(names)} annotations exist under {anno_root} "
                                f"(first: {missing[0]}); is --anno-root right?")
    if missing:
        warnings.warn(f"{list_file}: {len(missing)} listed annotation(s) missing, scored as images without "
                      f"lanes as the official evaluator does (first: {missing[0]})", stacklevel=2)
    if workers > 1 and len(jobs) > 64:
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(workers) as pool:
            results = pool.map(_eval_one, jobs, chunksize=max(1, min(256, len(jobs) // (8 * workers))))
    else:
        results = [_eval_one(j) for j in jobs]
    cuts = sum(c for _, c in results)
    if cuts:
        warnings.warn(f"{list_file}: {cuts} lane line(s) hold values the official evaluator cannot read "
                      "(odd count, nan/inf, words); read up to there, as it does", stacklevel=2)
    out = _summarise(names, [r for r, _ in results], thresholds, per_image)
    out["lines_cut_short"] = cuts
    out["missing_annotations"] = len(missing)
    return out


def _summarise(names, results, thresholds, per_image):
    by_thr = {}
    for k, t in enumerate(thresholds):
        tp = sum(r[k][0] for r in results)
        fp = sum(r[k][1] for r in results)
        fn = sum(r[k][2] for r in results)
        by_thr[f"{t:.2f}"] = prf(tp, fp, fn)
    first = by_thr[f"{thresholds[0]:.2f}"]
    out = {"images": len(results), **first, "by_threshold": by_thr}
    if len(thresholds) > 1:
        out["mF1"] = float(np.mean([v["f1"] for v in by_thr.values()]))
    if per_image:
        out["per_image"] = [{"name": n, "tp": r[0][0], "fp": r[0][1], "fn": r[0][2]}
                            for n, r in zip(names, results)]
    return out


def evaluate_culane_splits(anno_root: str | Path, pred_root: str | Path, split_dir: str | Path,
                           width: int = 30, iou_thresholds: Sequence[float] = (0.5,),
                           img_size: tuple[int, int] = (590, 1640), workers: int = 2,
                           per_image: bool = False) -> dict:
    """The 9 CULane test categories (``<split_dir>/test0_normal.txt`` ...) and their Total.

    Total sums TP/FP/FN over the 9 categories (``calTotal.m``: a micro-average). Crossroad has no
    GT lanes, so only its FP is meaningful; the table shows FP only for it.
    """
    split_dir = Path(split_dir)
    missing = [s for s in SPLIT_NAMES if not (split_dir / f"{s}.txt").is_file()]
    if missing:
        raise FileNotFoundError(f"{split_dir}: missing split lists {', '.join(m + '.txt' for m in missing)}")
    cats = {}
    for s in SPLIT_NAMES:
        cats[s] = evaluate_culane(anno_root, pred_root, split_dir / f"{s}.txt", width, iou_thresholds,
                                  img_size, workers, per_image)
    thresholds = tuple(float(t) for t in iou_thresholds)
    total_by = {}
    for t in thresholds:
        key = f"{t:.2f}"
        tp = sum(c["by_threshold"][key]["tp"] for c in cats.values())
        fp = sum(c["by_threshold"][key]["fp"] for c in cats.values())
        fn = sum(c["by_threshold"][key]["fn"] for c in cats.values())
        total_by[key] = prf(tp, fp, fn)
    total = {"images": sum(c["images"] for c in cats.values()),
             **total_by[f"{thresholds[0]:.2f}"], "by_threshold": total_by}
    if len(thresholds) > 1:
        total["mF1"] = float(np.mean([v["f1"] for v in total_by.values()]))
    return {"categories": cats, "total": total}


def format_table(result: dict) -> str:
    """A plain-text table of an ``evaluate_culane`` or ``evaluate_culane_splits`` result."""
    rows = []
    if "categories" in result:
        for name, c in result["categories"].items():
            rows.append((name, c, name == CROSSROAD))
        rows.append(("total", result["total"], False))
    else:
        rows.append(("all", result, False))
    head = f"{'category':<14}{'images':>8}{'tp':>9}{'fp':>9}{'fn':>9}{'P':>8}{'R':>8}{'F1':>8}"
    lines = [head, "-" * len(head)]
    for name, c, fp_only in rows:
        if fp_only:
            lines.append(f"{name:<14}{c['images']:>8}{'':>9}{c['fp']:>9}{'':>9}{'':>8}{'':>8}{'':>8}")
        else:
            lines.append(f"{name:<14}{c['images']:>8}{c['tp']:>9}{c['fp']:>9}{c['fn']:>9}"
                         f"{100 * c['precision']:>8.2f}{100 * c['recall']:>8.2f}{100 * c['f1']:>8.2f}")
    last = rows[-1][1]
    extra = [f"F1@{k}: {100 * v['f1']:.2f}" for k, v in last["by_threshold"].items()] \
        if len(last["by_threshold"]) > 1 else []
    if "mF1" in last:
        extra.append(f"mF1: {100 * last['mF1']:.2f}")
    return "\n".join(lines + extra)
