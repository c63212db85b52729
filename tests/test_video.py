"""The dashcam video maker: frame count, readable frames, temporal coherence, lane sidecar, CLI."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from demo.video import make_video, sidecar_path
from distill.data.synth import SceneConfig, generate_scene
from tests.helpers import read_video

cv2.setNumThreads(1)
SIZE = (320, 116)


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    out = tmp_path_factory.mktemp("video") / "drive.mp4"
    return make_video(out, seconds=2.0, fps=10, size=SIZE, seed=3, progress=False)


def test_video_frames(drive):
    frames = read_video(drive)
    assert len(frames) == 20
    assert all(f.shape == (SIZE[1], SIZE[0], 3) for f in frames)
    assert all(f.std() > 5 for f in frames)          # real content, not blank frames


def test_video_temporally_coherent(drive):
    frames = [f.astype(np.int16) for f in read_video(drive)]
    consecutive = np.mean([np.abs(a - b).mean() for a, b in zip(frames, frames[1:])])
    cfg = SceneConfig(width=SIZE[0], height=SIZE[1])
    scenes = [generate_scene(0, i, cfg).image.astype(np.int16) for i in range(4)]
    random_pairs = np.mean([np.abs(a - b).mean() for a, b in zip(scenes, scenes[1:])])
    assert consecutive < 0.5 * random_pairs, (consecutive, random_pairs)


def test_video_sidecar(drive):
    rows = [json.loads(line) for line in sidecar_path(drive).read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(20))
    for r in rows:
        assert sum(r["exist"]) == len(r["lanes"]) >= 2
        for pts in r["lanes"].values():
            pts = np.asarray(pts)
            assert pts.shape[1] == 2 and np.all(np.diff(pts[:, 1]) < 0)
    # ego boundaries move little from one frame to the next
    a, b = rows[5]["lanes"]["2"], rows[6]["lanes"]["2"]
    assert abs(a[0][0] - b[0][0]) < 0.1 * SIZE[0]


def test_video_lane_change_reassigns_slots(tmp_path):
    out = make_video(tmp_path / "lc.mp4", seconds=4.0, fps=4, size=SIZE, seed=1, progress=False)
    rows = [json.loads(line) for line in sidecar_path(out).read_text().splitlines()]
    x2 = [r["lanes"]["2"][0][0] for r in rows if "2" in r["lanes"]]
    assert max(np.diff(x2)) > 0.15 * SIZE[0] or min(np.diff(x2)) < -0.15 * SIZE[0], "no slot jump during the change"


def test_video_errors_and_cli(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        make_video(tmp_path / "x.mp4", seconds=0.0, fps=30, size=SIZE)
    with pytest.raises(RuntimeError, match="could not open"):
        make_video(tmp_path / "x.unknown-container", seconds=0.2, fps=10, size=SIZE)
    from runtime.cli import main
    out = tmp_path / "cli.mp4"
    rc = main("python -m demo", "", ["demo.video"],
              ["video", "--out", str(out), "--seconds", "0.5", "--fps", "6", "--size", "160x64", "--seed", "1"])
    assert rc == 0 and len(read_video(out)) == 3
