"""The embedded default: procedural dashcam road scenes with exact lane and marking labels.

``generate_scene(seed, i)`` returns scene ``i`` of the dataset ``seed`` as a ``Sample`` (lanes
task, CULane slot convention; the marking class mask rides along in ``meta["marking_mask"]``;
``marking_sample`` gives the marking-task view). ``SyntheticScenes`` is the map-style dataset,
``write_culane`` puts a dataset on disk in the CULane layout, ``SceneConfig`` forces features.
"""
from distill.data.synth.dataset import (LANES_SPEC, MARKING_SPEC, SyntheticScenes, generate_scene,
                                        marking_sample, plan_scene, scene_name, scene_rng, to_sample)
from distill.data.synth.render import Rendered, lane_thickness, render
from distill.data.synth.scene import (APOLLO_IDS, CULANE_CATEGORIES, MARKING_CLASSES, SceneConfig,
                                      ScenePlan, sample_plan)
from distill.data.synth.writer import split_indices, write_culane

__all__ = [
    "APOLLO_IDS", "CULANE_CATEGORIES", "LANES_SPEC", "MARKING_CLASSES", "MARKING_SPEC", "Rendered",
    "SceneConfig", "ScenePlan", "SyntheticScenes", "generate_scene", "lane_thickness", "marking_sample",
    "plan_scene", "render", "sample_plan", "scene_name", "scene_rng", "split_indices", "to_sample",
    "write_culane",
]
