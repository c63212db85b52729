"""Shared fixtures: a tiny synthetic CULane-layout dataset written once per test session."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """32 synthetic scenes at 410x148 in the CULane layout (train/val/test lists, marking masks)."""
    from distill.data.synth import SceneConfig, write_culane

    root = tmp_path_factory.mktemp("synth") / "culane"
    write_culane(root, 32, seed=3, cfg=SceneConfig(width=410, height=148), splits=(0.75, 0.125, 0.125),
                 progress=False)
    return root
