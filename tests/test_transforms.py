"""Transforms keep labels, lanes and geometry consistent; the torch Dataset works with workers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from distill.data.culane import CULane
from distill.data.reader import rasterise_lanes
from distill.data.dataset import SegDataset, build_dataset, collate
from distill.data.sample import IGNORE_INDEX, Sample
from distill.data.transforms import (Compose, HorizontalFlip, Normalize, PhotometricJitter, RandomRotation,
                                     Resize, TopCrop, eval_transforms, normalize_image, train_transforms)
from runtime.geometry import Geometry
from runtime.metadata import IMAGENET_MEAN, IMAGENET_STD
from tests.test_readers import make_culane, make_marking, points_on_mask

torch.set_num_threads(1)


def full_frame_sample() -> Sample:
    """A 1640x590 CULane-like sample: 4 lanes, 16 px wide, image brightness = slot id * 50."""
    h, w = 590, 1640
    lanes = {1: [(100, 589), (700, 300)], 2: [(560, 589), (780, 300)], 3: [(1080, 589), (860, 300)],
             4: [(1600, 589), (930, 300)]}
    lanes = {s: np.array([np.linspace(a[0], b[0], 12), np.linspace(a[1], b[1], 12)], np.float32).T
             for s, (a, b) in lanes.items()}
    mask = rasterise_lanes(lanes, h, w, 16)
    image = np.repeat((mask * 50)[..., None], 3, 2).astype(np.uint8)
    return Sample(image, mask, lanes, np.ones(4, np.float32), {"geometry": Geometry(h, w, h, w, 0)})


def test_crop_resize_compose_one_geometry_and_points_stay_on_mask():
    s0 = full_frame_sample()
    s = eval_transforms((288, 800), crop_top=240, normalize=False)(s0)
    g = s.meta["geometry"]
    assert g == Geometry(590, 1640, 288, 800, 240)
    assert s.image.shape == (288, 800, 3) and s.mask.shape == (288, 800)
    for slot, pts in s.lanes.items():
        kept = s0.lanes[slot][s0.lanes[slot][:, 1] >= 240]
        np.testing.assert_allclose(pts, g.to_input(kept), atol=1e-3)
        np.testing.assert_allclose(g.to_original(pts), kept, atol=1e-3)
        assert points_on_mask(s.mask, pts, slot) == 1.0
    assert set(np.unique(s.mask)) <= {0, 1, 2, 3, 4}


@settings(max_examples=40, deadline=None)
@given(orig_h=st.integers(20, 800), orig_w=st.integers(20, 2000), crop=st.floats(0, 0.9),
       in_h=st.integers(8, 600), in_w=st.integers(8, 1200),
       x=st.floats(-50, 2000), y=st.floats(0, 800))
def test_geometry_round_trip(orig_h, orig_w, crop, in_h, in_w, x, y):
    g = Geometry(orig_h, orig_w, in_h, in_w, int(crop * orig_h))
    p = np.array([[x, y]])
    np.testing.assert_allclose(g.to_original(g.to_input(p)), p, rtol=1e-9, atol=1e-6)


def test_crop_fraction_and_order_is_enforced():
    s = full_frame_sample()
    assert TopCrop(0.25)(s).meta["geometry"].crop_top == 148
    with pytest.raises(ValueError, match="before Resize"):
        Compose([Resize(100, 200), TopCrop(10)])(s)


def test_flip_swaps_slots_mirrors_points_and_reverses_exist():
    s = eval_transforms((144, 400), 0, normalize=False)(full_frame_sample())
    s = Sample(s.image, s.mask, s.lanes, np.array([1, 1, 1, 0], np.float32), s.meta)
    f = HorizontalFlip(p=1.0)(s, np.random.default_rng(0))
    assert f.meta["flipped"] and f.meta["geometry"] == s.meta["geometry"]
    np.testing.assert_array_equal(f.exist, [0, 1, 1, 1])
    for slot, pts in s.lanes.items():
        q = f.lanes[5 - slot]
        np.testing.assert_allclose(q[:, 0], 399 - pts[:, 0])
        assert points_on_mask(f.mask, q, 5 - slot) == 1.0
    # the flipped mask is the mirror with slots swapped
    np.testing.assert_array_equal(np.where(f.mask > 0, 5 - f.mask, 0), s.mask[:, ::-1])
    back = HorizontalFlip(p=1.0)(f, np.random.default_rng(0))
    np.testing.assert_array_equal(back.mask, s.mask)
    assert not back.meta["flipped"]


def test_rotation_moves_points_with_the_mask():
    s = eval_transforms((144, 400), 0, normalize=False)(full_frame_sample())
    r = RandomRotation.rotate(s, 4.0)
    assert r.meta["rotation_deg"] == 4.0 and r.meta["geometry"] == s.meta["geometry"]
    assert (r.mask == IGNORE_INDEX).any()           # corners rotated in from outside are ignored
    for slot, pts in r.lanes.items():
        assert points_on_mask(r.mask, pts, slot) > 0.9
    assert abs(r.lanes[2][:, 0].mean() - s.lanes[2][:, 0].mean()) > 1


def test_jitter_changes_pixels_not_labels():
    s = eval_transforms((72, 200), 0, normalize=False)(full_frame_sample())
    j = PhotometricJitter(p=1.0, hue=0.05)(s, np.random.default_rng(3))
    assert j.image.shape == s.image.shape and j.image.dtype == np.uint8
    assert not np.array_equal(j.image, s.image)
    assert j.mask is s.mask and j.lanes is s.lanes
    img = np.random.default_rng(0).integers(40, 120, (6, 8, 3), dtype=np.uint8)
    bright = PhotometricJitter(brightness=0.5, contrast=0, saturation=0, hue=0, p=1.0)
    b = np.random.default_rng(1).uniform(0.5, 1.5)            # the factor the same generator draws
    out = bright(Sample(img, None), np.random.default_rng(1)).image
    np.testing.assert_allclose(out, np.clip(np.rint(img * b), 0, 255), atol=1)
    grey = PhotometricJitter(brightness=0, contrast=0, saturation=1.0, hue=0, p=1.0)
    flat = np.repeat(img[:, :, :1], 3, 2)                     # grey pixels keep their value
    np.testing.assert_allclose(grey(Sample(flat, None), np.random.default_rng(2)).image, flat, atol=1)


def test_normalize_matches_imagenet_rgb():
    img = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    out = normalize_image(img)
    assert out.shape == (3, 5, 7) and out.dtype == np.float32
    for c in range(3):       # output channel c is RGB channel c = BGR channel 2 - c
        np.testing.assert_allclose(out[c], (img[:, :, 2 - c] - IMAGENET_MEAN[c]) / IMAGENET_STD[c], rtol=1e-5)
    s = Normalize()(full_frame_sample())
    assert s.image.shape == (3, 590, 1640)


def test_train_transforms_output_and_reproducibility():
    t = train_transforms((72, 200), 60)
    a = t(full_frame_sample(), np.random.default_rng(5))
    b = t(full_frame_sample(), np.random.default_rng(5))
    assert a.image.shape == (3, 72, 200) and a.image.dtype == np.float32 and a.mask.shape == (72, 200)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.meta["geometry"] == Geometry(590, 1640, 72, 200, 60)


def test_dataset_items_and_eval_determinism(tmp_path):
    root = make_culane(tmp_path / "c")
    ds = build_dataset("culane", root, "train", (72, 200), crop_top=20, train=False)
    it = ds[0]
    assert it["image"].shape == (3, 72, 200) and it["image"].dtype == torch.float32
    assert it["mask"].shape == (72, 200) and it["mask"].dtype == torch.int64
    assert it["exist"].tolist() == [1, 1, 1, 1] and it["index"] == 0
    assert torch.equal(ds[0]["image"], it["image"])
    assert ds.sample(0).meta["geometry"] == Geometry(148, 410, 72, 200, 20)
    m = build_dataset("synthetic_marking", make_marking(tmp_path / "m"), "val", (20, 32))
    assert m.spec.num_classes == 4 and m[0]["exist"].shape == (0,)
    with pytest.raises(ValueError, match="unknown dataset kind 'kitti'; valid: culane"):
        build_dataset("kitti", root, "train", (72, 200))


class SameSample:
    """A reader view that serves index 0 of a real reader for every index."""

    def __init__(self, reader: CULane, n: int) -> None:
        self.reader, self.n = reader, n
        self.spec, self.names = reader.spec, [reader.names[0]] * n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Sample:
        return self.reader[0]


def test_augmentation_depends_on_sample_and_epoch_not_on_workers(tmp_path):
    reader = CULane(make_culane(tmp_path / "c"), "train")
    ds = SegDataset(SameSample(reader, 4), train_transforms((36, 100), 0), seed=1)
    loader = DataLoader(ds, batch_size=1, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert len(batches) == 4
    assert [int(b["index"][0]) for b in batches] == [0, 1, 2, 3]
    imgs = [b["image"][0] for b in batches]
    # the same underlying frame under four indices: each index draws its own augmentation
    assert not torch.equal(imgs[0], imgs[1]), "two samples drew the same augmentation"
    # ... and the same one whichever process loads it (what exact resume relies on)
    single = [b["image"][0] for b in DataLoader(ds, batch_size=1, num_workers=0, collate_fn=collate)]
    assert all(torch.equal(a, b) for a, b in zip(imgs, single))
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["image"], imgs[0]), "a new epoch must draw new augmentations"
    ds.set_epoch(0)
    assert torch.equal(ds[0]["image"], imgs[0])
    b = collate([ds[0], ds[1]])
    assert b["image"].shape == (2, 3, 36, 100) and b["index"].tolist() == [0, 1]
