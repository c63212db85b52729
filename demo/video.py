"""``python -m demo video``: a synthetic dashcam drive rendered with the scene renderer.

The drive is temporally coherent: the car moves forward (dashes and shadows come toward the
camera), the road curvature varies smoothly, the car changes lane once (slots are re-assigned
when it crosses the line, as CULane labels them), the light goes from day to dusk with the
headlights coming on, and other vehicles move with their own speeds. Frames are written with
OpenCV's ``mp4v`` codec (H.264 is not in the headless wheel); the ground-truth lanes of every
frame go to a ``<out>.lanes.jsonl`` sidecar. Both are written under temporary names and renamed
into place once the video reads back complete (``runtime.partial``): Ctrl-C or an error keeps the
previous video and removes the temporaries; those of a killed run go at the next run.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from distill.data.synth.camera import Road
from distill.data.synth.render import render
from distill.data.synth.scene import Blob, SceneConfig, ScenePlan, Vehicle, sample_plan
from runtime.cli import non_negative_int, positive_float
from runtime.partial import staged

SPEED = 22.0                 # m/s of the ego car
VEHICLE_Z = (8.0, 80.0)     # other vehicles wrap around within this distance band


def sidecar_path(out: str | Path) -> Path:
    """``drive.mp4`` -> ``drive.lanes.jsonl``."""
    out = Path(out)
    return out.with_name(out.stem + ".lanes.jsonl")


class Drive:
    """The state of a synthetic drive; ``plan_at(t)`` gives the scene plan of time ``t`` (s)."""

    def __init__(self, size: tuple[int, int], seed: int, seconds: float) -> None:
        rng = np.random.default_rng([seed, 7])
        w, h = size
        cfg = SceneConfig(width=w, height=h, num_lanes=4, cross=False, noline=False, night=False, rain=False,
                          motion_blur=False, stop_line=False, crosswalk=False, arrow=False, diamond=False,
                          dazzle=False, curve=False, crowd=False, shadow=True, worn=False, slope=False)
        self.base = sample_plan(rng, cfg)
        self.ego0 = int(rng.integers(0, 3))           # a lane to the right exists for the change
        self.seconds = max(seconds, 1e-3)
        self.change_t = 0.45 * self.seconds
        self.change_len = min(3.0, 0.3 * self.seconds)
        self.curv_amp = rng.uniform(1 / 900, 1 / 350, 2) * rng.choice([-1, 1], 2)
        self.curv_len = rng.uniform(300, 700, 2)
        self.curv_phase = rng.uniform(0, 2 * np.pi, 2)
        n = len(self.base.boundaries) - 1
        self.cars = []                                 # (lane index, z at t=0, speed rel. to ego, Vehicle)
        for k in range(4):
            lane = int(rng.integers(0, n))
            if lane in (self.ego0, self.ego0 + 1):
                z0 = rng.uniform(25, 70)
            else:
                z0 = rng.uniform(*VEHICLE_Z)
            proto = Vehicle(0.0, 0.0, rng.uniform(1.6, 1.9), rng.uniform(1.3, 1.7),
                            tuple(int(c) for c in rng.integers(30, 230, 3)))
            self.cars.append((lane, z0, rng.uniform(-2.5, 2.5), proto))
        self.shadow_z = [(b, b.z) for b in self.base.shadows]
        self.noise_rng = rng

    def _curvature(self, s: float) -> tuple[float, float]:
        k = 2 * np.pi / self.curv_len
        c = float(np.sum(self.curv_amp * np.sin(k * s + self.curv_phase)))
        dc = float(np.sum(self.curv_amp * k * np.cos(k * s + self.curv_phase)))
        return c, dc

    def _lateral(self, t: float) -> tuple[float, float]:
        """Ego lateral position (lane widths to the right of the start lane) and its rate (1/s)."""
        u = np.clip((t - self.change_t) / self.change_len, 0.0, 1.0)
        pos = 0.5 - 0.5 * math.cos(math.pi * u)
        rate = 0.5 * math.pi * math.sin(math.pi * u) / self.change_len if 0 < u < 1 else 0.0
        return pos, rate

    def plan_at(self, t: float) -> ScenePlan:
        p = copy.copy(self.base)
        lw = p.lane_width
        s = SPEED * t
        pos, rate = self._lateral(t)
        lateral = pos * lw
        ego = self.ego0 + int(math.floor(lateral / lw + 0.5))
        residual = lateral - (ego - self.ego0) * lw
        c, dc = self._curvature(s)
        p.road = Road(offset=-(lw / 2 + residual), heading=-rate * lw / SPEED, curvature=c, curvature_rate=0.5 * dc,
                      grade=self.base.road.grade, vcurve=0.0)
        p.ego = ego
        p.boundaries = [copy.copy(b) for b in self.base.boundaries]
        for k, b in enumerate(p.boundaries):
            b.x = (k - ego) * lw
        p.travel = s
        vehicles = []
        for lane, z0, rel, proto in self.cars:
            z = VEHICLE_Z[0] + (z0 + rel * t - VEHICLE_Z[0]) % (VEHICLE_Z[1] - VEHICLE_Z[0])
            vehicles.append(Vehicle((lane - ego) * lw + lw / 2, z, proto.width, proto.height, proto.color))
        p.vehicles = sorted(vehicles, key=lambda v: -v.z)
        p.shadows = [Blob(b.x - (ego - self.base.ego) * lw, 3 + (z - s - 3) % 90, b.rx, b.rz, b.strength)
                     for b, z in self.shadow_z]
        # Day to dusk: darker, warmer, headlights on for the last third.
        f = t / self.seconds
        p.brightness = float(np.interp(f, [0, 1], [1.0, 0.4]))
        p.tint = (float(np.interp(f, [0, 1], [1.0, 0.8])), float(np.interp(f, [0, 1], [1.0, 0.92])), 1.0 + 0.1 * f)
        p.night = f > 0.66
        p.headlights = float(np.clip((f - 0.66) * 3, 0, 1)) * 0.5
        p.noise_offset = (int(self.noise_rng.integers(0, 64)), int(self.noise_rng.integers(0, 64)))
        return p


def make_video(out: str | Path, seconds: float, fps: float, size: tuple[int, int] = (1640, 590), seed: int = 0,
               progress: bool = True) -> Path:
    """Render a drive of ``seconds`` at ``fps`` to ``out`` (mp4v) plus a lanes JSONL sidecar."""
    out = Path(out)
    w, h = size
    frames = int(round(seconds * fps))
    if frames < 1:
        raise ValueError(f"{seconds} s at {fps} fps gives no frames")
    if w < 64 or h < 32:
        raise ValueError(f"video size {w}x{h} is too small (at least 64x32)")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.is_dir():
        raise IsADirectoryError(21, "is a folder, expected a video file path (e.g. drive.mp4)", str(out))
    with staged(out) as tmp:
        _render(tmp, seconds, fps, (w, h), seed, frames, progress)
        os.replace(sidecar_path(tmp), sidecar_path(out))
        os.replace(tmp, out)
    return out


def _render(out: Path, seconds: float, fps: float, size: tuple[int, int], seed: int, frames: int,
            progress: bool) -> None:
    """Write the video and its lanes sidecar to ``out``, then check the video reads back whole."""
    w, h = size
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter could not open {out} (fourcc mp4v, {w}x{h} @ {fps} fps); "
                           "check the folder is writable and the suffix is .mp4")
    drive = Drive(size, seed, seconds)
    side = sidecar_path(out)
    try:
        with open(side, "w") as fh, tqdm(total=frames, desc="video", unit="frame", disable=not progress) as bar:
            for i in range(frames):
                bar.update()
                r = render(drive.plan_at(i / fps))
                writer.write(r.image)
                fh.write(json.dumps({
                    "frame": i, "t": round(i / fps, 4), "exist": [int(e) for e in r.exist],
                    "lanes": {str(s): np.round(pts, 1).tolist() for s, pts in r.lanes.items()}}) + "\n")
    finally:
        writer.release()
    cap = cv2.VideoCapture(str(out))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else -1
    finally:
        cap.release()
    if n != frames:
        raise RuntimeError(f"{out}: wrote {frames} frames but cv2.VideoCapture reads {n}")


def _run(args: argparse.Namespace) -> int:
    w, h = args.size
    print(f"video: out={args.out} seconds={args.seconds} fps={args.fps} size={w}x{h} seed={args.seed}")
    out = make_video(args.out, args.seconds, args.fps, (w, h), args.seed)
    print(f"wrote {out} and {sidecar_path(out)}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from distill.data.cli import parse_size
    p = subparsers.add_parser("video", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                              help="render a synthetic dashcam drive to an .mp4")
    p.add_argument("--out", type=Path, default=Path("drive.mp4"), help="output video (.mp4, mp4v codec)")
    p.add_argument("--seconds", type=positive_float, default=10.0, help="length of the drive")
    p.add_argument("--fps", type=positive_float, default=30.0, help="frames per second")
    p.add_argument("--size", type=parse_size, default="1640x590", help="frame size WIDTHxHEIGHT")
    p.add_argument("--seed", type=non_negative_int, default=0, help="drive seed")
    p.set_defaults(func=_run)
