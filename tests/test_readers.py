"""Dataset readers on small fixtures written in each dataset's real on-disk format."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from distill.data.apollo import (APOLLO_LABELS, ApolloScapeMarking, color_to_trainid, id_to_trainid,
                                 read_classes_file)
from distill.data.cityscapes import Cityscapes, labelid_to_trainid
from distill.data.culane import CULane
from distill.data.reader import assign_slots_by_position, rasterise_lanes
from distill.data.llamas import LLAMAS, markers_to_polyline
from distill.data.sample import IGNORE_INDEX, DataError
from distill.data.tusimple import TuSimple
from runtime.lane_io import write_culane_lines

# CULane at a quarter of 1640x590: the default 16 px line width scales to 4 px.
CW, CH = 410, 148


def _noise_image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _lane(x_bottom: float, x_top: float, y_bottom: float, y_top: float, n: int = 8) -> np.ndarray:
    ys = np.linspace(y_bottom, y_top, n)
    xs = np.linspace(x_bottom, x_top, n)
    return np.stack([xs, ys], 1)


# Four lanes, left to right at the bottom: slots 1..4.
CULANE_LANES = [_lane(20, 180, 147, 60), _lane(140, 195, 147, 60), _lane(270, 215, 147, 60), _lane(395, 235, 147, 60)]


def points_on_mask(mask: np.ndarray, pts: np.ndarray, value: int) -> float:
    """Fraction of in-image points whose rounded pixel holds ``value``."""
    xy = np.rint(pts).astype(int)
    h, w = mask.shape
    ok = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    assert ok.sum() >= 2, "too few points inside the image to judge"
    return float(np.mean(mask[xy[ok, 1], xy[ok, 0]] == value))


def make_culane(root: Path, n_train: int = 3) -> Path:
    """CULane layout: train_gt with flags; one image with a seg label, the rest rasterised."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n_train):
        rel = f"driver_00/clip/{i:05d}.jpg"
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), _noise_image(CH, CW, i))
        lanes = CULANE_LANES if i != 1 else CULANE_LANES[1:]        # sample 1: slots 2, 3, 4
        flags = "1 1 1 1" if i != 1 else "0 1 1 1"
        write_culane_lines(p.with_suffix(".lines.txt"), lanes[::-1])  # file order is not slot order
        seg_rel = f"laneseg_label_w16/driver_00/clip/{i:05d}.png"
        if i == 0:   # a real seg label, drawn independently of the reader
            seg = np.zeros((CH, CW), np.uint8)
            for s, lane in enumerate(CULANE_LANES, 1):
                cv2.polylines(seg, [np.rint(lane).astype(np.int32)], False, s, 4)
            (root / seg_rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / seg_rel), seg)
        lines.append(f"/{rel} /{seg_rel} {flags}")
    (root / "list").mkdir(exist_ok=True)
    (root / "list" / "train_gt.txt").write_text("\n".join(lines) + "\n")
    (root / "list" / "test.txt").write_text("".join(f"/driver_00/clip/{i:05d}.jpg\n" for i in range(n_train)))
    (root / "list" / "test_split").mkdir(exist_ok=True)
    (root / "list" / "test_split" / "test0_normal.txt").write_text("/driver_00/clip/00000.jpg\n")
    (root / "list" / "test_split" / "test1_crowd.txt").write_text("/driver_00/clip/00001.jpg\n/driver_00/clip/00002.jpg\n")
    return root


# ----------------------------------------------------------------------------------------- CULane

def test_culane_train_lanes_on_their_slots(tmp_path):
    r = CULane(make_culane(tmp_path / "c"), "train")
    assert len(r) == 3 and r.names[0] == "driver_00/clip/00000.jpg"
    assert r.spec.task == "lanes" and r.spec.num_classes == 5
    for i in range(3):
        s = r[i]
        assert s.image.shape == (CH, CW, 3) and s.image.dtype == np.uint8
        assert s.mask.shape == (CH, CW) and s.mask.dtype == np.uint8
        want = [1, 2, 3, 4] if i != 1 else [2, 3, 4]
        assert sorted(s.lanes) == want
        np.testing.assert_array_equal(s.exist, [float(k in want) for k in (1, 2, 3, 4)])
        for slot, pts in s.lanes.items():
            assert np.all(np.diff(pts[:, 1]) <= 0), "points must run bottom to top"
            assert points_on_mask(s.mask, pts, slot) > 0.9
        assert s.meta["geometry"].in_h == CH and s.meta["name"] == r.names[i]
    assert r[0].meta["label_path"].endswith("00000.png")        # the real label was used
    assert r[2].meta["label_path"] is None                       # rasterised from the lines


