"""Lane decoding (published prob2lines step), the fused-peaks path, class maps and lane writers."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from runtime.geometry import Geometry
from runtime.lane_writers import TuSimpleWriter, VideoLaneWriter, lane_x_at, read_video_lanes, tusimple_line
from runtime.postprocess import (LaneDecodeConfig, class_map, decode_lanes, decode_lanes_from_peaks,
                                 lanes_to_mask, sample_rows)

STD = Geometry(590, 1640, 288, 800)


def test_standard_rows_reproduce_getlane():
    ys, rows = sample_rows(STD)
    # MATLAB: uint16(288 - (i-1)*20/590*288), 1-based, rounds half away from zero
    matlab = [int(math.floor(288 - k * 20 / 590 * 288 + 0.5)) for k in range(18)]
    assert (rows + 1).tolist() == matlab
    assert ys.tolist() == [590 - 20 * k - 1 for k in range(18)]


def test_rows_with_crop_and_explicit_rows():
    g = Geometry(590, 1640, 144, 400, crop_top=240)
    ys, rows = sample_rows(g, LaneDecodeConfig(num_rows=None))
    assert ys.min() >= 240 and np.all(np.diff(rows) <= 0) and rows.min() >= 0 and rows.max() == 143
    ys, rows = sample_rows(g, LaneDecodeConfig(rows=[589.0, 400.0, 100.0]))
    assert ys.tolist() == [589.0, 400.0]        # 100 is in the cropped area


def _hand_map():
    probs = np.zeros((5, 288, 800), np.float32)
    probs[0] = 1.0
    _, rows = sample_rows(STD)
    cols = {1: 100, 2: 350, 3: 450, 4: 700}
    for s, c in cols.items():
        for k, r in enumerate(rows):
            probs[s, r, c + k] = 0.9 if k < 10 else 0.3      # 0.3 is not > 0.3: dropped
    return probs, cols


def test_decode_reproduces_published_formula():
    probs, cols = _hand_map()
    lanes = decode_lanes(probs, np.array([0.9, 0.9, 0.2, 0.51]), STD)
    assert sorted(lanes) == [1, 2, 4]                      # slot 3: existence 0.2
    for s in (1, 2, 4):
        k = np.arange(10)
        c1 = cols[s] + k + 1                                # 1-based column
        assert lanes[s][:, 0].tolist() == (np.floor(c1 * 1640 / 800 + 0.5) - 1).tolist()   # uint16(.) - 1
        assert lanes[s][:, 1].tolist() == (590 - 20 * k - 1).tolist()
    assert lanes[1][1, 0] == math.floor((100 + 1 + 1) * 1640 / 800 + 0.5) - 1 == 208   # 208.1 -> 208
    lanes = decode_lanes(probs, None, STD, LaneDecodeConfig(round_x=False))
    assert sorted(lanes) == [1, 2, 3, 4]
    assert np.allclose(lanes[1][:, 0], (cols[1] + np.arange(10) + 1) * 1640 / 800 - 1)


def test_min_points_and_shape_errors():
    probs = np.zeros((3, 288, 800), np.float32)
    _, rows = sample_rows(STD)
    probs[1, rows[0], 10] = 0.9
    assert decode_lanes(probs, None, STD) == {}
    with pytest.raises(ValueError, match="288x800"):
        decode_lanes(probs[:, :100], None, STD)
    with pytest.raises(ValueError, match="3 values for 2"):
        decode_lanes(probs, np.ones(3), STD)


def _peaks(probs, g, cfg):
    _, rows = sample_rows(g, cfg)
    band = probs[1:, rows, :]
    cols = band.argmax(2)
    return np.take_along_axis(band, cols[..., None], 2)[..., 0], cols


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 31), crop=st.integers(0, 50), step=st.integers(3, 15),
       thresh=st.sampled_from([0.0, 0.3, 0.5]), use_exist=st.booleans())
def test_peaks_path_equals_full_map(seed, crop, step, thresh, use_exist):
    rng = np.random.default_rng(seed)
    g = Geometry(120, 200, 36, 50, crop_top=crop)
    logits = rng.normal(0, 2, (4, 36, 50)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(0)
    cfg = LaneDecodeConfig(prob_thresh=thresh, row_step=step, num_rows=None)
    exist = rng.random(3) if use_exist else None
    full = decode_lanes(probs, exist, g, cfg)
    vals, cols = _peaks(probs, g, cfg)
    fused = decode_lanes_from_peaks(vals, cols, exist, g, cfg)
    assert full.keys() == fused.keys()
    for k in full:
        assert np.array_equal(full[k], fused[k])


def test_refine_subpixel_and_refusal():
    probs = np.zeros((2, 288, 800), np.float32)
    probs[0] = 0.5
    xs = np.arange(800)
    _, rows = sample_rows(STD)
    centre = 300.3
    for r in rows:
        probs[1, r] = np.exp(-0.5 * ((xs - centre) / 2.0) ** 2)
    std = decode_lanes(probs, None, STD)[1][:, 0]
    ref = decode_lanes(probs, None, STD, LaneDecodeConfig(refine=True))[1][:, 0]
    truth = (centre + 1) * 1640 / 800 - 1
    assert np.abs(ref - truth).max() < 0.6 * np.abs(std - truth).max()
    with pytest.raises(ValueError, match="refine"):
        decode_lanes_from_peaks(np.ones((1, 18)), np.ones((1, 18), int), None, STD,
                                LaneDecodeConfig(refine=True))


def test_class_map_crop_and_resize():
    g = Geometry(12, 16, 4, 8, crop_top=4)
    scores = np.zeros((3, 4, 8), np.float32)
    scores[2, :, 4:] = 1.0
    scores[1, :, :4] = 0.5
    cm = class_map(scores, g)
    assert cm.shape == (12, 16) and cm.dtype == np.uint8
    assert (cm[:4] == 0).all() and (cm[4:, :8] == 1).all() and (cm[4:, 8:] == 2).all()


def test_lanes_to_mask():
    m = lanes_to_mask({1: [[10, 50], [10, 10]], 3: [[40, 50], [40, 10]]}, (60, 60), width=4)
    assert m[30, 10] == 1 and m[30, 40] == 3 and m[30, 25] == 0


def test_tusimple_writer(tmp_path):
    lane = np.array([[100.0, 700.0], [200.0, 500.0]])
    xs = lane_x_at(lane, [480, 500, 600, 700, 710])
    assert xs == [-2, 200.0, 150.0, 100.0, -2]
    rec = json.loads(tusimple_line("clips/0/20.jpg", {2: lane, 1: np.array([[5.0, 100.0], [6.0, 110.0]])},
                                   [500, 600], 12.5))
    assert rec["lanes"] == [[200.0, 150.0]] and rec["run_time"] == 12.5 and rec["h_samples"] == [500, 600]
    with TuSimpleWriter(tmp_path / "p.json") as w:
        w.write("a.jpg", [lane], [600], 1.0)
    assert json.loads((tmp_path / "p.json").read_text())["lanes"] == [[150.0]]


def test_video_writer_roundtrip(tmp_path):
    path = tmp_path / "lanes.jsonl"
    with VideoLaneWriter(path) as w:
        w.write(0, 0.0, {1: np.array([[1.0, 2.0], [3.0, 4.0]])}, np.array([0.9, 0.1]))
        w.write(1, 0.033, {}, None)
    recs = read_video_lanes(path)
    assert recs[0]["frame"] == 0 and np.array_equal(recs[0]["lanes"][1], [[1, 2], [3, 4]])
    assert recs[0]["exist"] == [0.9, 0.1] and recs[1]["exist"] is None


def test_runtime_modules_do_not_import_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import runtime.postprocess, runtime.lane_writers\n")
    subprocess.run([sys.executable, "-c", code], check=True)
