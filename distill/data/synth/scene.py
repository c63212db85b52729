"""What a synthetic scene contains: the forced-option ``SceneConfig`` and the sampled ``ScenePlan``.

Sampling (``sample_plan``) draws every random choice up front from one ``numpy`` generator, so a
plan is a plain value: rendering it is deterministic, and the video maker animates a drive by
editing a plan frame by frame (travel distance, curvature, lateral offset, light, vehicles).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from distill.data.synth.camera import Camera, Road

# The compact marking task's classes and the ApolloScape lane-marking label id each one is written
# as in ``*_bin.png`` (ids from ApolloScape's lane-marking table: s_w_d 200, b_w_g 201, s_y_d 204,
# ds_y_dn 209, s_w_s 217, c_wy_z 214, a_w_t 220, d_wy_za 212). Yellow dashed and yellow double
# lines share one class and are written as ds_y_dn (double solid yellow, dividing).
MARKING_CLASSES: tuple[str, ...] = (
    "background", "white_solid", "white_dashed", "yellow_solid", "yellow_dashed_double",
    "stop_line", "crosswalk", "arrow", "diamond",
)
APOLLO_IDS: dict[str, int] = {
    "background": 0, "white_solid": 200, "white_dashed": 201, "yellow_solid": 204,
    "yellow_dashed_double": 209, "stop_line": 217, "crosswalk": 214, "arrow": 220, "diamond": 212,
}
MARK = {name: i for i, name in enumerate(MARKING_CLASSES)}

# CULane's nine test categories, in the order of its ``list/test_split/test{i}_{name}.txt`` files.
CULANE_CATEGORIES: tuple[str, ...] = (
    "normal", "crowd", "hlight", "shadow", "noline", "arrow", "curve", "cross", "night")

LANE_SLOTS = 4

# Default probability of each optional feature when ``SceneConfig`` leaves it as None.
DEFAULT_PROBS: dict[str, float] = {
    "night": 0.2, "dazzle": 0.12, "shadow": 0.3, "crowd": 0.3, "noline": 0.06, "arrow": 0.2,
    "curve": 0.3, "cross": 0.05, "rain": 0.1, "motion_blur": 0.1, "worn": 0.3, "stop_line": 0.12,
    "crosswalk": 0.08, "diamond": 0.07, "slope": 0.3,
}


@dataclass(frozen=True)
class SceneConfig:
    """Scene size and forced options: ``True``/``False`` forces a feature, ``None`` samples it."""

    width: int = 1640
    height: int = 590
    num_lanes: int | None = None      # lanes on the road, 2..5
    night: bool | None = None
    dazzle: bool | None = None        # glare from the sun or oncoming headlights (CULane "hlight")
    shadow: bool | None = None        # tree and building shadows
    crowd: bool | None = None         # several vehicles, some close and occluding
    noline: bool | None = None        # lanes exist (and are labelled) but carry no paint
    arrow: bool | None = None
    curve: bool | None = None
    cross: bool | None = None         # crossroad: no lanes at all, a crosswalk across the road
    rain: bool | None = None
    motion_blur: bool | None = None
    worn: bool | None = None          # faded and missing paint
    stop_line: bool | None = None
    crosswalk: bool | None = None
    diamond: bool | None = None
    slope: bool | None = None         # road grade: the vanishing point moves up or down

    def __post_init__(self) -> None:
        if self.width < 64 or self.height < 32:
            raise ValueError(f"scene size {self.width}x{self.height} is too small (at least 64x32)")
        if self.num_lanes is not None and not 2 <= self.num_lanes <= 5:
            raise ValueError(f"num_lanes must be 2..5, got {self.num_lanes}")

    def flags(self, rng: np.random.Generator) -> dict[str, bool]:
        """Resolve every optional feature to a bool (forced ones win, the rest are sampled)."""
        out = {}
        for f in fields(self):
            if f.name in DEFAULT_PROBS:
                forced = getattr(self, f.name)
                draw = bool(rng.random() < DEFAULT_PROBS[f.name])   # always draw: stable streams
                out[f.name] = draw if forced is None else bool(forced)
        return out


@dataclass
class Boundary:
    """A lane boundary at lateral position ``x`` (m) with its paint."""

    x: float
    kind: str                   # "solid" | "dashed" | "double" | "none"
    color: str                  # "white" | "yellow"
    wear: np.ndarray            # (64,) paint opacity per 3 m stretch (0 = missing), indexed by distance
    dash: float = 4.0           # dash length (m)
    gap: float = 8.0            # gap length (m)
    phase: float = 0.0          # dash phase (m)
    width: float = 0.15         # paint width (m)

    @property
    def mark_class(self) -> int:
        if self.color == "yellow":
            return MARK["yellow_solid"] if self.kind == "solid" else MARK["yellow_dashed_double"]
        return MARK["white_dashed"] if self.kind == "dashed" else MARK["white_solid"]


@dataclass
class Marking:
    """A road marking other than lane lines, placed at distance ``z`` across [x0, x1]."""

    kind: str                   # "stop_line" | "crosswalk" | "arrow" | "diamond"
    z: float
    x0: float
    x1: float
    variant: str = ""           # arrows: "straight" | "left" | "right"
    depth: float = 0.4          # extent along the road (m)
    wear: float = 1.0


@dataclass
class Vehicle:
    x: float                    # lateral centre (m, road frame)
    z: float                    # distance of the rear bumper (m)
    width: float
    height: float
    color: tuple[int, int, int]
    speed: float = 0.0          # m/s relative to the road (the video maker moves it)


@dataclass
class Blob:
    """An elliptic shadow on the road (road frame: centre, half-extents, darkening 0..1)."""

    x: float
    z: float
    rx: float
    rz: float
    strength: float


@dataclass
class Light:
    """A glare source in image fractions (u, v), radius as a fraction of the width, 0..255 peak."""

    u: float
    v: float
    radius: float
    intensity: float
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass
class ScenePlan:
    """Every choice needed to render a scene; editing it and re-rendering animates a drive."""

    cam: Camera
    road: Road
    boundaries: list[Boundary]
    ego: int                            # ego lane index: between boundaries ego and ego+1
    lane_width: float
    shoulder: float
    z_far: float = 200.0
    z_end: float = 1e9                  # lanes (and their labels) end here, e.g. at a stop line
    cross: bool = False
    cross_z: tuple[float, float] = (0.0, 0.0)   # crossing road extent along Z (cross scenes)
    markings: list[Marking] = field(default_factory=list)
    vehicles: list[Vehicle] = field(default_factory=list)
    shadows: list[Blob] = field(default_factory=list)
    lights: list[Light] = field(default_factory=list)
    cracks: list[np.ndarray] = field(default_factory=list)     # (K, 2) road-frame polylines
    ghosts: list[np.ndarray] = field(default_factory=list)     # old erased lines, (K, 2)
    scenery: list[tuple[float, float, float, tuple[int, int, int]]] = field(default_factory=list)
    sky: tuple[tuple[int, int, int], tuple[int, int, int]] = ((200, 170, 140), (230, 215, 200))
    ground: tuple[int, int, int] = (70, 110, 90)
    asphalt: tuple[int, int, int] = (105, 105, 108)
    white: tuple[int, int, int] = (235, 235, 235)
    yellow: tuple[int, int, int] = (40, 190, 225)
    brightness: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)       # BGR gains (dusk is warm)
    night: bool = False
    headlights: float = 0.0
    rain: float = 0.0
    blur: int = 0
    noise: float = 3.0
    texture: float = 1.0
    tex_offset: tuple[int, int] = (0, 0)
    noise_offset: tuple[int, int] = (0, 0)
    travel: float = 0.0                 # metres driven: moves dashes, wear and shadows
    seed: int = 0                       # render-time randomness (rain streaks)
    tags: tuple[str, ...] = ()

    def slot_boundary(self, slot: int) -> int | None:
        """Boundary index of lane slot 1..4 (slots 2 and 3 bound the ego lane), None if absent."""
        k = self.ego + slot - 2
        if self.cross or not 0 <= k < len(self.boundaries):
            return None
        return k


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _wear(rng: np.random.Generator, worn: bool) -> np.ndarray:
    if not worn:
        return rng.uniform(0.75, 1.0, 64)
    w = rng.uniform(0.15, 0.8, 64)
    w[rng.random(64) < 0.2] = 0.0
    return w


def _colour(rng: np.random.Generator, base: tuple[int, int, int], spread: float) -> tuple[int, int, int]:
    shift = rng.normal(0, spread)       # mostly a brightness change, a little hue
    return tuple(int(np.clip(c + shift + rng.normal(0, spread / 4), 0, 255)) for c in base)  # type: ignore[return-value]


def sample_plan(rng: np.random.Generator, cfg: SceneConfig = SceneConfig()) -> ScenePlan:
    """Draw one scene plan from ``rng``; the same generator state always gives the same plan."""
    W, H = cfg.width, cfg.height
    fl = cfg.flags(rng)
    if fl["cross"]:
        fl.update(noline=True, curve=False, stop_line=False, arrow=False, diamond=False, crosswalk=True)
    cam = Camera(W, H, focal=W * _u(rng, 0.56, 0.68), cx=W * (0.5 + _u(rng, -0.03, 0.03)),
                 horizon=H * _u(rng, 0.40, 0.47), height_m=_u(rng, 1.3, 1.7))
    n = cfg.num_lanes or int(rng.choice([2, 3, 3, 4, 4, 5]))
    ego = int(rng.integers(0, n))
    lane_w = _u(rng, 3.2, 3.8)
    dx = _u(rng, -0.45, 0.45) if rng.random() < 0.85 else _u(rng, -0.9, 0.9)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    curv = sign * (_u(rng, 1 / 500, 1 / 150) if fl["curve"] else _u(rng, 0, 1 / 3000))
    road = Road(offset=-(lane_w / 2 + dx), heading=_u(rng, -0.015, 0.015), curvature=curv,
                curvature_rate=(_u(rng, -1, 1) * 6e-5 if fl["curve"] else 0.0),
                grade=_u(rng, -0.03, 0.03) if fl["slope"] else _u(rng, -0.006, 0.006),
                vcurve=_u(rng, -2e-4, 4e-4) if fl["slope"] else 0.0)

    # Boundaries: solid edges, dashed inner lines; on two-way roads one inner line is yellow.
    yellow_at = int(rng.integers(1, n)) if (n >= 2 and rng.random() < 0.25) else -1
    dash, gap = _u(rng, 3.0, 6.0), _u(rng, 6.0, 12.0)
    bounds = []
    for k in range(n + 1):
        if k in (0, n):
            kind, color = "solid", ("yellow" if (k == 0 and rng.random() < 0.15) else "white")
        elif k == yellow_at:
            kind, color = ("double" if rng.random() < 0.6 else "dashed"), "yellow"
        else:
            kind, color = ("dashed" if rng.random() < 0.85 else "solid"), "white"
        if fl["noline"]:
            kind = "none"
        bounds.append(Boundary(x=(k - ego) * lane_w, kind=kind, color=color,
                               wear=_wear(rng, fl["worn"] or rng.random() < 0.15),
                               dash=dash, gap=gap, phase=_u(rng, 0, dash + gap),
                               width=_u(rng, 0.12, 0.2)))
    plan = ScenePlan(cam=cam, road=road, boundaries=bounds, ego=ego, lane_width=lane_w,
                     shoulder=_u(rng, 0.3, 2.5), cross=fl["cross"])
    x_left, x_right = bounds[0].x, bounds[-1].x
    ego_l, ego_r = bounds[ego].x, bounds[ego + 1].x
    # Lanes in the ego direction: right of the yellow line if there is one.
    same_l = bounds[yellow_at].x if 0 <= yellow_at <= ego else x_left

    # Markings beyond lane lines.
    z_stop = _u(rng, 14, 45)
    if fl["cross"]:
        zc = _u(rng, 7, 18)
        plan.markings.append(Marking("crosswalk", zc, x_left - 0.5, x_right + 0.5, depth=_u(rng, 3, 5)))
        plan.cross_z = (zc - 2.0, zc + _u(rng, 20, 40))
    else:
        if fl["stop_line"] or fl["crosswalk"]:
            plan.markings.append(Marking("stop_line", z_stop, same_l, x_right, depth=_u(rng, 0.3, 0.5),
                                         wear=_u(rng, 0.5, 1)))
            plan.z_end = z_stop
            if fl["crosswalk"]:
                plan.markings.append(Marking("crosswalk", z_stop + _u(rng, 1.5, 3), x_left, x_right,
                                             depth=_u(rng, 3, 5), wear=_u(rng, 0.5, 1)))
        z_hi = min(plan.z_end - 6, 35)
        if fl["arrow"]:
            variants = ["straight", "left", "right"]
            plan.markings.append(Marking("arrow", _u(rng, 7, max(z_hi, 8)), ego_l, ego_r,
                                         variant=variants[int(rng.integers(3))], depth=_u(rng, 4.5, 6),
                                         wear=_u(rng, 0.5, 1)))
            for k in range(n):
                if k != ego and bounds[k].x >= same_l and rng.random() < 0.5:
                    plan.markings.append(Marking("arrow", _u(rng, 7, max(z_hi, 8)), bounds[k].x,
                                                 bounds[k + 1].x, variant=variants[int(rng.integers(3))],
                                                 depth=_u(rng, 4.5, 6), wear=_u(rng, 0.5, 1)))
        if fl["diamond"]:
            plan.markings.append(Marking("diamond", _u(rng, 8, max(min(plan.z_end - 8, 40), 9)), ego_l, ego_r,
                                         depth=_u(rng, 5, 7), wear=_u(rng, 0.5, 1)))

    # Vehicles: lane centres, far to near; "crowd" adds close, occluding ones.
    count = int(rng.integers(3, 7)) if fl["crowd"] else int(rng.integers(0, 3))
    palette = [(30, 30, 30), (200, 200, 205), (120, 120, 125), (40, 40, 150), (140, 80, 30),
               (230, 230, 230), (60, 90, 60), (90, 60, 40)]
    for j in range(count):
        lane = int(rng.integers(0, n))
        z = _u(rng, 6, 30) if (fl["crowd"] and j < 2) else _u(rng, 12, 90)
        truck = rng.random() < 0.2
        plan.vehicles.append(Vehicle(
            x=bounds[lane].x + lane_w / 2 + _u(rng, -0.3, 0.3), z=min(z, plan.z_end + 25),
            width=_u(rng, 2.2, 2.5) if truck else _u(rng, 1.6, 1.9),
            height=_u(rng, 2.6, 3.6) if truck else _u(rng, 1.3, 1.7),
            color=_colour(rng, palette[int(rng.integers(len(palette)))], 12),
            speed=_u(rng, -3, 3) if bounds[lane].x >= same_l else _u(rng, -40, -25)))
    plan.vehicles.sort(key=lambda v: -v.z)

    if fl["shadow"]:
        for _ in range(int(rng.integers(6, 22))):
            side = x_left - 2 if rng.random() < 0.5 else x_right + 2
            x = side + _u(rng, -6, 6) if rng.random() < 0.6 else _u(rng, x_left, x_right)
            plan.shadows.append(Blob(x, _u(rng, 3, 90), _u(rng, 1.0, 5.0), _u(rng, 2.0, 12.0),
                                     _u(rng, 0.35, 0.7)))
        if rng.random() < 0.3:    # a building's shadow over part of the road
            plan.shadows.append(Blob(_u(rng, x_left, x_right), _u(rng, 10, 40), _u(rng, 4, 10),
                                     _u(rng, 10, 30), _u(rng, 0.4, 0.65)))

    # Light: day, dusk or night; glare from the sun (day) or oncoming headlights (night).
    if fl["night"]:
        plan.night, plan.brightness, plan.headlights = True, _u(rng, 0.12, 0.3), _u(rng, 0.6, 1.2)
        plan.sky = ((40, 25, 20), (60, 45, 35))
        plan.tint = (1.0, 1.02, 1.1)
        plan.noise = _u(rng, 4, 8)
        for _ in range(int(rng.integers(0, 5))):     # street lamps
            plan.lights.append(Light(_u(rng, 0.0, 1.0), _u(rng, 0.05, 0.35), _u(rng, 0.01, 0.04),
                                     _u(rng, 120, 220), (0.6, 0.85, 1.0)))
    else:
        plan.brightness = _u(rng, 0.85, 1.15) if rng.random() < 0.8 else _u(rng, 0.5, 0.8)
        if plan.brightness < 0.8:
            plan.tint = (0.85, 0.95, 1.1)
        plan.sky = (_colour(rng, (205, 175, 140), 20), _colour(rng, (235, 225, 215), 10))
        plan.noise = _u(rng, 1.5, 4)
    if fl["dazzle"]:
        v0 = plan.cam.horizon / H
        for _ in range(int(rng.integers(1, 4))):
            if plan.night:
                plan.lights.append(Light(_u(rng, 0.15, 0.5), v0 + _u(rng, 0.0, 0.12), _u(rng, 0.05, 0.18),
                                         _u(rng, 200, 255), (0.9, 0.97, 1.0)))
            else:
                plan.lights.append(Light(_u(rng, 0.1, 0.9), v0 + _u(rng, -0.25, 0.05), _u(rng, 0.12, 0.35),
                                         _u(rng, 160, 255), (0.8, 0.95, 1.0)))
    plan.rain = _u(rng, 0.3, 1.0) if fl["rain"] else 0.0
    plan.blur = int(round(_u(rng, 5, 15) * W / 1640)) if fl["motion_blur"] else 0

    # Surfaces and distractors.
    concrete = rng.random() < 0.15
    g = _u(rng, 140, 175) if concrete else _u(rng, 65, 125)
    plan.asphalt = _colour(rng, (g, g, g + 3), 4)
    plan.white = _colour(rng, (235, 238, 238), 8)
    plan.yellow = _colour(rng, (40, 185, 225), 10)
    plan.ground = _colour(rng, [(60, 110, 80), (80, 110, 120), (110, 115, 120)][int(rng.integers(3))], 15)
    plan.texture = _u(rng, 0.6, 1.6)
    plan.tex_offset = (int(rng.integers(0, 64)), int(rng.integers(0, 64)))
    plan.noise_offset = (int(rng.integers(0, 64)), int(rng.integers(0, 64)))
    plan.seed = int(rng.integers(0, 2 ** 31))
    for _ in range(int(rng.integers(0, 7))):
        x0, z0 = _u(rng, x_left - 1, x_right + 1), _u(rng, 4, 60)
        steps = rng.normal(0, 1, (8, 2)) * (0.4, 2.0) + (0.0, 2.5 if rng.random() < 0.7 else 0.0)
        plan.cracks.append(np.cumsum(np.vstack([[x0, z0], steps]), axis=0))
    for _ in range(int(rng.integers(0, 3))):
        x0, z0 = _u(rng, x_left, x_right), _u(rng, 4, 30)
        plan.ghosts.append(np.array([[x0, z0], [x0 + _u(rng, -0.5, 0.5), z0 + _u(rng, 10, 60)]]))
    for _ in range(int(rng.integers(6, 20))):
        plan.scenery.append((_u(rng, -0.1, 1.1), _u(rng, 0.02, 0.12), _u(rng, 0.03, 0.25),
                             _colour(rng, (70, 90, 80) if rng.random() < 0.6 else (120, 120, 125), 25)))

    tags = [t for t, on in (("crowd", fl["crowd"]), ("hlight", fl["dazzle"]), ("shadow", fl["shadow"]),
                            ("noline", fl["noline"] and not fl["cross"]), ("arrow", fl["arrow"]),
                            ("curve", fl["curve"]), ("cross", fl["cross"]), ("night", fl["night"])) if on]
    plan.tags = tuple(tags) or ("normal",)
    return plan
