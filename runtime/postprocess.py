"""Model outputs -> lanes (original-frame polylines) and class maps. NumPy + OpenCV only.

The standard lane decoding is the published SCNN ``prob2lines`` step (``getLane.m``/``main.m``):
for each lane slot and each of 18 rows, the arg-max column of that row of the slot's probability
map, kept when its probability exceeds 0.3; a lane needs 2 points and a positive existence output.
For the standard geometry (1640x590 frame, 288x800 input, no crop) row k (0-based) is the MATLAB
row ``uint16(288 - k*20/590*288)`` (1-based, rounded half away from zero) and the point is written
at ``x = col_1based * 1640/800 - 1``, ``y = 590 - 20k - 1``. :func:`sample_rows` generalises both
formulas through :class:`runtime.geometry.Geometry` (crop, then resize) so they reduce to exactly
these numbers in the standard case. ``main.m`` writes x as ``uint16(col * 1640 / 800) - 1``, an
integer; the standard setting rounds the same way (``LaneDecodeConfig.round_x``).

``refine=True`` is the improved setting: a sub-pixel column (probability-weighted centroid in a
small window around the arg-max) and light smoothing of x along each lane. Use it with denser rows
(``row_step=10``, ``num_rows=None``) for the best F1.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping, Sequence

import cv2
import numpy as np

from runtime.geometry import Geometry


@dataclass
class LaneDecodeConfig:
    """How probability maps become lanes. Defaults are the published CULane setting."""

    prob_thresh: float = 0.3        # keep a row's peak when prob > this (strict, as getLane.m)
    exist_thresh: float = 0.5       # a slot exists when its existence prob > this
    row_step: int = 20              # px of the original frame between sampled rows
    rows: list[float] | None = None  # explicit original-frame rows (bottom to top); overrides row_step
    num_rows: int | None = 18       # rows taken from the bottom with row_step (None: up to the crop)
    min_points: int = 2             # fewer points -> no lane
    refine: bool = False            # sub-pixel peak + per-lane smoothing
    refine_window: int = 2          # centroid half-window (input px) when refining
    round_x: bool | None = None     # integer x as main.m writes it (half away from zero);
                                    # None: rounded in the standard setting, not when refining


def _round_half_up(v: np.ndarray) -> np.ndarray:
    """MATLAB ``round``/``uint16`` for non-negative values (half away from zero), exact."""
    fl = np.floor(v)
    return np.where(v - fl >= 0.5, fl + 1, fl)


def sample_rows(geometry: Geometry, cfg: LaneDecodeConfig = LaneDecodeConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Sampling rows: (original-frame y as float64, 0-based input row as int64), bottom to top.

    A row at original y lies ``d = orig_h - 1 - y`` px above the frame's bottom; its input row
    (1-based) is ``round(in_h - d / (orig_h - crop_top) * in_h)`` -- getLane.m's formula with
    ``d = 20k``. Rows above the crop (or that map above the input's first row) are skipped.
    """
    ys, idx = _cached_rows(geometry, cfg)
    return ys.copy(), idx.copy()


def _cached_rows(geometry: Geometry, cfg: LaneDecodeConfig) -> tuple[np.ndarray, np.ndarray]:
    rows = None if cfg.rows is None else tuple(float(r) for r in np.asarray(cfg.rows).ravel())
    return _sample_rows(geometry, rows, int(cfg.row_step), cfg.num_rows)


@lru_cache(maxsize=64)
def _sample_rows(g: Geometry, explicit: tuple[float, ...] | None, row_step: int,
                 num_rows: int | None) -> tuple[np.ndarray, np.ndarray]:
    if explicit is not None:
        ys = np.asarray(explicit, dtype=np.float64)
    else:
        if row_step <= 0:
            raise ValueError(f"row_step must be positive, got {row_step}")
        span = g.orig_h - g.crop_top
        count = (span - 1) // row_step + 1
        if num_rows is not None:
            count = min(count, int(num_rows))
        ys = (g.orig_h - 1 - row_step * np.arange(count)).astype(np.float64)
    keep = (ys >= g.crop_top) & (ys <= g.orig_h - 1)
    ys = ys[keep]
    d = (g.orig_h - 1) - ys
    one_based = _round_half_up(g.in_h - d / (g.orig_h - g.crop_top) * g.in_h)
    rows = np.clip(one_based.astype(np.int64) - 1, 0, g.in_h - 1)
    ys.setflags(write=False)
    rows.setflags(write=False)
    return ys, rows


