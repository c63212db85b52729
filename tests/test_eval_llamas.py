"""LLAMAS evaluation on the inputs where the dataset's own script departs or stops (issue 20).

Each case is a small label / prediction fixture written by the test; the counts asserted are the
official script's where it runs, and the documented counts or messages where it stops.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.interpolate import splprep
from scipy.optimize import linear_sum_assignment

from distill.data.llamas import llamas_label_rows, llamas_row_xs
from distill.data.sample import DataError
from distill.eval.culane import read_lanes_like_official
from distill.eval.llamas import evaluate_llamas, interpolate_lane, llamas_counts
from runtime.lane_io import LaneFileError, read_culane_lines, write_culane_lines

DRIVE = "images-2014-12-22-12-35-10_mapping_280S_ramps"


def marker(x0: int, y0: int, x1: int, y1: int, z0: float, z1: float | None = None) -> dict:
    """A label marker: pixel start (near end) and end, world z of both ends (z1 defaults to z0 + 1)."""
    return {"pixel_start": {"x": x0, "y": y0}, "pixel_end": {"x": x1, "y": y1},
            "world_start": {"x": 0.0, "y": 0.0, "z": z0},
            "world_end": {"x": 0.0, "y": 0.0, "z": z0 + 1 if z1 is None else z1}}


# two dashes each on x = 1300 - y (l0) and x = y + 200 (r0), continued down to row 716
L0 = [marker(600, 700, 610, 690, 5.0), marker(620, 680, 630, 670, 8.0)]
R0 = [marker(900, 700, 890, 690, 5.0), marker(880, 680, 870, 670, 8.0)]
VERTICAL = [marker(100, 700, 100, 690, 1.0), marker(100, 680, 100, 660, 2.0)]   # nothing to extend from


def write_label(root: Path, stem: str, lanes: list[tuple[str, list[dict]]]) -> Path:
    """``root/labels/valid/<drive>/<stem>.json`` with the lanes in this order (ids may repeat)."""
    path = root / "labels" / "valid" / DRIVE / f"{stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"projection_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                                "lanes": [{"lane_id": i, "markers": m} for i, m in lanes]}))
    return path


def write_pred(root: Path, stem: str, text: str) -> Path:
    path = root / "pred" / DRIVE / f"{stem}.lines.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())
    return path


def lane_text(x_of_y, ys=range(670, 717, 5)) -> str:
    return " ".join(f"{x_of_y(y)} {y}" for y in ys)


GOOD_L0 = lane_text(lambda y: 1300 - y)
GOOD_R0 = lane_text(lambda y: y + 200)


def run(root: Path, **kw) -> dict:
    return evaluate_llamas(root / "labels" / "valid", root / "pred", per_image=True, **kw)


def counts(res: dict) -> tuple[int, int, int, int]:
    return res["images"], res["tp"], res["fp"], res["fn"]


# ------------------------------------------------------------------ line endings

@pytest.mark.parametrize("end", ["\r", "\r\n", "\n"])
def test_prediction_line_endings_as_python_text_mode(tmp_path, end):
    write_label(tmp_path, "a", [("l0", L0), ("r0", R0)])
    write_pred(tmp_path, "a", GOOD_L0 + end + GOOD_R0 + end)
    res = run(tmp_path)
    assert counts(res) == (1, 2, 0, 0)                      # one lane per line, as the official script


def test_one_reader_two_line_modes(tmp_path):
    f = tmp_path / "cr.lines.txt"
    f.write_bytes(b"1 700 2 650\r3 700 4 650\r\n\r5 700 6 650")
    assert [len(p) for p in read_culane_lines(f, universal_newlines=True)] == [2, 2, 2]
    # CULane keeps the C++ getline: only \n ends a line, the \r are blanks inside it
    assert [len(p) for p in read_culane_lines(f)] == [4, 2]
    assert [len(p) for p in read_lanes_like_official(f)] == [4, 2]
    f.write_bytes(b"1 700 2 650\r3 700 4")
    with pytest.raises(LaneFileError, match=r"cr.lines.txt:2: odd number"):
        read_culane_lines(f, universal_newlines=True)


# ------------------------------------------------------------------ lanes beyond l1, l0, r0, r1

def test_bad_lane_beyond_the_four_is_a_data_error_naming_file_and_lane(tmp_path):
    # file ids l1, l3, l7 renumber to l0, l1, l2; the spline creator builds l2 too and stops on it
    lab = write_label(tmp_path, "a", [("l1", L0), ("l3", L0), ("l7", VERTICAL), ("r0", R0)])
    with pytest.raises(DataError, match=r"a\.json: lane l2 \(id 'l7' in the file\): no marker that is neither"):
        llamas_row_xs(lab)
    write_pred(tmp_path, "a", GOOD_L0 + "\n" + GOOD_R0 + "\n")
    with pytest.raises(DataError, match=r"lane l2 \(id 'l7' in the file\)"):
        run(tmp_path)
    res = run(tmp_path, skip_bad=True)                       # skipped, counted, image scored as usual
    assert counts(res) == (1, 2, 0, 1) and res["skipped_lanes"] == 1 and res["skipped_images"] == 0
    assert list(res["bad"]) == [f"{DRIVE}/a"] and "lane l2" in res["bad"][f"{DRIVE}/a"][0]


def test_lane_beyond_the_four_with_a_row_outside_the_image_is_a_data_error(tmp_path):
    # the official _sample_points hits an IndexError there (and drops into pdb)
    low = [marker(900, 800, 890, 780, 5.0), marker(880, 770, 870, 750, 8.0)]
    lab = write_label(tmp_path, "a", [("l0", L0), ("r0", R0), ("r1", R0), ("r2", low)])
    with pytest.raises(DataError, match=r"a\.json: lane r2: marker row 800 outside the 717-row image"):
        llamas_row_xs(lab)
    res = llamas_label_rows(lab)
    assert [i for i, _ in res.bad] == ["r2"] and [r[700] for r in res.rows] == [-1, 600, 900, 900]


def test_good_lanes_beyond_the_four_are_built_but_not_ground_truth(tmp_path):
    far_left = [marker(300, 700, 310, 690, 5.0), marker(320, 680, 330, 670, 8.0)]
    lab = write_label(tmp_path, "a", [("l0", L0), ("l1", far_left), ("l2", far_left), ("r0", R0)])
    rows = llamas_label_rows(lab)
    assert rows.bad == [] and rows.empty_lanes == 0
    assert [r[700] for r in rows.rows] == [300, 600, 900, -1]        # l1, l0, r0, r1; l2 left out


def test_bad_used_lane_or_label_leaves_the_image_out_with_skip_bad(tmp_path):
    write_label(tmp_path, "a", [("l0", L0), ("r0", R0)])
    write_label(tmp_path, "b", [("l0", VERTICAL), ("r0", R0)])
    bad_json = tmp_path / "labels" / "valid" / DRIVE / "c.json"
    bad_json.write_text('{"lanes": [')
    for stem in "abc":
        write_pred(tmp_path, stem, GOOD_L0 + "\n" + GOOD_R0 + "\n")
    with pytest.raises(DataError, match=r"b\.json: lane l0: no marker"):
        run(tmp_path)
    res = run(tmp_path, skip_bad=True)
    assert counts(res) == (1, 2, 0, 0) and res["skipped_images"] == 2 and res["skipped_lanes"] == 0
    assert [r["name"] for r in res["per_image"]] == [f"{DRIVE}/a"]
    assert sorted(res["bad"]) == [f"{DRIVE}/b", f"{DRIVE}/c"] and "not valid JSON" in res["bad"][f"{DRIVE}/c"][0]


def test_eval_command_takes_skip_bad_and_prints_the_counts(tmp_path, capsys):
    from distill.__main__ import COMMANDS
    from runtime.cli import main

    write_label(tmp_path, "a", [("l0", L0), ("r0", R0)])
    write_label(tmp_path, "b", [("l0", VERTICAL), ("r0", R0)])
    for stem in "ab":
        write_pred(tmp_path, stem, GOOD_L0 + "\n" + GOOD_R0 + "\n")
    args = ["eval", "--metric", "llamas", "--anno-root", str(tmp_path / "labels" / "valid"),
            "--pred-root", str(tmp_path / "pred")]
    assert main("python -m distill", "", COMMANDS, args) == 2
    assert "b.json: lane l0: no marker" in capsys.readouterr().err
    assert main("python -m distill", "", COMMANDS, args + ["--skip-bad"]) == 0
    assert "skipped images: 1" in capsys.readouterr().out


def test_nearest_marker_with_equal_world_z_is_rejected_unless_behind_the_camera(tmp_path):
    flat = [marker(600, 700, 610, 690, 5.0, 5.0), marker(620, 680, 630, 670, 8.0)]
    with pytest.raises(DataError, match=r"lane r1 \(id 'r4' in the file\): nearest marker has world_start.z == "):
        llamas_row_xs(write_label(tmp_path, "a", [("r0", R0), ("r4", flat)]))
    behind = [marker(600, 700, 610, 690, -1.0, -1.0), marker(620, 680, 630, 670, 8.0)]
    assert llamas_row_xs(write_label(tmp_path, "b", [("l0", behind)]))[1][700] == 600   # no extension


# ------------------------------------------------------------------ where the official script stops

def test_missing_prediction_file_is_counted_and_warned(tmp_path):
    write_label(tmp_path, "a", [("l0", L0), ("r0", R0)])
    write_label(tmp_path, "b", [("l0", L0), ("r0", R0)])
    write_pred(tmp_path, "a", GOOD_L0 + "\n")
    with pytest.warns(UserWarning, match=r"1 of 2 prediction file\(s\) missing \(first: .*b\.lines\.txt\)"):
        res = run(tmp_path)
    assert counts(res) == (2, 1, 0, 3) and res["missing_predictions"] == 1
    with pytest.raises(FileNotFoundError, match="prediction folder not found"):
        evaluate_llamas(tmp_path / "labels" / "valid", tmp_path / "nowhere")


def test_prediction_lane_of_identical_points_is_a_false_positive(tmp_path):
    with pytest.raises(TypeError):                           # what the official interpolation hits
        splprep([[600.0], [700.0]], s=0, t=50, k=0)
    assert interpolate_lane(np.array([[600.0, 700.0]] * 3)).tolist() == [[600.0, 700.0]]
    write_label(tmp_path, "a", [("l0", L0), ("r0", R0)])
    write_pred(tmp_path, "a", GOOD_L0 + "\n600 700 600 700 600 700\n5 5\n")   # 1-point lane dropped
    res = run(tmp_path)
    assert counts(res) == (1, 1, 1, 1) and res["point_predictions"] == 1


def test_gt_lane_entirely_above_the_evaluated_rows_is_an_unmatchable_miss(tmp_path):
    # leaves the image on the left at row 260: 41 valid rows (kept by the official filter) but
    # none on rows 300..716 (where the official add_ys assertion stops)
    high = [marker(10, 250, 20, 240, 3.0), marker(30, 230, 40, 220, 4.0)]
    lab = write_label(tmp_path, "a", [("l0", high), ("r0", R0)])
    xs = np.array(llamas_row_xs(lab)[1])
    assert (xs >= 0).sum() == 41 and (xs[300:] < 0).all()
    write_pred(tmp_path, "a", GOOD_R0 + "\n" + lane_text(lambda y: 20 + 250 - y, range(220, 261, 10)) + "\n")
    res = run(tmp_path)
    assert counts(res) == (1, 1, 1, 1) and res["gt_lanes_above_rows"] == 1


def test_both_lanes_drawn_as_nothing_do_not_stop_the_matching(tmp_path):
    with pytest.raises(ValueError):                          # what a 0/0 IoU does to the official matching
        linear_sum_assignment(np.array([[np.nan]]))
    point = np.array([[600.0, 700.0], [600.0, 700.0]])
    assert llamas_counts([point], [np.zeros((0, 2))]) == (0, 1, 1)
    # per-row GT and a prediction, both beyond the right edge of the 1276 px canvas
    ys = np.arange(300, 717, dtype=np.float64)
    write_culane_lines(tmp_path / "anno" / "a.lines.txt", [np.stack([np.full_like(ys, 1400), ys], 1)])
    write_culane_lines(tmp_path / "pred" / "a.lines.txt", [[[1500, 716], [1510, 600]], [[600, 716], [610, 600]]])
    res = evaluate_llamas(tmp_path / "anno", tmp_path / "pred")
    assert counts(res) == (1, 0, 2, 1) and res["empty_iou_pairs"] == 1


def test_label_lane_with_empty_marker_list_is_dropped_and_counted(tmp_path):
    write_label(tmp_path, "a", [("l0", L0), ("r0", []), ("r1", R0)])   # r1 renumbers to r0
    write_label(tmp_path, "b", [])                                     # no lanes at all
    write_pred(tmp_path, "a", GOOD_L0 + "\n" + GOOD_R0 + "\n")
    write_pred(tmp_path, "b", GOOD_L0 + "\n")
    res = run(tmp_path)
    assert counts(res) == (2, 2, 1, 0) and res["empty_marker_lanes"] == 1
    assert llamas_label_rows(tmp_path / "labels" / "valid" / DRIVE / "a.json").empty_lanes == 1
