"""The synthetic generator: determinism, exact labels, forced features, the CULane-layout writer, CLI."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from distill.data.synth import (APOLLO_IDS, CULANE_CATEGORIES, MARKING_CLASSES, SceneConfig, SyntheticScenes,
                                generate_scene, lane_thickness, marking_sample, plan_scene, render, write_culane)
from distill.data.synth.scene import MARK
from runtime.lane_io import read_culane_lines

SMALL = dict(width=410, height=148)
cv2.setNumThreads(1)


def _check_labels(s, width: int) -> None:
    """Every polyline point lies on its slot's mask pixels; exist matches lanes; slots ordered."""
    h, w = s.mask.shape
    assert set(s.lanes) == {i + 1 for i in np.nonzero(s.exist)[0]}
    for slot, pts in s.lanes.items():
        assert pts.dtype == np.float32 and pts.ndim == 2 and pts.shape[1] == 2 and len(pts) >= 2
        assert np.all(np.diff(pts[:, 1]) < 0), "rows must go bottom to top"
        xi, yi = np.round(pts[:, 0]).astype(int), np.round(pts[:, 1]).astype(int)
        assert np.all((xi >= 0) & (xi < w) & (yi >= 0) & (yi < h))
        assert np.all(s.mask[yi, xi] == slot), f"slot {slot} points off its mask"
    assert set(np.unique(s.mask)) <= {0} | set(s.lanes)
    # left-to-right order along the lowest row that several lanes share
    common = set.intersection(*[set(np.round(p[:, 1]).astype(int)) for p in s.lanes.values()]) if s.lanes else set()
    if len(s.lanes) >= 2 and common:
        row = max(common)
        xs = [s.lanes[k][np.round(s.lanes[k][:, 1]).astype(int) == row, 0][0] for k in sorted(s.lanes)]
        assert xs == sorted(xs)


def test_deterministic_per_seed_and_index():
    cfg = SceneConfig(**SMALL)
    a, b = generate_scene(5, 3, cfg), generate_scene(5, 3, cfg)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert np.array_equal(a.meta["marking_mask"], b.meta["marking_mask"])
    assert a.lanes.keys() == b.lanes.keys() and all(np.array_equal(a.lanes[k], b.lanes[k]) for k in a.lanes)
    c, d = generate_scene(6, 3, cfg), generate_scene(5, 4, cfg)
    assert not np.array_equal(a.image, c.image) and not np.array_equal(a.image, d.image)
    # scene i regenerates alone, independent of the dataset around it
    ds = SyntheticScenes(5, seed=5, cfg=cfg)
    assert np.array_equal(ds[3].image, a.image) and len(ds) == 5
    assert np.array_equal(ds.sample(3).image, a.image)
    with pytest.raises(IndexError):
        ds[5]


@pytest.mark.parametrize("index", range(8))
def test_labels_consistent_small(index):
    s = generate_scene(11, index, SceneConfig(**SMALL))
    assert s.image.shape == (148, 410, 3) and s.image.dtype == np.uint8
    assert s.mask.shape == (148, 410) and s.exist.shape == (4,)
    assert s.meta["geometry"].in_w == 410 and s.meta["tags"]
    _check_labels(s, 410)


def test_labels_full_size_and_lane_width():
    s = generate_scene(1, 0, SceneConfig(cross=False, noline=False, curve=True, num_lanes=4))
    assert s.image.shape == (590, 1640, 3)
    _check_labels(s, 1640)
    assert lane_thickness(1640) == 16
    # the label band across a lane near the bottom is 16 px wide, like CULane's laneseg_label_w16
    pts = s.lanes[2]
    slope = (pts[3, 0] - pts[1, 0]) / (pts[3, 1] - pts[1, 1])
    y = int(round(pts[2, 1]))
    assert abs(int((s.mask[y] == 2).sum()) - 16 * np.hypot(1, slope)) <= 4


