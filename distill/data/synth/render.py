"""Render a ``ScenePlan`` into a BGR image, a lane-slot mask, a marking mask and lane polylines.

Everything is drawn once at full resolution with OpenCV primitives; smooth effects (shadows,
night lighting, glare) are computed on a quarter-resolution map and resized. Labels come from
the same projection as the pixels, so they are exact: occluded lanes stay labelled (as CULane
does); occluded markings do not (as ApolloScape does).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from distill.data.synth.camera import band_polygons, project, strip_polygons, visible_range
from distill.data.synth.scene import LANE_SLOTS, MARK, Boundary, Light, Marking, ScenePlan

SHIFT = 4                   # fixed-point fraction bits for cv2 polygon vertices
LANE_WIDTH_1640 = 16        # CULane laneseg_label_w16: lanes 16 px wide at 1640x590
ROW_STEP_590 = 10           # polyline rows every 10 px at 590 rows
LOWRES = 4                  # smooth effects are computed at 1/LOWRES resolution
_TEX_PAD = 64
_TEXTURES: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


@dataclass
class Rendered:
    image: np.ndarray                   # (H, W, 3) uint8 BGR
    slot_mask: np.ndarray               # (H, W) uint8, 0 background, 1..4 lane slot
    marking_mask: np.ndarray            # (H, W) uint8, index into MARKING_CLASSES
    lanes: dict[int, np.ndarray]        # slot -> (N, 2) float32 (x, y), bottom to top
    exist: np.ndarray                   # (4,) float32


def lane_thickness(width: int) -> int:
    """Label line width for an image ``width`` px wide (16 px at CULane's 1640)."""
    return max(2, int(round(LANE_WIDTH_1640 * width / 1640)))


def _textures(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-process road grain and sensor noise (fixed seed, so every process renders alike)."""
    key = (h, w)
    if key not in _TEXTURES:
        rng = np.random.default_rng(20240607)
        hh, ww = h + _TEX_PAD, w + _TEX_PAD

        def octave(scale: int, sigma: float) -> np.ndarray:
            small = rng.normal(0, sigma, (max(2, hh // scale), max(2, ww // scale))).astype(np.float32)
            return cv2.resize(small, (ww, hh), interpolation=cv2.INTER_CUBIC)

        road = octave(48, 14) + octave(12, 7) + rng.normal(0, 6, (hh, ww)).astype(np.float32)
        road3 = road[..., None] + rng.normal(0, 1.5, (hh, ww, 3)).astype(np.float32)
        noise = rng.normal(128, 32, (hh, ww, 3))
        _TEXTURES[key] = (np.clip(128 + road3, 0, 255).astype(np.uint8),
                          np.clip(noise, 0, 255).astype(np.uint8))
    return _TEXTURES[key]


def _fix(poly: np.ndarray) -> np.ndarray:
    """Float pixel polygon(s) -> int32 fixed point for ``shift=SHIFT`` drawing."""
    return np.round(np.clip(poly, -1e6, 1e6) * (1 << SHIFT)).astype(np.int32)


def _fill(img: np.ndarray, mark: np.ndarray | None, polys, color, cls: int) -> None:
    """Fill polygons (a list, or a (K, N, 2) array) anti-aliased on ``img`` and hard on ``mark``."""
    if not len(polys):
        return
    pts = list(_fix(polys)) if isinstance(polys, np.ndarray) else [_fix(p) for p in polys]
    cv2.fillPoly(img, pts, color, cv2.LINE_AA, SHIFT)
    if mark is not None and cls:
        cv2.fillPoly(mark, pts, cls, cv2.LINE_8, SHIFT)


def _blend(a, b, t: float) -> tuple[float, float, float]:
    return tuple(float(x) * (1 - t) + float(y) * t for x, y in zip(a, b))  # type: ignore[return-value]


def _paint_intervals(b: Boundary, z0: float, z1: float, travel: float) -> np.ndarray:
    """(K, 3) paint stretches (z_start, z_end, opacity) within [z0, z1], fixed to the road surface.

    Dashed lines give one stretch per dash; solid and double lines one per 3 m, each with its own
    wear, so worn paint fades and breaks along the line.
    """
    period, length, phase = (b.dash + b.gap, b.dash, b.phase) if b.kind == "dashed" else (3.0, 3.0, 0.0)
    j = np.arange(np.floor((z0 + travel - phase) / period) - 1, np.ceil((z1 + travel - phase) / period) + 1)
    start = j * period + phase - travel
    lo, hi = np.maximum(start, z0), np.minimum(start + length, z1)
    alpha = b.wear[j.astype(np.int64) % len(b.wear)]
    keep = (hi > lo) & (alpha > 0)
    return np.stack([lo[keep], hi[keep], alpha[keep]], axis=1)


def _draw_lane_paint(plan: ScenePlan, img: np.ndarray, mark: np.ndarray, z0: float, z1: float) -> None:
    cam, road = plan.cam, plan.road
    t = np.linspace(0.0, 1.0, 3)
    for b in plan.boundaries:
        if b.kind == "none":
            continue
        iv = _paint_intervals(b, z0, z1, plan.travel)
        if not len(iv):
            continue
        paint = plan.yellow if b.color == "yellow" else plan.white
        level = np.round(iv[:, 2] * 8) / 8
        zz = iv[:, :1] + (iv[:, 1:2] - iv[:, :1]) * t
        offsets = (-(b.width / 2 + 0.06), b.width / 2 + 0.06) if b.kind == "double" else (0.0,)
        for off in offsets:
            polys = strip_polygons(cam, road, np.full_like(zz, b.x + off), zz, b.width)
            for a in np.unique(level):
                _fill(img, mark if a >= 0.3 else None, polys[level == a],
                      _blend(plan.asphalt, paint, float(a)), b.mark_class)


def _marking_polys(m: Marking, plan: ScenePlan) -> list[list[np.ndarray]]:
    """Pixel polygons of one marking, as groups that may each go to one ``fillPoly`` call."""
    cam, road = plan.cam, plan.road
    if m.kind == "stop_line":
        return [[band_polygons(cam, road, m.x0, m.x1, m.z, m.z + m.depth)]]
    if m.kind == "crosswalk":
        xs = np.arange(m.x0, m.x1 - 0.5, 1.0)
        return [list(band_polygons(cam, road, xs, xs + 0.5, np.full_like(xs, m.z), np.full_like(xs, m.z + m.depth)))]
    xc, d = (m.x0 + m.x1) / 2, m.depth

    def poly(local: list[tuple[float, float]]) -> np.ndarray:
        a = np.array(local, np.float64)
        return project(cam, road, xc + a[:, 0], m.z + a[:, 1])

    if m.kind == "diamond":
        outer = poly([(0, 0), (0.65, d / 2), (0, d), (-0.65, d / 2)])
        inner = poly([(0, 0.6), (0.5, d / 2), (0, d - 0.6), (-0.5, d / 2)])
        return [[outer, inner]]       # even-odd fill: a ring
    if m.variant == "straight":
        return [[poly([(-0.1, 0), (0.1, 0), (0.1, 0.6 * d), (-0.1, 0.6 * d)])],
                [poly([(-0.35, 0.6 * d), (0.35, 0.6 * d), (0, d)])]]
    s = -1.0 if m.variant == "left" else 1.0
    return [[poly([(-0.1, 0), (0.1, 0), (0.1, 0.68 * d), (-0.1, 0.68 * d)])],
            [poly([(0.0, 0.58 * d), (0.45 * s, 0.58 * d), (0.45 * s, 0.68 * d), (0.0, 0.68 * d)])],
            [poly([(0.45 * s, 0.45 * d), (0.45 * s, 0.81 * d), (0.8 * s, 0.63 * d)])]]


def _draw_background(plan: ScenePlan, img: np.ndarray, sky_row: int) -> None:
    H, W = img.shape[:2]
    top, bottom = np.array(plan.sky[0], np.float32), np.array(plan.sky[1], np.float32)
    t = np.linspace(0, 1, sky_row, dtype=np.float32)[:, None]
    column = (top * (1 - t) + bottom * t).astype(np.uint8)[:, None, :]
    img[:sky_row] = cv2.resize(column, (W, sky_row), interpolation=cv2.INTER_NEAREST)
    cv2.rectangle(img, (0, sky_row), (W, H), plan.ground, -1)
    for u, wf, hf, color in plan.scenery:
        x0, w, h = int(u * W), int(wf * W), int(hf * H)
        if color[1] > color[2]:     # green-ish: a tree crown on a trunk
            cv2.ellipse(img, (x0, sky_row - h // 2), (max(w // 2, 1), max(h // 2, 1)), 0, 0, 360, color, -1)
        else:
            cv2.rectangle(img, (x0 - w // 2, sky_row - h), (x0 + w // 2, sky_row + 2), color, -1)


def _draw_vehicles(plan: ScenePlan, img: np.ndarray, mark: np.ndarray, z0: float, z1: float) -> None:
    cam = plan.cam
    for v in plan.vehicles:
        if not z0 < v.z < z1:
            continue
        u, vb = project(cam, plan.road, v.x, v.z)
        s = cam.focal / v.z
        w, h = v.width * s, v.height * s
        x0, x1, y0, y1 = int(u - w / 2), int(u + w / 2), int(vb - h), int(vb)
        body = v.color
        dark = tuple(int(c * 0.45) for c in body)
        cv2.rectangle(img, (x0, y0), (x1, y1), body, -1)
        cv2.rectangle(img, (x0, int(y1 - 0.18 * h)), (x1, y1), dark, -1)
        if v.height < 2.0:      # cars: rear window; trucks: a plain box
            cv2.rectangle(img, (int(u - 0.4 * w), int(y0 + 0.08 * h)), (int(u + 0.4 * w), int(y0 + 0.4 * h)),
                          (45, 40, 38), -1)
        for side in (-1, 1):
            cx = u + side * 0.4 * w
            cv2.rectangle(img, (int(cx - 0.07 * w), int(y0 + 0.5 * h)), (int(cx + 0.07 * w), int(y0 + 0.6 * h)),
                          (40, 40, 210), -1)
        cv2.rectangle(img, (int(u - 0.12 * w), int(y0 + 0.66 * h)), (int(u + 0.12 * w), int(y0 + 0.76 * h)),
                      (200, 205, 205), -1)
        cv2.rectangle(mark, (x0, y0), (x1, y1), 0, -1)    # occluded markings are not visible


def _gain_and_glow(plan: ScenePlan, H: int, W: int, z0: float, z1: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Quarter-resolution multiplicative light (shadows, night, tint) and additive glare."""
    cam, road = plan.cam, plan.road
    hs, ws = -(-H // LOWRES), -(-W // LOWRES)
    shadow = np.zeros((hs, ws), np.float32)
    t = np.linspace(0, 2 * np.pi, 14)
    for b in plan.shadows:
        zz = np.clip(b.z + b.rz * np.sin(t), z0, z1)
        pts = project(cam, road, b.x + b.rx * np.cos(t), zz) / LOWRES
        cv2.fillPoly(shadow, [_fix(pts)], b.strength, cv2.LINE_AA, SHIFT)
    for v in plan.vehicles:
        if z0 < v.z < z1:
            quad = band_polygons(cam, road, v.x - v.width / 2 - 0.15, v.x + v.width / 2 + 0.15,
                                 v.z - 0.3, v.z + 3.5) / LOWRES
            cv2.fillPoly(shadow, [_fix(quad)], 0.6, cv2.LINE_AA, SHIFT)
    shadow = cv2.GaussianBlur(shadow, (0, 0), 1.2)
    gain = plan.brightness * (1.0 - shadow)
    if plan.night and plan.headlights > 0:
        vv, uu = np.mgrid[0:hs, 0:ws].astype(np.float32) * LOWRES
        dv = np.maximum(vv - cam.horizon, 1.0)
        z = cam.focal * cam.height_m / dv
        x = (uu - cam.cx) * z / cam.focal
        beam = np.exp(-(x / (1.8 + 0.12 * z)) ** 2) / (1 + (z / 22) ** 2)
        gain = gain + plan.headlights * beam * (1.0 - shadow) * (vv > cam.horizon)
    gain3 = np.clip(gain[..., None] * np.array(plan.tint, np.float32) * 128, 0, 255).astype(np.uint8)

    glow = None
    lights = list(plan.lights)
    if plan.night:      # tail lights glow at night
        for v in plan.vehicles:
            if z0 < v.z < z1:
                u, vb = project(cam, road, v.x, v.z)
                s = cam.focal / v.z
                for side in (-1, 1):
                    lights.append(Light(float((u + side * 0.4 * v.width * s) / W), float((vb - 0.45 * v.height * s) / H),
                                         0.12 * v.width * s / W, 160.0, (0.3, 0.3, 1.0)))
    if lights:
        vv, uu = np.mgrid[0:hs, 0:ws].astype(np.float32)
        acc = np.zeros((hs, ws, 3), np.float32)
        for li in lights:
            r = max(li.radius * ws, 0.7)
            d2 = ((uu - li.u * ws) ** 2 + (vv - li.v * hs) ** 2) / (2 * r * r)
            blob = li.intensity * np.exp(-d2)
            acc += blob[..., None] * np.array(li.color, np.float32)
        glow = np.clip(acc, 0, 255).astype(np.uint8)
    return gain3, glow


def _lane_labels(plan: ScenePlan, z0: float, z1: float) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Lane polylines per slot at rows every 10 px (scaled), truncated before lanes merge."""
    cam, road = plan.cam, plan.road
    H, W = cam.height, cam.width
    step = ROW_STEP_590 * H / 590
    rows = (H - 1) - step * np.arange(int((H - 1) // step) + 1)
    zs = np.geomspace(z0, z1, 600)
    xs: dict[int, np.ndarray] = {}
    for slot in range(1, LANE_SLOTS + 1):
        k = plan.slot_boundary(slot)
        if k is None:
            continue
        uv = project(cam, road, np.full_like(zs, plan.boundaries[k].x), zs)
        u, v = uv[::-1, 0], uv[::-1, 1]      # v increasing
        x = np.interp(rows, v, u, left=np.nan, right=np.nan)
        xs[slot] = x
    # Horizontal half-width of each drawn label line: wider where the lane is shallow.
    t = lane_thickness(W)
    half = {k: 0.5 * t * np.sqrt(1 + np.gradient(x, step) ** 2) if len(x) > 1 else x * 0 + t
            for k, x in xs.items()}
    lanes: dict[int, np.ndarray] = {}
    exist = np.zeros(LANE_SLOTS, np.float32)
    for slot, x in xs.items():
        ok = np.isfinite(x) & (x >= 0) & (x <= W - 1)
        for nb in (slot - 1, slot + 1):
            if nb in xs:
                gap = np.abs(xs[nb] - x) - half[slot] - half[nb]
                close = np.nonzero(gap < 2.0)[0]         # NaN (neighbour absent there) is not close
                if len(close):
                    ok[close[0]:] = False
        if ok.sum() >= 2:
            lanes[slot] = np.stack([x[ok], rows[ok]], axis=1).astype(np.float32)
            exist[slot - 1] = 1.0
    return lanes, exist


def _draw_slot_mask(lanes: dict[int, np.ndarray], H: int, W: int) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    t = lane_thickness(W)
    for slot, pts in sorted(lanes.items()):
        p = np.round(pts).astype(np.int32)
        # split where rows were skipped (a lane leaving the image and coming back)
        breaks = np.nonzero(np.diff(pts[:, 1]) < -1.5 * ROW_STEP_590 * H / 590)[0] + 1
        for run in np.split(p, breaks):
            if len(run) == 1:
                cv2.circle(mask, tuple(int(c) for c in run[0]), t // 2, slot, -1)
            else:
                cv2.polylines(mask, [run.reshape(-1, 1, 2)], False, slot, t, cv2.LINE_8)
    return mask


def render(plan: ScenePlan) -> Rendered:
    """Draw the plan: image, exact slot and marking masks, lane polylines and existence."""
    cam, road = plan.cam, plan.road
    H, W = cam.height, cam.width
    z_near, z_max = visible_range(cam, road, plan.z_far)
    z0 = max(0.8, 0.7 * z_near)
    z_lanes = min(z_max, plan.z_end)
    img = np.empty((H, W, 3), np.uint8)
    mark = np.zeros((H, W), np.uint8)
    sky_row = int(np.clip(np.ceil(project(cam, road, 0.0, z_max)[1]), 1, H - 1))
    _draw_background(plan, img, sky_row)

    # Road surface (and the crossing road of a crossroad scene).
    zs = np.geomspace(z0, z_max, 96)
    xl, xr = plan.boundaries[0].x - plan.shoulder, plan.boundaries[-1].x + plan.shoulder
    left = project(cam, road, np.full_like(zs, xl), zs)
    right = project(cam, road, np.full_like(zs, xr), zs)
    _fill(img, None, [np.vstack([left, right[::-1]])], plan.asphalt, 0)
    if plan.cross:
        za, zb = max(plan.cross_z[0], z0), min(plan.cross_z[1], z_max)
        if zb > za:
            _fill(img, None, [band_polygons(cam, road, -80.0, 80.0, za, zb)], plan.asphalt, 0)

    # Distractors that are not markings: erased old lines, cracks and seams.
    for g in plan.ghosts:
        zz = np.linspace(max(g[0, 1], z0), min(g[1, 1], z_max), 8)
        xx = np.interp(zz, g[:, 1], g[:, 0])
        _fill(img, None, list(strip_polygons(cam, road, xx, zz, 0.15)), _blend(plan.asphalt, plan.white, 0.18), 0)
    crack = tuple(int(c * 0.55) for c in plan.asphalt)
    for c in plan.cracks:
        keep = (c[:, 1] > z0) & (c[:, 1] < z_max)
        if keep.sum() >= 2:
            pts = _fix(project(cam, road, c[keep, 0], c[keep, 1]))
            cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, crack, 1, cv2.LINE_AA, SHIFT)

    _draw_lane_paint(plan, img, mark, z0, z_lanes)
    for m in plan.markings:
        if not z0 < m.z < z_max:
            continue
        color = _blend(plan.asphalt, plan.white, m.wear)
        for group in _marking_polys(m, plan):
            _fill(img, mark, group, color, MARK[m.kind])

    tex, noise = _textures(H, W)
    ty, tx = plan.tex_offset
    a = 0.6 * plan.texture
    img[sky_row:] = cv2.addWeighted(img[sky_row:], 1.0, tex[ty + sky_row:ty + H, tx:tx + W], a, -128 * a)

    _draw_vehicles(plan, img, mark, z0, z_max)
    gain3, glow = _gain_and_glow(plan, H, W, z0, z_max)
    img = cv2.multiply(img, cv2.resize(gain3, (W, H), interpolation=cv2.INTER_LINEAR), scale=1 / 128)
    if glow is not None:
        img = cv2.add(img, cv2.resize(glow, (W, H), interpolation=cv2.INTER_LINEAR))
    if plan.rain > 0:
        img = _rain(img, plan)
    if plan.blur > 1:
        img = cv2.blur(img, (1, plan.blur))
    ny, nx = plan.noise_offset
    k = plan.noise / 32
    img = cv2.addWeighted(img, 1.0, noise[ny:ny + H, nx:nx + W], k, -128 * k)

    lanes, exist = _lane_labels(plan, z0, z_lanes)
    return Rendered(img, _draw_slot_mask(lanes, H, W), mark, lanes, exist)


def _rain(img: np.ndarray, plan: ScenePlan) -> np.ndarray:
    H, W = img.shape[:2]
    rng = np.random.default_rng(plan.seed)
    n = int(plan.rain * 900 * H * W / (1640 * 590)) + 1
    length = rng.uniform(8, 30, n) * H / 590
    x, y = rng.uniform(0, W, n), rng.uniform(0, H, n)
    slant = rng.uniform(0.05, 0.2)
    seg = np.stack([np.stack([x, y], 1), np.stack([x + slant * length, y + length], 1)], 1)
    layer = np.zeros((H, W), np.uint8)
    cv2.polylines(layer, list(np.round(seg).astype(np.int32)), False, 110, 1, cv2.LINE_AA)
    layer = cv2.GaussianBlur(layer, (3, 3), 0)
    haze = 0.25 * plan.rain
    img = cv2.convertScaleAbs(img, alpha=1 - haze, beta=150 * haze)
    return cv2.add(img, cv2.cvtColor(layer, cv2.COLOR_GRAY2BGR))
