"""Drawing results onto frames, cheaply: polylines for lanes, a semi-transparent ego-lane fill
blended only inside its bounding box, a palette blend for marking classes, and a small HUD.

Everything draws in place on the BGR frame (which the pipeline owns by then).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import cv2
import numpy as np

# BGR per lane slot (1-based): slot 1 leftmost ... ; 2 and 3 bound the ego lane.
LANE_COLORS: dict[int, tuple[int, int, int]] = {
    1: (255, 96, 0), 2: (0, 220, 255), 3: (0, 220, 255), 4: (255, 0, 200),
    5: (0, 128, 255), 6: (128, 255, 0), 7: (255, 255, 0), 8: (160, 0, 255),
}
EGO_FILL = (0, 200, 0)
EGO_SLOTS = (2, 3)


def palette(num_classes: int) -> np.ndarray:
    """(C, 3) uint8 BGR colours; class 0 (background) black. Deterministic, well spread hues."""
    pal = np.zeros((max(num_classes, 1), 3), np.uint8)
    for c in range(1, num_classes):
        hue = int((c * 0.618033988749895 % 1.0) * 179)
        hsv = np.array([[[hue, 220, 255]]], np.uint8)
        pal[c] = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return pal


def _pts(lane: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(lane, np.float64).reshape(-1, 2)).astype(np.int32).reshape(-1, 1, 2)


def fill_ego_lane(frame: np.ndarray, left: np.ndarray, right: np.ndarray, color=EGO_FILL,
                  alpha: float = 0.3) -> None:
    """Blend the polygon between two lanes into ``frame``, touching only its bounding box."""
    poly = np.concatenate([_pts(left), _pts(right)[::-1]], axis=0)
    h, w = frame.shape[:2]
    x0, y0 = np.maximum(poly.reshape(-1, 2).min(axis=0), 0)
    x1, y1 = np.minimum(poly.reshape(-1, 2).max(axis=0) + 1, (w, h))
    if x1 <= x0 or y1 <= y0:
        return
    roi = frame[y0:y1, x0:x1]
    painted = roi.copy()
    cv2.fillPoly(painted, [poly - np.array([x0, y0], np.int32)], color)
    # outside the polygon painted == roi, so the blend leaves those pixels as they were
    cv2.addWeighted(painted, alpha, roi, 1.0 - alpha, 0.0, dst=roi)


def draw_lanes(frame: np.ndarray, lanes: Mapping[int, np.ndarray], thickness: int | None = None,
               ego_alpha: float = 0.3) -> None:
    """Lanes by slot colour; the ego lane (between slots 2 and 3) filled when both exist."""
    t = thickness or max(2, frame.shape[1] // 400)
    a, b = EGO_SLOTS
    if ego_alpha > 0 and a in lanes and b in lanes and len(lanes[a]) >= 2 and len(lanes[b]) >= 2:
        fill_ego_lane(frame, lanes[a], lanes[b], alpha=ego_alpha)
    for slot, lane in lanes.items():
        if len(lane) == 0:
            continue
        color = LANE_COLORS.get(int(slot), (255, 255, 255))
        pts = _pts(lane)
        if len(pts) == 1:
            cv2.circle(frame, tuple(int(v) for v in pts[0, 0]), t, color, -1, cv2.LINE_AA)
        else:
            cv2.polylines(frame, [pts], False, color, t, cv2.LINE_AA)


def blend_classes(frame: np.ndarray, classes: np.ndarray, pal: np.ndarray, crop_top: int = 0,
                  alpha: float = 0.5) -> None:
    """Blend a class map (at any resolution, covering rows ``crop_top:`` of the frame) with
    ``pal``; background (0) pixels stay untouched. Colouring happens at the map's resolution."""
    region = frame[crop_top:]
    h, w = region.shape[:2]
    if classes.shape != (h, w):
        classes = cv2.resize(classes, (w, h), interpolation=cv2.INTER_NEAREST)
    mask = classes > 0
    if not mask.any():
        return
    colored = pal[np.minimum(classes, len(pal) - 1)]
    mixed = cv2.addWeighted(region, 1.0 - alpha, colored, alpha, 0.0)
    np.copyto(region, mixed, where=mask[..., None])


def draw_hud(frame: np.ndarray, lines: Sequence[str]) -> None:
    """A few lines of text (FPS, per-stage ms) on an opaque box in the top-left corner."""
    if not lines:
        return
    scale = max(0.4, frame.shape[1] / 2400)
    th = int(22 * scale / 0.5)
    width = int(max(len(s) for s in lines) * 10 * scale / 0.5) + 10
    cv2.rectangle(frame, (0, 0), (min(width, frame.shape[1] - 1), th * len(lines) + 6), (0, 0, 0), -1)
    for i, s in enumerate(lines):
        cv2.putText(frame, s, (5, th * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


class Overlay:
    """Draws one frame's result: ``draw(frame, lanes=..., classes=..., crop_top=..., hud=[...])``."""

    def __init__(self, num_classes: int = 0, ego_alpha: float = 0.3, class_alpha: float = 0.5,
                 thickness: int | None = None) -> None:
        self.pal = palette(num_classes)
        self.ego_alpha = ego_alpha
        self.class_alpha = class_alpha
        self.thickness = thickness

    def draw(self, frame: np.ndarray, lanes: Mapping[int, np.ndarray] | None = None,
             classes: np.ndarray | None = None, crop_top: int = 0,
             hud: Sequence[str] | None = None) -> np.ndarray:
        if classes is not None:
            blend_classes(frame, classes, self.pal, crop_top, self.class_alpha)
        if lanes:
            draw_lanes(frame, lanes, self.thickness, self.ego_alpha)
        if hud:
            draw_hud(frame, hud)
        return frame
