"""``distill data check`` finds every problem planted in a small dataset of each format.

The datasets are the reader tests' fixtures (each written in its format's real layout), with
problems planted on top: one of each kind the format can have, in a known file.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from distill.data.check import PROBLEMS, check_dataset, format_report
from runtime.cli import main
from runtime.lane_io import write_culane_lines
from tests.test_readers import (CH, CULANE_LANES, CW, make_cityscapes, make_culane, make_llamas, make_marking,
                                make_tusimple)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def found(report, kind: str) -> list[str]:
    return report.problems[kind]


def only(report, expected: dict[str, list[str]]) -> None:
    """Exactly the expected kinds were found, each message naming its file."""
    for kind in PROBLEMS:
        msgs = found(report, kind)
        want = expected.get(kind, [])
        assert len(msgs) == len(want), (kind, msgs)
        for culprit in want:
            assert any(culprit in m for m in msgs), (kind, culprit, msgs)


def test_culane_every_planted_problem(tmp_path, capsys):
    root = make_culane(tmp_path / "c", n_train=6)
    clip = root / "driver_00/clip"
    with open(root / "list/train_gt.txt", "a") as fh:
        fh.write("/driver_00/clip/99999.jpg /laneseg_label_w16/driver_00/clip/99999.png 1 1 1 1\n")   # missing
        fh.write("/driver_00/clip/00001.jpg /x.png 1 1\n")                                              # bad line
    truncate(clip / "00002.jpg")                                                                        # image
    (clip / "00001.lines.txt").write_text("10 20 30\n")                                                 # label
    cv2.imwrite(str(root / "laneseg_label_w16/driver_00/clip/00000.png"), np.zeros((CH // 2, CW), np.uint8))  # size
    extra = [np.stack([np.full(8, x), np.linspace(147, 60, 8)], 1) for x in (60, 350)]
    write_culane_lines(clip / "00003.lines.txt", CULANE_LANES + extra)                                  # slots
    write_culane_lines(clip / "00004.lines.txt", [np.array([[100.0, 70], [110, 60]])])                  # rows
    write_culane_lines(clip / "00005.lines.txt", [np.array([[100.0, 2 * CH], [110, CH]])])              # size
    (root / "list/val_gt.txt").write_bytes(b"\xff\xfe/driver_00\x81")                                  # split
    rep = check_dataset("culane", root)
    assert rep.splits == {"train": 6, "val": 0, "test": 6} and rep.checked == 6
    only(rep, {"missing": ["99999.jpg"], "label": ["train_gt.txt:8", "00001.lines.txt:1"],
               "image": ["00002.jpg: truncated JPEG"], "size": ["00000.png: label is", "00005.jpg: lane"],
               "slots": ["00003.jpg: 6 lanes for 4 lane slots"], "rows": ["00004.jpg: lane"],
               "split": ["split 'val' is not UTF-8 text"]})
    assert rep.fatal == 7
    # the command: one table, the JSON with every message, exit 1 on fatal problems
    out = tmp_path / "report.json"
    assert main("python -m distill", "", ["distill.data.cli"],
                ["data", "check", "--kind", "culane", "--root", str(root), "--json", str(out), "--no-progress"]) == 1
    text = capsys.readouterr().out
    assert format_report(rep) in text and "not ready: 7 fatal" in text
    js = json.loads(out.read_text())
    assert js["fatal"] == 7 and js["problems"]["label"]["count"] == 2


def test_a_label_file_that_is_not_text_is_a_label_problem(tmp_path):
    root = make_culane(tmp_path / "c", n_train=3)
    (root / "driver_00/clip/00002.lines.txt").write_bytes(b"\x81\xff 10 20")
    only(check_dataset("culane", root), {"label": ["00002.jpg: a label file of this sample is not UTF-8 text"]})


def test_tusimple_every_planted_problem(tmp_path):
    root = make_tusimple(tmp_path / "t")
    f = root / "label_data_0313.json"
    rec = json.loads(f.read_text().splitlines()[0])
    with open(f, "a") as fh:
        fh.write("{not json\n")                                                                      # label
        fh.write(json.dumps({**rec, "raw_file": "clips/0313-1/9/20.jpg"}) + "\n")                    # missing
    truncate(root / "clips/0313-1/1/20.jpg")                                                         # image
    rep = check_dataset("tusimple", root)
    assert set(rep.splits) == {"label_data_0313.json", "label_data_0601.json"}
    # every readable record has five lanes for four slots (the fixture's fifth lane)
    only(rep, {"label": ["0313.json:3: not valid JSON"], "missing": ["9/20.jpg"],
               "image": ["1/20.jpg: truncated JPEG"], "slots": ["0/20.jpg: 5 lanes", "2/20.jpg: 5 lanes"]})


def test_llamas_every_planted_problem(tmp_path):
    root = make_llamas(tmp_path / "l")
    labels = sorted((root / "labels/train").glob("*/*.json"))
    labels[0].write_text('{"lanes": [\n')                                                             # label
    (labels[1].parent / "999_0_x.json").write_text(labels[1].read_text())                            # missing image
    truncate(sorted((root / "grayscale_images/train").glob("*/*.png"))[1])                           # image
    rep = check_dataset("llamas", root)
    assert rep.splits == {"train": 2}
    only(rep, {"label": [f"{labels[0].name}:"], "missing": ["999_0_x"], "image": ["truncated PNG"]})


def test_apollo_every_planted_problem(tmp_path):
    root = make_marking(tmp_path / "m")
    cv2.imwrite(str(root / "marking/driver_00/clip/00001_bin.png"), np.zeros((20, 64), np.uint8))  # size
    with open(root / "list/val.txt", "a") as fh:
        fh.write("/driver_00/clip/notes.txt\n")                                                      # label
        fh.write("/driver_00/clip/00007.jpg\n")                                                      # missing
    rep = check_dataset("synthetic_marking", root)
    only(rep, {"size": ["00001_bin.png: label is 64x20"], "label": ["val.txt:3"], "missing": ["00007.jpg"]})
    (root / "marking/driver_00/clip/00000_bin.png").unlink()
    rep = check_dataset("apollo", root, ["val"])
    assert any("00000_bin.png" in m for m in found(rep, "missing"))


def test_cityscapes_every_planted_problem(tmp_path):
    root = make_cityscapes(tmp_path / "cs")
    next((root / "gtFine/train/bochum").glob("*.png")).unlink()                                      # missing
    truncate(next((root / "leftImg8bit/train/aachen").glob("*.png")))                                # image
    rep = check_dataset("cityscapes", root)
    only(rep, {"missing": ["bochum"], "image": ["aachen"]})


def test_a_split_with_nothing_usable_is_reported_not_raised(tmp_path):
    root = make_culane(tmp_path / "c", n_train=2)
    for p in (root / "driver_00/clip").glob("*.jpg"):
        p.unlink()
    rep = check_dataset("culane", root)
    assert len(found(rep, "split")) == 2 and rep.fatal == 2


def test_worker_processes_find_the_same(tmp_path):
    root = make_culane(tmp_path / "c", n_train=12)
    truncate(root / "driver_00/clip/00007.jpg")
    (root / "driver_00/clip/00003.lines.txt").write_text("1 2 3\n")
    serial = check_dataset("culane", root)
    assert serial.count("image") == 1 and serial.count("label") == 1
    assert check_dataset("culane", root, workers=2).to_dict() == serial.to_dict()
    # as a command: the pool's workers are terminated at the end without a word (they inherit
    # the command's SIGTERM-as-Ctrl-C handler, which must not apply to them)
    res = subprocess.run([sys.executable, "-m", "distill", "data", "check", "--kind", "culane", "--root", str(root),
                          "--workers", "2", "--no-progress"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "2 fatal" in res.stdout


def test_a_clean_synthetic_dataset_passes(synth_root, capsys):
    assert main("python -m distill", "", ["distill.data.cli"],
                ["data", "check", "--kind", "culane", "--root", str(synth_root), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "32 samples checked" in out and ", 0 fatal" in out
