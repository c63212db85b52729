"""Hostile input for every distill / runtime / demo command: a short message naming the culprit,
a non-zero exit, no traceback, and nothing left behind.

Most cases call the commands' ``main(argv)`` in-process (same boundary, no 2 s torch import per
case); a representative few run as real subprocesses (``python -m ...``) to check exit codes and
traceback-free stderr end to end, and the interrupt cases send a real SIGINT.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from distill.data.sample import DataError
from runtime.cli import EXIT_BUG, EXIT_ERROR, describe_error, guarded, main, unwrap_worker_error

REPO = Path(__file__).resolve().parents[1]
DISTILL = ["distill.data.cli", "distill.train_cli", "distill.eval.cli", "distill.models.cli"]


def distill(*argv: str) -> int:
    return main("python -m distill", "", DISTILL, list(argv))


def runtime(*argv: str) -> int:
    return main("python -m runtime", "", ["runtime.commands"], list(argv))


def demo(*argv: str) -> int:
    from demo.__main__ import main as demo_main
    return demo_main(list(argv))


def leftovers(folder: Path) -> list[str]:
    """Temporary files (``.x.<pid>.tmp*``, ``*.tmp``) anywhere under ``folder``."""
    return sorted(str(p) for p in folder.rglob("*") if ".tmp" in p.name)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def art(tmp_path_factory) -> dict[str, Path]:
    """The bad files every case draws from, made once."""
    from runtime.standin import build_standin

    d = tmp_path_factory.mktemp("hostile")
    (d / "syntax.yaml").write_text("out: x\nmodel: {name: enet\n  kwargs: 1\n")
    (d / "unknown.yaml").write_text("out: x\nmodle: {name: enet}\n")
    (d / "binary.yaml").write_bytes(b"\xff\xfe\x00\x81garbage")
    torch.save({"weights": torch.zeros(2), "extra": Evil()}, d / "evil.pt")
    (d / "cut.pt").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    good = build_standin(d / "good.onnx")
    (d / "garbage.onnx").write_bytes(b"not an onnx model at all")
    shutil.copy(good.with_suffix(".json"), d / "garbage.json")
    # a model whose sidecar claims another class count
    shutil.copy(good, d / "other.onnx")
    side = json.loads(good.with_suffix(".json").read_text())
    side["outputs"][0]["shape"] = ["N", 7, 32, 96]
    (d / "other.json").write_text(json.dumps(side))
    # a model whose outputs are all NaN
    m = onnx.load(str(good))
    for init in m.graph.initializer:
        if init.name == "B":
            init.CopyFrom(numpy_helper.from_array(np.full(5, np.nan, np.float32), "B"))
    onnx.save(m, str(d / "nan.onnx"))
    shutil.copy(good.with_suffix(".json"), d / "nan.json")
    imgs = d / "imgs"
    imgs.mkdir()
    frame = np.random.default_rng(0).integers(0, 255, (72, 200, 3), dtype=np.uint8)
    for i in range(3):
        cv2.imwrite(str(imgs / f"{i}.jpg"), frame)
    truncate(imgs / "1.jpg")
    cut = d / "cut_imgs"
    cut.mkdir()
    cv2.imwrite(str(cut / "a.jpg"), frame)
    truncate(cut / "a.jpg")
    (d / "empty").mkdir()
    (d / "a_file").write_text("\n \n")
    files = {p.stem: p for p in d.iterdir() if p.is_file() and p.suffix != ".json"}
    return {"dir": d, **files, **{p.name: p for p in d.iterdir() if p.is_dir()}}


class Evil:
    """Pickles as a call to ``os.system``: a safe loader must refuse it without running it."""

    def __reduce__(self):
        return (os.system, ("echo PWNED",))


# ------------------------------------------------------------------------------------------------
# the table: (id, command, argv built from the artefacts, exit code, what stderr must name)
# ------------------------------------------------------------------------------------------------

def _eval_anno(d: Path) -> Path:
    root = d / "anno"
    if not root.is_dir():
        from runtime.lane_io import write_culane_lines
        write_culane_lines(root / "a/1.lines.txt", [[[10, 100], [20, 50]]])
        (d / "list.txt").write_text("/a/1.jpg\n")
    return root


CASES = [
    ("config-missing", distill, lambda a: ["train", "--config", str(a["dir"] / "nope.yaml")], 2, "nope.yaml"),
    ("config-yaml-syntax", distill, lambda a: ["train", "--config", str(a["syntax"])], 2, "syntax.yaml:3:"),
    ("config-unknown-key", distill, lambda a: ["train", "--config", str(a["unknown"])], 2, "modle"),
    ("config-binary", distill, lambda a: ["train", "--config", str(a["binary"])], 2, "binary.yaml"),
    ("config-bad-override", distill, lambda a: ["train", "--config", str(a["unknown"]), "--set", "steps"], 2,
     "'steps'"),
    ("override-bad-yaml", distill, lambda a: ["train", "--config", str(a["unknown"]), "--set", "a=[1,"], 2, "a=[1,"),
    ("device-not-here", distill, lambda a: ["train", "--config", str(a["dir"] / "dev.yaml")], 2, "cuda:99"),
    ("device-nonsense", distill, lambda a: ["train", "--config", str(a["dir"] / "dev2.yaml")], 2, "toaster"),
    ("eval-pred-root-missing", distill, lambda a: ["eval", "--metric", "culane", "--anno-root", str(_eval_anno(a["dir"])),
                                                   "--pred-root", str(a["dir"] / "nopred"), "--list",
                                                   str(a["dir"] / "list.txt")], 2, "nopred"),
    ("eval-pred-root-empty", distill, lambda a: ["eval", "--metric", "culane", "--anno-root", str(_eval_anno(a["dir"])),
                                                 "--pred-root", str(a["empty"]), "--list", str(a["dir"] / "list.txt")],
     2, "none of the 1 predictions"),
    ("eval-list-missing", distill, lambda a: ["eval", "--metric", "culane", "--anno-root", str(_eval_anno(a["dir"])),
                                              "--pred-root", str(a["empty"]), "--list", str(a["dir"] / "nolist.txt")],
     2, "nolist.txt"),
    ("eval-list-empty", distill, lambda a: ["eval", "--metric", "culane", "--anno-root", str(_eval_anno(a["dir"])),
                                            "--pred-root", str(a["empty"]), "--list", str(a["a_file"])], 2,
     "lists no image"),
    ("eval-list-binary", distill, lambda a: ["eval", "--metric", "culane", "--anno-root", str(_eval_anno(a["dir"])),
                                             "--pred-root", str(a["empty"]), "--list", str(a["binary"])], 2,
     "binary.yaml: not a text list file"),
    ("eval-split-dir-empty", distill, lambda a: ["eval", "--metric", "culane", "--anno-root", str(_eval_anno(a["dir"])),
                                                 "--pred-root", str(a["empty"]), "--split-dir", str(a["empty"])], 2,
     "lists no image"),
    ("eval-llamas-empty-pred", distill, lambda a: ["eval", "--metric", "llamas", "--anno-root", str(_eval_anno(a["dir"])),
                                                   "--pred-root", str(a["empty"])], 2, "no .lines.txt"),
    ("eval-tusimple-gt-missing", distill, lambda a: ["eval", "--metric", "tusimple", "--gt", str(a["dir"] / "gt.json"),
                                                     "--pred", str(a["a_file"])], 2, "gt.json"),
    ("eval-miou-pred-dir-missing", distill, lambda a: ["eval", "--metric", "miou", "--gt-dir", str(a["empty"]),
                                                       "--pred-dir", str(a["dir"] / "nod"), "--num-classes", "2"], 2,
     "nod"),
    ("synth-out-is-file", distill, lambda a: ["data", "synth", "--out", str(a["a_file"]), "--num", "1"], 2, "a_file"),
    ("check-root-missing", distill, lambda a: ["data", "check", "--kind", "culane", "--root", str(a["dir"] / "nodata")],
     2, "nodata"),
    ("check-no-split", distill, lambda a: ["data", "check", "--kind", "tusimple", "--root", str(a["empty"])], 2,
     "no tusimple split"),
    ("list-unknown-model", distill, lambda a: ["train", "--config", str(a["dir"] / "badmodel.yaml")], 2,
     "no_such_net"),
    ("model-kwarg-typo", distill, lambda a: ["train", "--config", str(a["dir"] / "kwarg.yaml")], 2, "'widht'"),
    ("method-param-typo", distill, lambda a: ["distill", "--config", str(a["dir"] / "param.yaml")], 2, "'betaa'"),
    ("teacher-unsafe-pickle", distill, lambda a: ["distill", "--config", str(a["dir"] / "teacher.yaml")], 2,
     "evil.pt: not a lanekd checkpoint"),
    ("eval-json-unwritable", distill, lambda a: ["eval", "--metric", "culane", "--anno-root", str(_eval_anno(a["dir"])),
                                                 "--pred-root", str(_eval_anno(a["dir"])), "--list",
                                                 str(a["dir"] / "list.txt"), "--json", "/proc/lanekd/r.json"], 2,
     "/proc/lanekd"),
    ("run-model-missing", runtime, lambda a: ["run", "--model", str(a["dir"] / "none.onnx"), "--source", str(a["imgs"])],
     2, "none.onnx"),
    ("run-model-garbage", runtime, lambda a: ["run", "--model", str(a["garbage"]), "--source", str(a["imgs"])], 2,
     "garbage.onnx"),
    ("run-sidecar-shape", runtime, lambda a: ["run", "--model", str(a["other"]), "--source", str(a["imgs"])], 2,
     "'probs' has shape"),
    ("run-source-missing", runtime, lambda a: ["run", "--model", str(a["good"]), "--source", str(a["dir"] / "no.mp4")],
     2, "no.mp4"),
    ("run-only-truncated-images", runtime, lambda a: ["run", "--model", str(a["good"]), "--source", str(a["cut_imgs"])],
     2, "truncated JPEG"),
    ("run-nan-model-jsonl", runtime, lambda a: ["run", "--model", str(a["nan"]), "--source", str(a["imgs"]),
                                                "--jsonl", str(a["dir"] / "nan_out" / "l.jsonl")], 2, "not a finite"),
    ("run-summary-is-folder", runtime, lambda a: ["run", "--model", str(a["good"]), "--source", str(a["imgs"]),
                                                  "--summary", str(a["empty"])], 2, "is a folder"),
    ("demo-video-out-folder", demo, lambda a: ["video", "--out", str(a["empty"]), "--seconds", "0.1",
                                               "--size", "96x64"], 2, "is a folder"),
]


@pytest.fixture(scope="module")
def configs(art) -> None:
    from distill.data.synth import SceneConfig, write_culane

    d = art["dir"]
    data = write_culane(d / "data", 4, cfg=SceneConfig(width=128, height=64), splits=(0.5, 0.5, 0), progress=False)
    base = {"out": str(d / "run"), "steps": 1, "model": {"name": "enet"},
            "data": {"root": str(data), "input_size": [32, 64], "batch_size": 2, "num_workers": 0}}
    recipes = {"kwarg": {"model": {"name": "enet", "kwargs": {"widht": 2}}},
               "param": {"methods": [{"name": "at", "weight": 1.0, "betaa": 3}]},
               "teacher": {"teacher": {"checkpoint": str(art["evil"])}, "methods": [{"name": "kd", "weight": 1.0}]}}
    for name, over in recipes.items():
        (d / f"{name}.yaml").write_text(json.dumps({**base, **over}))
    (d / "dev.yaml").write_text("out: x\ndevice: 'cuda:99'\n")
    (d / "dev2.yaml").write_text("out: x\ndevice: toaster\n")
    (d / "badmodel.yaml").write_text(f"out: {d / 'bm'}\nmodel: {{name: no_such_net}}\ndata: {{root: {d / 'nodata'}}}\n")


@pytest.mark.parametrize("name,cmd,argv,rc,culprit", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_gives_one_clear_line(name, cmd, argv, rc, culprit, art, configs, capsys):
    before = set(leftovers(art["dir"]))
    assert cmd(*argv(art)) == rc
    err = capsys.readouterr().err
    assert culprit in err, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert err.strip().splitlines()[-1].startswith("python -m") or "error:" in err, err
    assert set(leftovers(art["dir"])) == before


OPTION_CASES = [
    (distill, ["data", "synth", "--out", "x", "--num", "-1"], "--num: must be >= 1, got -1"),
    (distill, ["data", "synth", "--out", "x", "--workers", "0"], "--workers: must be >= 1"),
    (distill, ["data", "synth", "--out", "x", "--split", "0.5,0.5,0.5"], "summing to 1"),
    (distill, ["data", "synth", "--out", "x", "--size", "0x10"], "positive"),
    (distill, ["data", "check", "--kind", "culane", "--root", "x", "--first", "0"], "--first: must be >= 1"),
    (distill, ["data", "check", "--kind", "kitti", "--root", "x"], "invalid choice: 'kitti'"),
    (distill, ["eval", "--metric", "culane", "--iou", "1.5"], "--iou: must be >= 0 and <= 1, got 1.5"),
    (distill, ["eval", "--metric", "culane", "--workers", "0"], "--workers: must be >= 1"),
    (distill, ["eval", "--metric", "culane", "--width", "abc"], "expected an integer, got 'abc'"),
    (distill, ["eval", "--metric", "f1"], "invalid choice: 'f1'"),
    (demo, ["video", "--seconds", "0"], "--seconds: must be > 0, got 0"),
    (demo, ["video", "--fps", "-30"], "--fps: must be > 0"),
    (demo, ["video", "--fps", "nan"], "finite"),
    (demo, ["--scenes", "2"], "--scenes: must be >= 20"),
    (demo, ["--threads", "-1"], "--threads: must be >= 0"),
]


@pytest.mark.parametrize("cmd,argv,msg", OPTION_CASES, ids=[" ".join(c[1][:3]) for c in OPTION_CASES])
def test_option_values_are_checked_when_parsed(cmd, argv, msg, capsys):
    with pytest.raises(SystemExit) as ex:
        cmd(*argv)
    assert ex.value.code == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err, err


# ------------------------------------------------------------------------------------------------
# the boundary itself
# ------------------------------------------------------------------------------------------------

def test_a_bug_is_named_as_one_and_debug_shows_the_traceback(capsys, monkeypatch):
    def bug():
        return {}["missing"]

    monkeypatch.delenv("LANEKD_DEBUG", raising=False)
    assert guarded("prog", bug) == EXIT_BUG
    err = capsys.readouterr().err
    assert "internal error: KeyError" in err and "--debug" in err and "Traceback" not in err
    with pytest.raises(KeyError):
        guarded("prog", bug, debug=True)
    with pytest.raises(SystemExit):
        main("python -m distill", "", DISTILL, ["--help"])
    assert "LANEKD_DEBUG=1" in capsys.readouterr().out
    with pytest.raises(DataError):             # --debug anywhere on the line
        distill("data", "check", "--kind", "culane", "--debug", "--root", "/nonexistent/x")
    monkeypatch.setenv("LANEKD_DEBUG", "1")
    with pytest.raises(DataError):             # the traceback is back, also for expected errors
        distill("data", "check", "--kind", "culane", "--root", "/nonexistent/x")


def test_disk_errors_name_the_path_and_what_to_do():
    full = OSError(errno.ENOSPC, "No space left on device", "/data/out/model.onnx")
    assert describe_error(full) == "/data/out/model.onnx: no space left on the device (free some space or write elsewhere)"
    ro = PermissionError(errno.EACCES, "Permission denied", "/x.json")
    assert describe_error(ro) == "/x.json: permission denied (fix its permissions or choose another path)"
    assert describe_error(TypeError("unsupported operand")) is None
    assert guarded("prog", lambda: (_ for _ in ()).throw(KeyboardInterrupt())) == 130


def test_a_warning_is_one_line_for_the_user(capsys):
    import warnings

    assert guarded("prog", lambda: warnings.warn("list.txt: 2 lines cut short", stacklevel=1)) == 0
    assert capsys.readouterr().err == "prog: warning: list.txt: 2 lines cut short\n"


def test_a_library_s_long_error_text_is_cut_to_its_first_lines(capsys):
    from runtime.backends.base import BackendError

    long = BackendError("m.onnx: cannot load the model: Exception from core.cpp:84:\n" + "\n".join(
        f"frame {i}" for i in range(30)))
    assert guarded("prog", lambda: (_ for _ in ()).throw(long)) == EXIT_ERROR
    err = capsys.readouterr().err.splitlines()
    assert err == ["prog: error: m.onnx: cannot load the model: Exception from core.cpp:84:", "frame 0",
                   "  ... (29 more lines with --debug)"]


def test_dataloader_worker_errors_read_as_in_one_process(tmp_path):
    """A truncated image met by a DataLoader worker: torch re-raises it with the worker's whole
    traceback in the message; the boundary shows the reader's one line."""
    from distill.data.dataset import build_dataset, collate
    from distill.data.synth import SceneConfig, write_culane

    root = write_culane(tmp_path / "d", 2, cfg=SceneConfig(width=128, height=64), splits=(1, 0, 0), progress=False)
    name = (root / "list/train.txt").read_text().split()[0].lstrip("/")
    truncate(root / name)
    ds = build_dataset("culane", root, "train", (32, 64))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1, collate_fn=collate)
    with pytest.raises(Exception) as ex:
        next(iter(loader))
    assert "Original Traceback" in str(ex.value)
    kind, msg = unwrap_worker_error(ex.value)
    assert kind == "DataError" and msg == f"{root / name}: truncated JPEG (no end-of-image marker)"
    assert describe_error(ex.value) == msg
    # a bug in a worker is named by its own type and message, not torch's wrapper
    try:
        raise RuntimeError(f"Caught TypeError in DataLoader worker process 0.\nOriginal Traceback (most recent "
                           f"call last):\n  File \"x.py\", line 1, in f\nTypeError: bad operand")
    except RuntimeError as exc:
        assert describe_error(exc) is None
        assert guarded("prog", lambda: (_ for _ in ()).throw(exc)) == EXIT_BUG


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs: a real full disk (needs mount rights, as root in a container has)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root / CAP_SYS_ADMIN)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_full_disk_is_one_line_naming_the_output_and_leaves_nothing(full_disk, capsys):
    from distill.checkpoint import CheckpointError, save_checkpoint

    cases = [(distill, ["data", "synth", "--out", str(full_disk / "ds"), "--num", "20", "--size", "320x128"],
              f"{full_disk / 'ds'}: no space left on the device"),
             (demo, ["video", "--out", str(full_disk / "d.mp4"), "--seconds", "2", "--size", "320x128"],
              f"{full_disk / 'd.mp4'}: no space left on the device")]
    for cmd, argv, msg in cases:
        assert cmd(*argv) == EXIT_ERROR
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, err
        assert list(full_disk.iterdir()) == []
    with pytest.raises(CheckpointError, match="could not write the checkpoint.*MiB free there"):
        save_checkpoint(full_disk / "last.pt", {"w": torch.zeros(100_000)})
    assert list(full_disk.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# checkpoints, JSON writers, sources
# ------------------------------------------------------------------------------------------------

def test_a_pickle_the_safe_loader_refuses_is_called_unsafe_and_never_loaded_unsafely(art, capfd):
    from distill.checkpoint import CheckpointError, load_checkpoint

    with pytest.raises(CheckpointError) as ex:
        load_checkpoint(art["evil"])
    msg = str(ex.value)
    assert "not a lanekd checkpoint" in msg and "unsafe" in msg and "weights_only" not in msg
    assert "PWNED" not in capfd.readouterr().out
    with pytest.raises(CheckpointError, match="cut.pt: not a readable checkpoint"):
        load_checkpoint(art["cut"])


def test_json_writers_refuse_non_finite_numbers(tmp_path):
    from runtime.lane_writers import NonFiniteError, TuSimpleWriter, VideoLaneWriter
    from runtime.sinks import write_json

    with pytest.raises(NonFiniteError, match=r"s\.json: latency\.infer is not a finite number"):
        write_json(tmp_path / "s.json", {"frames": 3, "latency": {"infer": float("inf")}})
    assert not (tmp_path / "s.json").exists() and leftovers(tmp_path) == []
    w = VideoLaneWriter(tmp_path / "l.jsonl")
    w.write(0, 0.0, {1: np.array([[1.0, 2.0]])}, [0.9])
    with pytest.raises(NonFiniteError, match=r"line 2 \(frame 1\): lanes\.2\[0\]\[1\]"):
        w.write(1, 0.1, {2: np.array([[1.0, np.nan]])}, [0.9])
    w.close()
    assert [json.loads(line)["frame"] for line in (tmp_path / "l.jsonl").read_text().splitlines()] == [0]
    with TuSimpleWriter(tmp_path / "t.json") as t, pytest.raises(NonFiniteError, match="run_time"):
        t.write("a.jpg", [], [160, 170], float("nan"))


def test_a_truncated_image_is_a_corrupt_frame_named_in_the_summary(art, tmp_path, capsys):
    out = tmp_path / "s.json"
    assert runtime("run", "--model", str(art["good"]), "--source", str(art["imgs"]), "--summary", str(out)) == 0
    s = json.loads(out.read_text())
    assert s["frames"] == 2 and s["corrupt"] == 1
    assert s["source"]["corrupt_files"] == [f"{art['imgs'] / '1.jpg'}: truncated JPEG (no end-of-image marker)"]
    assert "corrupt: " in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------
# interrupts and stale temporaries
# ------------------------------------------------------------------------------------------------

def _interrupt(cmd: list[str], wait_for, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([sys.executable, *cmd], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    t0 = time.monotonic()
    while not wait_for() and proc.poll() is None and time.monotonic() - t0 < timeout:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_ctrl_c_in_data_synth_keeps_the_previous_dataset(tmp_path):
    from distill.data.synth import SceneConfig, write_culane

    out = write_culane(tmp_path / "ds", 2, cfg=SceneConfig(width=128, height=64), progress=False)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    res = _interrupt(["-m", "distill", "data", "synth", "--out", str(out), "--num", "5000", "--size", "128x64",
                      "--seed", "9", "--overwrite"],
                     lambda: any(p.name.startswith(".ds.") and any(p.rglob("*.jpg")) for p in tmp_path.iterdir()),
                     tmp_path)
    assert res.returncode == 130, res.stderr[-2000:]
    assert "interrupted" in res.stderr and "Traceback" not in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_ctrl_c_in_demo_video_keeps_the_previous_video(tmp_path):
    from demo.video import make_video, sidecar_path

    video = make_video(tmp_path / "drive.mp4", 0.2, 10, (96, 64), progress=False)
    before = video.read_bytes(), sidecar_path(video).read_bytes()
    res = _interrupt(["-m", "demo", "video", "--out", str(video), "--seconds", "600", "--size", "96x64"],
                     lambda: any(".tmp" in p.name and p.stat().st_size > 0 for p in tmp_path.iterdir()), tmp_path)
    assert res.returncode == 130, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drive.lanes.jsonl", "drive.mp4"]
    assert (video.read_bytes(), sidecar_path(video).read_bytes()) == before


def test_temporaries_of_a_killed_run_are_removed_and_named_by_the_next(tmp_path, capsys):
    from demo.video import make_video
    from distill.data.synth import SceneConfig, write_culane

    dead = 2 ** 22 + 12345          # above the default pid_max: no such process
    (tmp_path / f".drive.{dead}.tmp.mp4").write_bytes(b"half a video")
    (tmp_path / f".drive.{dead}.tmp.lanes.jsonl").write_text("{}\n")
    (tmp_path / f".ds.{dead}.tmp").mkdir()
    (tmp_path / f".ds.{dead}.tmp" / "x.jpg").write_bytes(b"x")
    make_video(tmp_path / "drive.mp4", 0.2, 10, (96, 64), progress=False)
    write_culane(tmp_path / "ds", 1, cfg=SceneConfig(width=128, height=64), progress=False)
    err = capsys.readouterr().err
    assert err.count("removed a temporary left by a killed run") == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drive.lanes.jsonl", "drive.mp4", "ds"]


# ------------------------------------------------------------------------------------------------
# skip_bad says what it skipped
# ------------------------------------------------------------------------------------------------

def test_skip_bad_training_prints_and_writes_what_it_skipped(tmp_path, capsys):
    from distill.data.synth import SceneConfig, write_culane

    root = write_culane(tmp_path / "d", 10, cfg=SceneConfig(width=128, height=64), splits=(0.8, 0.2, 0),
                        progress=False)
    train_names = [line.split()[0].lstrip("/") for line in (root / "list/train_gt.txt").read_text().splitlines()]
    truncate(root / train_names[0])
    (root / train_names[1]).unlink()                     # a list entry that does not exist
    cfg = {"out": str(tmp_path / "run"), "model": {"name": "enet"}, "steps": 2, "val_every": 0, "log_every": 1,
           "data": {"kind": "culane", "root": str(root), "input_size": [32, 64], "batch_size": 2, "num_workers": 1,
                    "options": {"skip_bad": True}}}
    (tmp_path / "cfg.yaml").write_text(json.dumps(cfg))
    torch.set_num_threads(1)
    assert distill("train", "--config", str(tmp_path / "cfg.yaml")) == 0
    err = capsys.readouterr().err
    assert "skip_bad: samples skipped" in err and "Traceback" not in err
    rep = json.loads((tmp_path / "run/skipped.json").read_text())
    assert rep["problems"]["missing"]["count"] == 1 and train_names[1] in rep["problems"]["missing"]["first"][0]
    assert rep["problems"]["image"]["count"] == 1 and "truncated JPEG" in rep["problems"]["image"]["first"][0]
    assert not (tmp_path / "run/.skipped").exists()


# ------------------------------------------------------------------------------------------------
# real subprocesses: exit codes and stderr end to end
# ------------------------------------------------------------------------------------------------

SUBPROCESS = [
    (["-m", "distill", "train", "--config", "{d}/syntax.yaml"], 2, "syntax.yaml:3:"),
    (["-m", "distill", "data", "synth", "--out", "{d}/s", "--num", "-3"], 2, "--num: must be >= 1"),
    (["-m", "runtime", "run", "--model", "{d}/garbage.onnx", "--source", "{d}/imgs"], 2, "garbage.onnx"),
    (["-m", "demo", "video", "--out", "{d}/empty"], 2, "is a folder"),
]


def test_commands_exit_cleanly_as_subprocesses(art):
    d = art["dir"]
    for cmd, rc, culprit in SUBPROCESS:
        argv = [a.format(d=d) for a in cmd]
        res = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=d, timeout=120,
                             env={**os.environ, "PYTHONPATH": str(REPO), "LANEKD_DEBUG": ""})
        assert res.returncode == rc, (argv, res.stderr[-2000:])
        assert culprit in res.stderr and "Traceback" not in res.stderr, (argv, res.stderr[-2000:])
        assert sum("error:" in line for line in res.stderr.splitlines()) == 1, res.stderr