def test_marking_task_sample():
    s = generate_scene(2, 1, SceneConfig(**SMALL, stop_line=True, crosswalk=True, arrow=True, diamond=True))
    m = marking_sample(s)
    assert m.mask is s.meta["marking_mask"] and m.lanes == {} and m.meta["lane_mask"] is s.mask
    assert m.mask.max() < len(MARKING_CLASSES)
    d = SyntheticScenes(2, seed=2, cfg=SceneConfig(**SMALL), task="marking")
    assert d.spec.task == "marking" and d.spec.num_classes == len(MARKING_CLASSES)
    assert d[0].mask.dtype == np.uint8 and d[0].lanes == {}
    assert set(APOLLO_IDS) == set(MARKING_CLASSES) and len(set(APOLLO_IDS.values())) == len(APOLLO_IDS)


@pytest.mark.parametrize("feature,cls", [
    ("stop_line", "stop_line"), ("crosswalk", "crosswalk"), ("arrow", "arrow"), ("diamond", "diamond")])
def test_each_marking_can_be_forced(feature, cls):
    cfg = SceneConfig(**SMALL, cross=False, crowd=False, **{feature: True})
    found = any((generate_scene(20, i, cfg).meta["marking_mask"] == MARK[cls]).any() for i in range(3))
    assert found, f"no {cls} pixels with {feature}=True"


def test_line_marking_classes_appear():
    seen = set()
    for i in range(12):
        s = generate_scene(30, i, SceneConfig(**SMALL, noline=False, cross=False, worn=False, crowd=False))
        seen |= set(np.unique(s.meta["marking_mask"]).tolist())
    assert {MARK["white_solid"], MARK["white_dashed"]} <= seen
    assert {MARK["yellow_solid"], MARK["yellow_dashed_double"]} & seen


def _mean(cfg_kwargs: dict, seed: int = 3, index: int = 0) -> float:
    return float(generate_scene(seed, index, SceneConfig(**SMALL, **cfg_kwargs)).image.mean())


@pytest.mark.parametrize("feature", ["night", "dazzle", "shadow", "rain", "motion_blur", "crowd", "worn", "slope",
                                     "curve"])
def test_each_nuisance_changes_the_image(feature):
    """Forcing a feature on vs off (same seed) changes the image, and the tags say so."""
    on = generate_scene(4, 1, SceneConfig(**SMALL, cross=False, **{feature: True}))
    off = generate_scene(4, 1, SceneConfig(**SMALL, cross=False, **{feature: False}))
    assert np.abs(on.image.astype(int) - off.image.astype(int)).mean() > 0.5
    tag = {"dazzle": "hlight"}.get(feature, feature)
    if tag in CULANE_CATEGORIES:
        assert tag in on.meta["tags"] and tag not in off.meta["tags"]
    _check_labels(on, 410)


def test_night_is_dark_and_dazzle_bright():
    base = dict(cross=False, dazzle=False, night=False)
    assert _mean({**base, "night": True}) < 0.6 * _mean(base)
    assert _mean({**base, "dazzle": True}) > _mean(base)


def test_noline_keeps_labels_and_cross_has_none():
    s = generate_scene(8, 0, SceneConfig(**SMALL, noline=True, cross=False))
    assert s.exist.sum() >= 2 and "noline" in s.meta["tags"]
    assert not np.isin(s.meta["marking_mask"], [MARK["white_solid"], MARK["white_dashed"]]).any()
    c = generate_scene(8, 0, SceneConfig(**SMALL, cross=True))
    assert c.exist.sum() == 0 and c.lanes == {} and not c.mask.any() and "cross" in c.meta["tags"]
    assert (c.meta["marking_mask"] == MARK["crosswalk"]).any()


def test_occluded_lanes_stay_labelled():
    """A close vehicle hides paint but not the lane label (CULane), and hides the marking (Apollo)."""
    plan = plan_scene(9, 0, SceneConfig(**SMALL, crowd=True, cross=False, noline=False))
    r = render(plan)
    bare = render(type(plan)(**{**plan.__dict__, "vehicles": []}))
    assert np.array_equal(r.slot_mask, bare.slot_mask)
    assert (bare.marking_mask > 0).sum() > (r.marking_mask > 0).sum()


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="num_lanes"):
        SceneConfig(num_lanes=7)
    with pytest.raises(ValueError, match="too small"):
        SceneConfig(width=10, height=10)
    with pytest.raises(ValueError, match="task"):
        SyntheticScenes(3, task="depth")


