"""Synthetic scenes as ``Sample`` records: scene ``i`` of seed ``s`` is regenerated alone from (s, i)."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from distill.data.sample import DataSpec, Sample
from distill.data.synth.render import Rendered, render
from distill.data.synth.scene import LANE_SLOTS, MARKING_CLASSES, SceneConfig, ScenePlan, sample_plan
from runtime.geometry import Geometry

TASKS = ("lanes", "marking")
FRAMES_PER_VIDEO = 60
MARKING_SPEC = DataSpec("marking", MARKING_CLASSES)
LANES_SPEC = DataSpec.lanes(LANE_SLOTS)


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of scene ``index`` in the dataset of ``seed`` (independent of the others)."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed} index={index}")
    return np.random.default_rng([seed, index])


def scene_name(seed: int, index: int) -> str:
    """CULane-style relative image path: ``driver_161_90frame/<video>.MP4/<frame>.jpg``.

    Sixty scenes make one "video" (frames 00000, 00030, ... like CULane's sampling), a hundred
    videos one driver folder.
    """
    video, frame = divmod(index, FRAMES_PER_VIDEO)
    return f"driver_{161 + video // 100}_90frame/{seed % 10 ** 8:08d}_{video:04d}.MP4/{frame * 30:05d}.jpg"


def plan_scene(seed: int, index: int, cfg: SceneConfig = SceneConfig()) -> ScenePlan:
    return sample_plan(scene_rng(seed, index), cfg)


def to_sample(r: Rendered, name: str, tags: tuple[str, ...], task: str = "lanes") -> Sample:
    """Wrap a rendered scene as a lanes-task or marking-task ``Sample``."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    h, w = r.image.shape[:2]
    meta = {"name": name, "geometry": Geometry(h, w, h, w, 0), "tags": tags}
    if task == "lanes":
        meta["marking_mask"] = r.marking_mask
        return Sample(r.image, r.slot_mask, dict(r.lanes), r.exist.copy(), meta)
    meta["lane_mask"] = r.slot_mask
    return Sample(r.image, r.marking_mask, {}, np.zeros(0, np.float32), meta)


def marking_sample(sample: Sample) -> Sample:
    """The marking-task view of a lanes-task synthetic sample (mask = marking classes)."""
    if "marking_mask" not in sample.meta:
        raise ValueError(f"{sample.meta.get('name', 'sample')}: no marking_mask (not a synthetic lanes sample)")
    meta = {k: v for k, v in sample.meta.items() if k != "marking_mask"}
    meta["lane_mask"] = sample.mask
    return Sample(sample.image, sample.meta["marking_mask"], {}, np.zeros(0, np.float32), meta)


def generate_scene(seed: int, index: int, cfg: SceneConfig = SceneConfig(), task: str = "lanes") -> Sample:
    """Scene ``index`` of the synthetic dataset ``seed`` as a ``Sample`` (deterministic)."""
    plan = plan_scene(seed, index, cfg)
    return to_sample(render(plan), scene_name(seed, index), plan.tags, task)


class SyntheticScenes:
    """``num`` synthetic scenes generated on access (a map-style dataset of ``Sample``)."""

    def __init__(self, num: int = 1000, seed: int = 0, cfg: SceneConfig = SceneConfig(), task: str = "lanes",
                 offset: int = 0) -> None:
        if num <= 0:
            raise ValueError(f"num must be positive, got {num}")
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
        self.num, self.seed, self.cfg, self.task, self.offset = num, seed, cfg, task, offset

    @property
    def spec(self) -> DataSpec:
        return LANES_SPEC if self.task == "lanes" else MARKING_SPEC

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, i: int) -> Sample:
        if not -self.num <= i < self.num:
            raise IndexError(f"scene {i} out of range for {self.num} scenes")
        return generate_scene(self.seed, self.offset + (i % self.num), self.cfg, self.task)

    def sample(self, i: int) -> Sample:
        """Scene ``i`` of this seed for any ``i >= 0`` (not bounded by ``len``)."""
        return generate_scene(self.seed, self.offset + i, self.cfg, self.task)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(self.num):
            yield self[i]
