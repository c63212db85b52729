"""Every shipped recipe loads into a TrainConfig, names real models, and its KD methods build."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from distill.config import load_config
from distill.data.dataset import DATASET_KINDS
from distill.data.sample import DataSpec
from distill.methods.base import METHODS, build_method
from distill.models.base import build_model, model_names
from distill.train_config import TrainConfig

ALL_RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
QAT_RECIPES = [p for p in ALL_RECIPES if "qat" in yaml.safe_load(p.read_text())]   # `python -m distill qat`
RECIPES = [p for p in ALL_RECIPES if p not in QAT_RECIPES]                            # train / distill
_TEACHERS: dict[str, object] = {}


def _teacher_for(recipe: Path):
    name = "resnet34_deeplab" if recipe.name.startswith("synthetic") else "resnet101_deeplab"
    if name not in _TEACHERS:
        kwargs = {"width": 0.5} if name == "resnet34_deeplab" else {}
        _TEACHERS[name] = build_model(name, num_classes=5, lane_slots=4, **kwargs)
    return _TEACHERS[name]


def test_there_are_recipes_for_every_stage_of_the_embedded_default():
    names = {p.stem for p in RECIPES}
    assert {"synthetic_teacher", "synthetic_enet", "synthetic_erfnet", "synthetic_distill_enet"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_loads_and_its_methods_build(recipe):
    cfg = load_config(TrainConfig, recipe)
    assert cfg.model.name in model_names()
    assert cfg.data.kind in DATASET_KINDS
    h, w = cfg.data.input_size
    assert h % 8 == 0 and w % 8 == 0, "students need sizes divisible by 8"
    if not cfg.methods:
        return
    student = build_model(cfg.model.name, num_classes=5, lane_slots=4, **cfg.model.kwargs)
    spec = DataSpec.lanes(4)
    for entry in cfg.methods:
        kwargs = {k: v for k, v in entry.items() if k != "name"}
        if entry["name"] == "lgad":     # needs a trained label teacher: check the arguments only
            inspect.signature(METHODS.get("lgad")).bind(student.feature_info, None, spec, **kwargs)
            continue
        build_method(entry["name"], student.feature_info, _teacher_for(recipe).feature_info, spec, **kwargs)


@pytest.mark.parametrize("recipe", QAT_RECIPES, ids=lambda p: p.stem)
def test_qat_recipe_loads_and_names_a_target(recipe):
    from distill.qat import QAT_TARGETS, load_qat_config

    cfg = load_qat_config(recipe)
    assert cfg.qat.target in QAT_TARGETS and cfg.qat.student.endswith(".pt")
    assert cfg.data.kind in DATASET_KINDS and cfg.steps > 0


def test_recipes_are_plain_yaml():
    assert QAT_RECIPES and RECIPES
    for recipe in ALL_RECIPES:
        assert isinstance(yaml.safe_load(recipe.read_text()), dict)