def _col_to_x(cols: np.ndarray, geometry: Geometry, round_x: bool) -> np.ndarray:
    """0-based input column -> original x: ``(col + 1) * orig_w / in_w - 1`` (main.m's formula)."""
    x = (np.asarray(cols, dtype=np.float64) + 1.0) * geometry.orig_w / geometry.in_w
    if round_x:
        x = _round_half_up(x)
    return x - 1.0


def _assemble(vals: np.ndarray, cols: np.ndarray, exist: np.ndarray | None, ys: np.ndarray,
              geometry: Geometry, cfg: LaneDecodeConfig) -> dict[int, np.ndarray]:
    """Per slot: threshold the row peaks, apply existence and min_points, map to the frame."""
    lanes: dict[int, np.ndarray] = {}
    ok = vals > cfg.prob_thresh
    counts = ok.sum(axis=1)
    need = max(cfg.min_points, 1)
    round_x = (not cfg.refine) if cfg.round_x is None else cfg.round_x
    xs = None if cfg.refine else _col_to_x(cols, geometry, round_x)
    for s in range(vals.shape[0]):
        if counts[s] < need or (exist is not None and not exist[s] > cfg.exist_thresh):
            continue
        sel = ok[s]
        pts = np.empty((int(counts[s]), 2))
        if xs is None:
            pts[:, 0] = _col_to_x(_smooth(cols[s, sel].astype(np.float64)), geometry, round_x)
        else:
            pts[:, 0] = xs[s, sel]
        pts[:, 1] = ys[sel]
        lanes[s + 1] = pts
    return lanes


def _smooth(c: np.ndarray) -> np.ndarray:
    """[1, 2, 1]/4 along the lane, ends kept: removes single-row jitter, keeps the shape."""
    if len(c) < 3:
        return c
    out = c.copy()
    out[1:-1] = 0.25 * c[:-2] + 0.5 * c[1:-1] + 0.25 * c[2:]
    return out


def _check_exist(exist, slots: int) -> np.ndarray | None:
    if exist is None:
        return None
    exist = np.asarray(exist, dtype=np.float64).ravel()
    if exist.shape[0] != slots:
        raise ValueError(f"exist has {exist.shape[0]} values for {slots} lane slots")
    return exist


def decode_lanes(probs: np.ndarray, exist: np.ndarray | None, geometry: Geometry,
                 cfg: LaneDecodeConfig = LaneDecodeConfig()) -> dict[int, np.ndarray]:
    """Lanes from (1+L, h, w) softmax probabilities at the model input size.

    Returns slot (1..L) -> (N, 2) float64 (x, y) in original-frame pixels, bottom to top. Only
    the sampled rows are read. ``exist`` (L,) existence probabilities, or None to keep every slot
    with at least ``min_points`` points.
    """
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] < 2:
        raise ValueError(f"probs must be (1+L, h, w) with L >= 1, got shape {probs.shape}")
    if probs.shape[1:] != (geometry.in_h, geometry.in_w):
        raise ValueError(f"probs are {probs.shape[1]}x{probs.shape[2]} but the geometry's input is "
                         f"{geometry.in_h}x{geometry.in_w}")
    slots = probs.shape[0] - 1
    exist = _check_exist(exist, slots)
    ys, rows = _cached_rows(geometry, cfg)
    band = probs[1:, rows, :]                       # (L, R, w): the only pixels touched
    cols = band.argmax(axis=2)
    vals = np.take_along_axis(band, cols[..., None], axis=2)[..., 0]
    if cfg.refine:
        cols = _subpixel(band, cols, cfg.refine_window)
    return _assemble(vals, cols, exist, ys, geometry, cfg)