def test_culane_rasterised_width_scales(tmp_path):
    r = CULane(make_culane(tmp_path / "c"), "train", line_width=32)
    m = r[2].mask
    row = m[100]
    assert 6 <= np.sum(row == 2) <= 10          # 32 px at 1640 -> 8 px at 410


def test_culane_test_split_tags_and_position_slots(tmp_path):
    root = make_culane(tmp_path / "c")
    r = CULane(root, "test")
    assert [r[i].meta["tags"] for i in range(3)] == [["normal"], ["crowd"], ["crowd"]]
    s = r[1]                                        # no flags, no seg label listed: by position
    assert sorted(s.lanes) == [2, 3, 4]
    assert s.lanes[2][0, 0] == pytest.approx(140)
    crowd = CULane(root, "test1_crowd")
    assert len(crowd) == 2 and crowd[0].meta["tags"] == ["crowd"]


def test_assign_slots_by_position_keeps_two_per_side():
    lanes = [_lane(x, 200, 500, 300) for x in (100, 300, 700, 900, 1100, 1500)]
    got = assign_slots_by_position(lanes, 1640, 4)
    assert {s: float(p[0, 0]) for s, p in got.items()} == {1: 300, 2: 700, 3: 900, 4: 1100}


def test_culane_bad_inputs(tmp_path):
    root = make_culane(tmp_path / "c")
    with pytest.raises(DataError, match="dataset root not found"):
        CULane(tmp_path / "nowhere", "train")
    with pytest.raises(DataError, match="no list file"):
        CULane(root, "list/missing.txt")
    # truncated JPEG
    img = root / "driver_00/clip/00002.jpg"
    data = img.read_bytes()
    img.write_bytes(data[: len(data) // 2])
    r = CULane(root, "train")
    with pytest.raises(DataError, match=r"00002\.jpg: truncated JPEG"):
        r[2]
    # undecodable bytes
    img.write_bytes(b"\xff\xd8not a jpeg at all\xff\xd9")
    with pytest.raises(DataError, match="cannot decode"):
        r[2]
    img.write_bytes(data)
    # malformed .lines.txt names the file and line
    lines = root / "driver_00/clip/00001.lines.txt"
    lines.write_text("1 2 3 4\n5 6 7\n")
    with pytest.raises(DataError, match=r"00001\.lines\.txt:2: odd number"):
        r[1]
    # label whose size does not match its image
    seg = root / "laneseg_label_w16/driver_00/clip/00000.png"
    cv2.imwrite(str(seg), np.zeros((CH // 2, CW), np.uint8))
    with pytest.raises(DataError, match=r"00000\.png: label is 410x74 but its image"):
        r[0]


def test_culane_list_errors_and_skip_bad(tmp_path):
    root = make_culane(tmp_path / "c")
    lst = root / "list" / "bad.txt"
    good = (root / "list" / "train_gt.txt").read_text().splitlines()
    lst.write_text("\n".join([good[0], "/driver_00/clip/nothere.jpg", good[1] + " 1", good[2]]) + "\n")
    with pytest.raises(DataError, match=r"bad\.txt:2: image .*nothere\.jpg not found"):
        CULane(root, "list/bad.txt")
    r = CULane(root, "list/bad.txt", skip_bad=True)
    assert len(r) == 2 and r.skipped == 2
    assert any("bad.txt:3" in k for k in r.bad)
    # a sample that fails at read time is skipped, counted and replaced by the next good one
    (root / "driver_00/clip/00000.lines.txt").write_text("x y\n")
    s = r[0]
    assert s.meta["name"] == "driver_00/clip/00002.jpg" and r.skipped == 3


# --------------------------------------------------------------------------------------- TuSimple

TW, TH = 320, 180
H_SAMPLES = list(range(40, 180, 10))


def make_tusimple(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(3):
        rel = f"clips/0313-1/{i}/20.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), _noise_image(TH, TW, 10 + i))
        lanes = []
        for xb, xt in ((30, 140), (120, 155), (200, 165), (300, 180), (-60, 100)):
            xs = [xb + (xt - xb) * (TH - 1 - y) / (TH - 1 - 40) for y in H_SAMPLES]
            xs = [round(x, 1) if (0 <= x < TW and y >= 60) else -2 for x, y in zip(xs, H_SAMPLES)]
            lanes.append(xs)
        recs.append({"lanes": lanes, "h_samples": H_SAMPLES, "raw_file": rel})
    (root / "label_data_0313.json").write_text("".join(json.dumps(r) + "\n" for r in recs[:2]))
    (root / "label_data_0601.json").write_text(json.dumps(recs[2]) + "\n")
    return root


def test_tusimple_reader(tmp_path):
    r = TuSimple(make_tusimple(tmp_path / "t"), "train")
    assert len(r) == 3                       # two label files combined
    s = r[0]
    assert sorted(s.lanes) == [1, 2, 3, 4] and s.exist.tolist() == [1, 1, 1, 1]
    assert s.lanes[2][0, 0] == pytest.approx(122.3, abs=0.1)    # nearest left of centre 160, at y=170
    for slot, pts in s.lanes.items():
        assert pts[0, 1] == 170 and np.all(np.diff(pts[:, 1]) < 0)
        assert points_on_mask(s.mask, pts, slot) > 0.9
    assert s.meta["h_samples"] == H_SAMPLES and len(s.meta["raw_lanes"]) == 5


def test_tusimple_bad_lines(tmp_path):
    root = make_tusimple(tmp_path / "t")
    f = root / "label_data_0313.json"
    good = f.read_text().splitlines()
    f.write_text(good[0] + "\n{not json\n")
    with pytest.raises(DataError, match=r"label_data_0313\.json:2: not valid JSON"):
        TuSimple(root, "train")
    rec = json.loads(good[1])
    rec["lanes"][0] = rec["lanes"][0][:-1]
    f.write_text(good[0] + "\n" + json.dumps(rec) + "\n")
    with pytest.raises(DataError, match=r"0313\.json:2: lane 0 has 13 values for 14 h_samples"):
        TuSimple(root, "train")
    r = TuSimple(root, "train", skip_bad=True)
    assert len(r) == 2 and r.skipped == 1
    with pytest.raises(DataError, match="label file not found"):
        TuSimple(root, ["nope.json"])


# ----------------------------------------------------------------------------------------- LLAMAS

LW, LH = 319, 179     # a quarter of 1276x717


def _markers(x0, y0, x1, y1, n=4):
    """Dashed markers along a line from the near end (x0, y0) to the far end (x1, y1)."""
    out = []
    for k in range(n):
        a, b = k / n, (k + 0.5) / n
        out.append({"world_start": {"x": 0, "y": 0, "z": 5 + k}, "world_end": {"x": 0, "y": 0, "z": 6 + k},
                    "pixel_start": {"x": x0 + a * (x1 - x0), "y": y0 + a * (y1 - y0)},
                    "pixel_end": {"x": x0 + b * (x1 - x0), "y": y0 + b * (y1 - y0)}})
    return out


def make_llamas(root: Path) -> Path:
    lab = root / "labels/train/images-2014-12-22-12-35-10_mapping_280S_ramps"
    img = root / "grayscale_images/train/images-2014-12-22-12-35-10_mapping_280S_ramps"
    lab.mkdir(parents=True)
    img.mkdir(parents=True)
    for i in range(2):
        stem = f"14192835{i}_0744236000"
        cv2.imwrite(str(img / f"{stem}_gray_rect.png"), _noise_image(LH, LW, 20 + i)[:, :, 0])
        lanes = [{"lane_id": "l3", "markers": _markers(20, 178, 140, 80)},    # renumbered to l1
                 {"lane_id": "l1", "markers": _markers(110, 178, 150, 80)},   # renumbered to l0
                 {"lane_id": "r0", "markers": _markers(220, 178, 170, 80)},
                 {"lane_id": "r1", "markers": _markers(300, 178, 185, 80)[:1]},  # one marker: dropped
                 {"lane_id": "r2", "markers": _markers(318, 150, 200, 80)}]   # renumbered to r1
        (lab / f"{stem}.json").write_text(json.dumps({"projection_matrix": [[1, 0, 0]] * 3, "lanes": lanes}))
    return root


def test_llamas_reader(tmp_path):
    r = LLAMAS(make_llamas(tmp_path / "l"), "train")
    assert len(r) == 2 and r.names[0].startswith("grayscale_images/train/")
    s = r[0]
    assert s.image.shape == (LH, LW, 3)
    assert sorted(s.lanes) == [1, 2, 3, 4] and s.exist.tolist() == [1, 1, 1, 1]
    assert s.lanes[1][0, 0] == pytest.approx(20, abs=1) and s.lanes[4][0, 0] == pytest.approx(318, abs=1)
    for slot, pts in s.lanes.items():
        assert points_on_mask(s.mask, pts, slot) > 0.9
    assert s.meta["eval_rows"] == (300, 716)


def test_llamas_polyline_fills_gaps_between_dashes():
    pts = markers_to_polyline([(100, 200, 90, 180), (80, 160, 70, 140)], row_step=1)
    assert pts[0, 1] == 200 and pts[-1, 1] == 140 and len(pts) == 61
    assert np.allclose(pts[:, 0], 100 - (200 - pts[:, 1]) / 2)      # one straight line through both


def test_llamas_bad_json(tmp_path):
    root = make_llamas(tmp_path / "l")
    bad = sorted((root / "labels/train").glob("*/*.json"))[0]
    bad.write_text('{"lanes": [\n  {"lane_id": "l0",\n')
    r = LLAMAS(root, "train")
    with pytest.raises(DataError, match=rf"{bad.name}:\d+: not valid JSON"):
        r[0]
    bad.write_text(json.dumps({"lanes": [{"lane_id": "l0", "markers": [{"pixel_start": {"x": 1}}] * 2}]}))
    with pytest.raises(DataError, match="pixel_start"):
        r[0]
    with pytest.raises(DataError, match="label folder not found"):
        LLAMAS(root, "valid")


# ------------------------------------------------------------------------------------ ApolloScape

def test_apollo_table_luts():
    assert len(APOLLO_LABELS) == 38
    ids = np.array([[0, 200, 204, 250], [249, 255, 100, 233]], np.uint8)
    np.testing.assert_array_equal(id_to_trainid(ids), [[0, 1, 2, 35], [255, 255, 255, 30]])
    rgb = np.array([[l.color for l in APOLLO_LABELS]], np.uint8)
    np.testing.assert_array_equal(color_to_trainid(rgb)[0], [l.train_id for l in APOLLO_LABELS])
    assert color_to_trainid(np.array([[[1, 2, 3]]], np.uint8))[0, 0] == IGNORE_INDEX


def make_marking(root: Path, classes: str = "void 0\ns_w_d 200\nb_w_g 201\nc_wy_z 214\n") -> Path:
    """The synthetic marking layout: CULane image list, ``marking/<path>_bin.png`` id labels."""
    names = []
    for i in range(2):
        rel = f"driver_00/clip/{i:05d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), _noise_image(40, 64, 30 + i))
        lab = np.zeros((40, 64), np.uint8)
        lab[20:, 10:14] = 200
        lab[30:34, :] = 214
        lab[0:3, :] = 249
        lab[5, 5] = 210                   # a real class not in the compact set -> ignore
        (root / "marking" / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "marking" / rel.replace(".jpg", "_bin.png")), lab)
        names.append(rel)
    (root / "list").mkdir(exist_ok=True)
    (root / "list" / "train_gt.txt").write_text("".join(f"/{n} /x.png 1 0 0 0\n" for n in names))
    (root / "list" / "val.txt").write_text("".join(f"/{n}\n" for n in names))
    (root / "marking" / "classes.txt").write_text(classes)
    return root


def test_apollo_synthetic_marking_layout(tmp_path):
    root = make_marking(tmp_path / "m")
    for split in ("train", "val"):
        r = ApolloScapeMarking(root, split)
        assert r.spec.task == "marking" and r.spec.class_names == ("void", "s_w_d", "b_w_g", "c_wy_z")
        s = r[1]
        assert s.mask[25, 11] == 1 and s.mask[31, 40] == 3 and s.mask[10, 40] == 0
        assert s.mask[1, 1] == IGNORE_INDEX and s.mask[5, 5] == IGNORE_INDEX
        assert s.lanes == {} and s.exist.shape == (0,)


def test_apollo_full_table_colour_and_pairs(tmp_path):
    root = make_marking(tmp_path / "m")
    lab = root / "marking/driver_00/clip/00000_bin.png"
    ids = cv2.imread(str(lab), cv2.IMREAD_UNCHANGED)
    colour = np.zeros(ids.shape + (3,), np.uint8)
    for l in APOLLO_LABELS:
        colour[ids == l.id] = l.color
    cv2.imwrite(str(root / "colour.png"), cv2.cvtColor(colour, cv2.COLOR_RGB2BGR))
    (root / "pairs.txt").write_text("driver_00/clip/00000.jpg\tcolour.png\ndriver_00/clip/00000.jpg,"
                                    "marking/driver_00/clip/00000_bin.png\n")
    r = ApolloScapeMarking(root, "pairs.txt", classes_file=None, label_dir="none")
    assert r.spec.num_classes == 36
    a, b = r[0].mask, r[1].mask
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, id_to_trainid(ids))
    assert a[31, 40] == 18 and a[25, 11] == 1 and a[5, 5] == 16


def test_apollo_bad_inputs(tmp_path):
    root = make_marking(tmp_path / "m")
    cv2.imwrite(str(root / "marking/driver_00/clip/00001_bin.png"), np.zeros((20, 64), np.uint8))
    r = ApolloScapeMarking(root, "val")
    with pytest.raises(DataError, match=r"00001_bin\.png: label is 64x20 but its image"):
        r[1]
    (root / "marking" / "classes.txt").write_text("void 0\ns_w_d two hundred\n")
    with pytest.raises(DataError, match=r"classes\.txt:2: expected 'name apollo_id'"):
        ApolloScapeMarking(root, "val")
    names, lut = read_classes_file(_write(tmp_path / "c.txt", "s_w_d 200\n"))
    assert names == ("background", "s_w_d") and lut[0] == 0 and lut[200] == 1 and lut[201] == 255
    # the synthetic writer's form: "class_id name apollo_id", any line order
    names, lut = read_classes_file(_write(tmp_path / "c3.txt", "1 white_solid 200\n0 background 0\n2 arrow 220\n"))
    assert names == ("background", "white_solid", "arrow") and lut[220] == 2 and lut[249] == 255
    with pytest.raises(DataError, match="class ids must be 0..1"):
        read_classes_file(_write(tmp_path / "c4.txt", "0 background 0\n2 arrow 220\n"))


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------------- Cityscapes

def make_cityscapes(root: Path) -> Path:
    for i, city in enumerate(("aachen", "bochum")):
        img = root / f"leftImg8bit/train/{city}/{city}_000000_00001{i}_leftImg8bit.png"
        img.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(img), _noise_image(32, 64, 40 + i))
        lab = np.full((32, 64), 7, np.uint8)          # road
        lab[:8] = 23                                  # sky
        lab[8:12, :10] = 0                            # unlabeled -> ignore
        lab[12:16, :10] = 33                          # bicycle
        out = root / f"gtFine/train/{city}/{city}_000000_00001{i}_gtFine_labelIds.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), lab)
    return root


def test_cityscapes_reader(tmp_path):
    r = Cityscapes(make_cityscapes(tmp_path / "cs"), "train")
    assert len(r) == 2 and r.spec.num_classes == 19 and r.names[1].startswith("leftImg8bit/train/bochum/")
    m = r[0].mask
    assert m[0, 0] == 10 and m[20, 20] == 0 and m[9, 0] == IGNORE_INDEX and m[13, 0] == 18
    assert labelid_to_trainid(np.array([-1 & 0xFF, 26], np.uint8)).tolist() == [255, 13]


def test_cityscapes_bad_inputs(tmp_path):
    root = make_cityscapes(tmp_path / "cs")
    next((root / "gtFine/train/bochum").glob("*.png")).unlink()
    with pytest.raises(DataError, match=r"gtFine_labelIds\.png: label for .* not found"):
        Cityscapes(root, "train")
    r = Cityscapes(root, "train", skip_bad=True)
    assert len(r) == 1 and r.skipped == 1
    with pytest.raises(DataError, match="image folder not found"):
        Cityscapes(root, "val")


def test_rasterise_lanes_draws_slot_ids():
    m = rasterise_lanes({2: np.array([[10.0, 30], [10, 0]]), 3: np.array([[30.0, 30], [30, 0]])}, 32, 40, 3)
    assert set(np.unique(m)) == {0, 2, 3} and m[15, 10] == 2 and m[15, 30] == 3 and m[15, 20] == 0