def _read_list(path):
    return [line.split() for line in path.read_text().splitlines()]


def test_writer_culane_layout(tmp_path):
    out = tmp_path / "synth"
    cfg = SceneConfig(**SMALL)
    num = 20
    write_culane(out, num, seed=7, cfg=cfg, splits=(0.6, 0.2, 0.2), progress=False)
    train, val = _read_list(out / "list/train_gt.txt"), _read_list(out / "list/val_gt.txt")
    test = _read_list(out / "list/test.txt")
    assert (len(train), len(val), len(test)) == (12, 4, 4)
    names = [r[0] for r in train + val] + [r[0] for r in test]
    assert len(set(names)) == num and all(n.startswith("/driver_") and n.endswith(".jpg") for n in names)
    assert [r[0] for r in _read_list(out / "list/train.txt")] == [r[0] for r in train]
    for img, label, *ex in train + val:
        assert len(ex) == 4 and set(ex) <= {"0", "1"} and label == f"/laneseg_label_w16{img[:-4]}.png"
        image = cv2.imread(str(out / img[1:]))
        mask = cv2.imread(str(out / label[1:]), cv2.IMREAD_UNCHANGED)
        assert image.shape == (148, 410, 3) and mask.shape == (148, 410) and mask.dtype == np.uint8
        lanes = read_culane_lines(out / (img[1:-4] + ".lines.txt"))
        assert len(lanes) == sum(int(e) for e in ex)
        slots = [i + 1 for i, e in enumerate(ex) if e == "1"]
        for slot, lane in zip(slots, lanes):       # lanes are in slot order
            xi, yi = np.round(lane[:, 0]).astype(int), np.round(lane[:, 1]).astype(int)
            assert np.all(mask[yi, xi] == slot)
        bin_ = cv2.imread(str(out / "marking" / (img[1:-4] + "_bin.png")), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(bin_).tolist()) <= set(APOLLO_IDS.values())
    # regenerating scene i alone reproduces the written labels
    idx = int(names[0].split("/")[-1][:-4]) // 30
    ref = generate_scene(7, idx, cfg)
    disk = cv2.imread(str(out / "laneseg_label_w16" / (names[0][1:-4] + ".png")), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(disk, ref.mask)
    classes = (out / "marking/classes.txt").read_text().split("\n")
    assert classes[1] == f"1 {MARKING_CLASSES[1]} {APOLLO_IDS[MARKING_CLASSES[1]]}"
    split_dir = out / "list/test_split"
    files = sorted(p.name for p in split_dir.iterdir())
    assert files == sorted(f"test{i}_{c}.txt" for i, c in enumerate(CULANE_CATEGORIES))
    listed = set()
    for f in files:
        for (name,) in _read_list(split_dir / f):
            assert "/" + name in {r[0] for r in test}
            listed.add(name)
    assert listed == {r[0][1:] for r in test}        # every test image is in at least one category
    with pytest.raises(FileExistsError, match="not empty"):
        write_culane(out, 2, seed=7, cfg=cfg, progress=False)
    write_culane(out, 2, seed=7, cfg=cfg, overwrite=True, progress=False)


def test_writer_cross_split_has_no_lanes(tmp_path):
    out = tmp_path / "x"
    write_culane(out, 4, seed=1, cfg=SceneConfig(**SMALL, cross=True), splits=(0.0, 0.0, 1.0), progress=False)
    cross = _read_list(out / "list/test_split/test7_cross.txt")
    assert len(cross) == 4
    for (name,) in cross:
        assert read_culane_lines(out / (name[:-4] + ".lines.txt")) == []
    assert not _read_list(out / "list/test_split/test0_normal.txt")


def test_cli_synth(tmp_path):
    from runtime.cli import main
    out = tmp_path / "cli"
    rc = main("python -m distill", "", ["distill.data.cli"],
              ["data", "synth", "--out", str(out), "--num", "3", "--size", "410x148", "--seed", "2"])
    assert rc == 0 and len((out / "list/train_gt.txt").read_text().splitlines()) == 2
    with pytest.raises(SystemExit):
        main("python -m distill", "", ["distill.data.cli"], ["data", "synth", "--out", str(out), "--size", "big"])