def _subpixel(band: np.ndarray, cols: np.ndarray, half: int) -> np.ndarray:
    """Probability-weighted centroid of the columns within ``half`` px of each arg-max."""
    w = band.shape[2]
    offs = np.arange(-half, half + 1)
    idx = np.clip(cols[..., None] + offs, 0, w - 1)               # (L, R, 2h+1)
    wts = np.take_along_axis(band, idx, axis=2).astype(np.float64)
    wts = np.where((cols[..., None] + offs >= 0) & (cols[..., None] + offs < w), wts, 0.0)
    tot = wts.sum(axis=2)
    cen = (wts * idx).sum(axis=2) / np.where(tot > 0, tot, 1.0)
    return np.where(tot > 0, cen, cols.astype(np.float64))


def decode_lanes_from_peaks(peak_vals: np.ndarray, peak_cols: np.ndarray, exist: np.ndarray | None,
                            geometry: Geometry,
                            cfg: LaneDecodeConfig = LaneDecodeConfig()) -> dict[int, np.ndarray]:
    """The same lanes as :func:`decode_lanes` from a fused head's per-row peaks.

    ``peak_vals``/``peak_cols`` are (L, R): per slot and per sampling row (the rows
    :func:`sample_rows` gives, in order) the max probability and its input column. The sub-pixel
    part of ``refine`` needs whole rows, so ``refine=True`` is refused here.
    """
    if cfg.refine:
        raise ValueError("refine=True needs the full probability rows; use decode_lanes, or decode "
                         "the fused peaks with refine=False")
    vals = np.asarray(peak_vals)
    cols = np.asarray(peak_cols)
    if vals.ndim != 2 or vals.shape != cols.shape:
        raise ValueError(f"peak_vals {vals.shape} and peak_cols {cols.shape} must both be (L, R)")
    ys, _ = _cached_rows(geometry, cfg)
    if vals.shape[1] != len(ys):
        raise ValueError(f"peaks have {vals.shape[1]} rows but the sampling gives {len(ys)}")
    exist = _check_exist(exist, vals.shape[0])
    return _assemble(vals, cols.astype(np.int64), exist, ys, geometry, cfg)


def class_map(logits_or_probs: np.ndarray, geometry: Geometry) -> np.ndarray:
    """uint8 (orig_h, orig_w) arg-max class map at the original frame size.

    Arg-max at the input size, then a nearest-neighbour resize (pixel-centre convention, as
    :class:`Geometry`) into the uncropped area. Rows cropped away are 0 (background): the model
    never saw them, and 0 keeps overlays and lane masks clean there.
    """
    x = np.asarray(logits_or_probs)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3:
        raise ValueError(f"expected (C, h, w) scores, got shape {x.shape}")
    if x.shape[0] > 256:
        raise ValueError(f"{x.shape[0]} classes do not fit a uint8 class map")
    g = geometry
    cls = x.argmax(axis=0).astype(np.uint8)
    out = np.zeros((g.orig_h, g.orig_w), dtype=np.uint8)
    out[g.crop_top:] = cv2.resize(cls, (g.orig_w, g.orig_h - g.crop_top), interpolation=cv2.INTER_NEAREST_EXACT)
    return out


def lanes_to_mask(lanes: Mapping[int, np.ndarray] | Sequence[np.ndarray], shape: tuple[int, int],
                  width: int = 30) -> np.ndarray:
    """Rasterise lanes into a uint8 (h, w) mask: pixel value = slot id (list index + 1 for lists)."""
    items = lanes.items() if isinstance(lanes, Mapping) else enumerate(lanes, 1)
    mask = np.zeros(tuple(shape[:2]), dtype=np.uint8)
    for slot, pts in items:
        p = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        if len(p) == 0:
            continue
        if not 0 < int(slot) < 256:
            raise ValueError(f"slot {slot} does not fit a uint8 mask")
        q = np.rint(p).astype(np.int32).reshape(-1, 1, 2)
        if len(p) == 1:
            cv2.circle(mask, tuple(int(v) for v in q[0, 0]), max(1, width // 2), int(slot), -1)
        else:
            cv2.polylines(mask, [q], False, int(slot), thickness=int(width))
    return mask
