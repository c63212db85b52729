"""The whole lanekd flow on the embedded default, one step after another.

1 synthetic scenes + dashcam video, 2 the teacher (by default the kept checkpoint in
recipes/checkpoints/, which the teacher recipe produced with these settings: see demo.kept_teacher;
``teacher="train"`` trains it here), 3 baseline and distilled student (side by side, one process and
one torch thread each, or one after the other), 4 evaluation, 5 ONNX FP32 / INT8 export (TensorRT
where it imports), 6 the runtime on the video, 7 FP32 vs INT8 benchmark, 8 the report. Every step
reuses what a previous run in the same output folder finished (training resumes from its last
checkpoint; scores and the runtime's outputs are kept in ``cache/`` under the hashes of their
inputs), so a second run is quick; only the benchmark is measured again, since FPS is what a
second run is for.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from distill.config import load_config

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
KEPT_TEACHER = RECIPES / "checkpoints" / "synthetic_teacher_enet.pt"
TEACHER_MODES = ("auto", "kept", "train")


@dataclass
class DemoSettings:
    out: Path = Path("runs/demo")
    scenes: int = 480                  # synthetic scenes (80 / 10 / 10 % train / val / test)
    video_seconds: float = 6.0
    fps: int = 30
    teacher_steps: int = 600
    student_steps: int = 250
    eval_images: int = 48
    bench_frames: int = 60
    seed: int = 0
    threads: int = 0                   # 0 = let torch / ONNX Runtime decide
    student_recipe: str = "synthetic_enet.yaml"
    distill_recipe: str = "synthetic_distill_enet.yaml"
    teacher_recipe: str = "synthetic_teacher.yaml"
    teacher: str = "auto"              # auto: the kept checkpoint where it fits these settings | kept | train
    kept_teacher: Path = KEPT_TEACHER
    side_by_side: bool = True          # train baseline and distilled student at once, one thread each
    timings: dict[str, float] = field(default_factory=dict)
    loads: dict[str, float] = field(default_factory=dict)   # 1-minute load average at each step's end
    teacher_origin: str = ""           # for the report: where the teacher came from
    reused: list[str] = field(default_factory=list)   # results read back from cache/ (for the report)


def steps(s: DemoSettings) -> list[str]:
    students = ["students"] if s.side_by_side else ["baseline", "distill"]
    return ["data", "teacher", *students, "evaluate", "export", "runtime", "bench", "report"]


def _step(s: DemoSettings, name: str, fn: Callable[[], Any]) -> Any:
    names = steps(s)
    tag = f"[{names.index(name) + 1}/{len(names)}] {name}"
    print(f"\n{tag}", flush=True)
    t0 = time.perf_counter()
    result = fn()
    s.timings[name] = time.perf_counter() - t0
    s.loads[name] = os.getloadavg()[0]
    print(f"{tag}: done in {s.timings[name]:.1f} s (load average {s.loads[name]:.1f})", flush=True)
    return result


def make_data(s: DemoSettings) -> tuple[Path, Path]:
    from demo.video import make_video
    from distill.data.synth import write_culane

    root, video = s.out / "data", s.out / "drive.mp4"
    if not (root / "list" / "test.txt").is_file():
        write_culane(root, s.scenes, seed=s.seed, overwrite=True)
    else:
        print(f"  reusing {root}")
    if not video.is_file():
        make_video(video, s.video_seconds, s.fps, seed=s.seed)
    else:
        print(f"  reusing {video}")
    return root, video


def overrides(s: DemoSettings, out: Path, steps: int, root: Path, extra: list[str] | None = None) -> list[str]:
    """The demo's overrides of a recipe: its folders, budget and seed."""
    return [f"out={out}", f"data.root={root}", f"steps={steps}", f"val_every={steps}",
            f"ckpt_every={max(10, steps // 5)}", f"seed={s.seed}", *(extra or [])]


def train_recipe(s: DemoSettings, recipe: str, out: Path, steps: int, root: Path,
                 extra: list[str] | None = None) -> Path:
    from distill.train import train
    from distill.train_config import TrainConfig

    # a finished run is resumed at its last step, so it is reused without training again
    train(load_config(TrainConfig, RECIPES / recipe, overrides(s, out, steps, root, extra)))
    return out / "best.pt"


def finished(out: Path, steps: int) -> bool:
    """A run folder whose last checkpoint is at ``steps`` and which has its ``best.pt``: done."""
    from distill.checkpoint import load_checkpoint

    last = out / "last.pt"
    return (out / "best.pt").is_file() and last.is_file() and int(load_checkpoint(last).get("step", -1)) == steps


def train_side_by_side(s: DemoSettings, jobs: list[tuple[str, Path, list[str]]], root: Path) -> list[Path]:
    """Train ``(recipe, out, extra overrides)`` runs at once, each with ``python -m distill train`` in
    its own process with one torch thread (small models use a second thread poorly); output goes to
    ``<out>/train.log``. A run already finished is reused without starting a process. Ctrl-C stops
    them all, each saving its checkpoint."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = []
    for recipe, out, extra in jobs:
        if finished(out, s.student_steps):
            print(f"  reusing {out / 'best.pt'} ({s.student_steps} steps done)")
            continue
        out.mkdir(parents=True, exist_ok=True)
        args = [a for o in overrides(s, out, s.student_steps, root, extra) for a in ("--set", o)]
        with open(out / "train.log", "a") as log:         # a resumed or reused run adds to its log
            procs.append((subprocess.Popen([sys.executable, "-m", "distill", "train", "--config",
                                            str(RECIPES / recipe), *args], stdout=log, stderr=subprocess.STDOUT,
                                           env=env), out))
        print(f"  training {recipe} -> {out} (log: {out / 'train.log'})", flush=True)
    try:
        codes = [p.wait() for p, _ in procs]
    except KeyboardInterrupt:          # Ctrl-C reached them too; a signal to this process alone did not
        grace = time.monotonic() + 5
        for p, _ in procs:
            try:
                p.wait(timeout=max(0.0, grace - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p, _ in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p, _ in procs:
            p.wait()
        raise
    for code, (_, out) in zip(codes, procs):
        if code != 0:
            lines = (out / "train.log").read_text(errors="replace").strip().splitlines()
            raise RuntimeError(f"training {out} failed (exit {code}): {lines[-1] if lines else 'no output'}; "
                               f"see {out / 'train.log'}")
    return [out / "best.pt" for _, out, _ in jobs]


def resolve_teacher(s: DemoSettings) -> str:
    """``kept`` or ``train``: what ``s.teacher`` means here (``auto`` falls back to training, saying why)."""
    from demo.kept_teacher import mismatch

    if s.teacher not in TEACHER_MODES:
        raise ValueError(f"teacher: {s.teacher!r} is not one of {', '.join(TEACHER_MODES)}")
    if s.teacher == "train":
        return "train"
    why = mismatch(s, s.kept_teacher)
    if why is None:
        return "kept"
    if s.teacher == "kept":
        raise ValueError(f"the kept teacher does not fit these settings: {why}; use --teacher train")
    print(f"  the kept teacher does not fit these settings ({why}): training the teacher")
    return "train"


def get_teacher(s: DemoSettings, mode: str, root: Path) -> Path:
    """The kept checkpoint, copied into the run folder with its training curves, or a trained teacher."""
    from demo.kept_teacher import describe

    if mode == "train":
        s.teacher_origin = (f"The teacher was trained in this run folder from `recipes/{s.teacher_recipe}` "
                            f"({s.teacher_steps} steps, seed {s.seed}).")
        return train_recipe(s, s.teacher_recipe, s.out / "runs" / "teacher", s.teacher_steps, root)
    from distill.checkpoint import file_sha256, load_checkpoint
    from distill.plots import plot_curves

    dest = s.out / "runs" / "kept_teacher" / "best.pt"
    if not dest.is_file() or file_sha256(dest) != file_sha256(s.kept_teacher):
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(s.kept_teacher, dest)
        history = load_checkpoint(dest).get("history") or []
        if history:
            plot_curves(history, dest.parent / "curves.png")
    else:
        print(f"  reusing {dest}")
    print(f"  the kept teacher {s.kept_teacher} (python -m demo.kept_teacher made it)")
    s.teacher_origin = describe(s.kept_teacher)
    return dest


def check_distilled_teacher(run: Path, teacher: Path) -> None:
    """A distilled run folder is resumed or reused only with the teacher it started with: its sha256
    is stamped in ``<run>/teacher.sha256`` (a run from before the stamp: the teacher path in its
    config.yaml)."""
    import yaml

    from distill.checkpoint import file_sha256

    stamp, sha = run / "teacher.sha256", file_sha256(teacher)
    if stamp.is_file():
        same = stamp.read_text().strip() == sha
    elif (run / "last.pt").is_file() and (run / "config.yaml").is_file():
        cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
        same = Path(str((cfg.get("teacher") or {}).get("checkpoint"))).resolve() == teacher.resolve()
    else:
        same = not (run / "last.pt").is_file()
    if not same:
        raise ValueError(f"{run} was distilled from another teacher than {teacher}; "
                         f"remove {run} or use another --out")
    run.mkdir(parents=True, exist_ok=True)
    stamp.write_text(sha + "\n")


def reused(s: DemoSettings, name: str, key: dict[str, Any], fn: Callable[[], Any],
           needs: tuple[Path, ...] = ()) -> Any:
    """``fn()``'s result, kept as JSON in ``<out>/cache/<name>.json`` with the ``key`` it was computed
    for (hashes of its input files, its settings): a second run with the same key (and the files in
    ``needs`` still there) reads it back instead of computing it again."""
    from runtime.sinks import write_json

    path = s.out / "cache" / f"{name}.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = None
    if isinstance(saved, dict) and saved.get("key") == key and all(p.is_file() for p in needs):
        print(f"  reusing {path} (same inputs)")
        s.reused.append(name)
        return saved["value"]
    value = fn()
    write_json(path, {"key": key, "value": value})
    return value


def _test_split_key(root: Path, path: Path, images: int) -> dict[str, Any]:
    """What a score of ``path`` on the first ``images`` test images (0 = all) depends on."""
    from distill.checkpoint import file_sha256

    return {"file": file_sha256(path), "test_list": file_sha256(root / "list" / "test.txt"), "images": images}


def evaluate(s: DemoSettings, root: Path, models: dict[str, Path]) -> dict[str, dict[str, float]]:
    from distill.validate import evaluate_checkpoint

    results = {}
    for name, ckpt in models.items():
        results[name] = reused(s, f"evaluate_{name}", _test_split_key(root, ckpt, s.eval_images),
                               lambda: evaluate_checkpoint(str(ckpt), "culane", str(root), "test",
                                                           max_images=s.eval_images))
        print(f"  {name:<10} F1 {100 * results[name]['f1']:.1f}  mIoU {100 * results[name]['miou']:.1f}")
    return results


def export(s: DemoSettings, ckpt: Path, root: Path) -> tuple[dict[str, Path], dict[str, dict[str, float]]]:
    """ONNX FP32 and INT8 (and a TensorRT engine where TensorRT imports), each scored on the test
    split through the runtime, so the report shows what quantisation costs in F1."""
    from export.accuracy import task_scores
    from export.onnx import export_onnx
    from export.quantize import quantize_int8

    out = s.out / "export"
    out.mkdir(parents=True, exist_ok=True)
    fp32, int8 = out / "student_fp32.onnx", out / "student_int8.onnx"
    if not fp32.is_file():
        export_onnx(ckpt, fp32, quiet=False)
    if not int8.is_file():
        quantize_int8(fp32, int8, frames="synthetic", quiet=False)
    models = {"fp32": fp32, "int8": int8}
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        print("  TensorRT is not installed here: no engine built (pip install .[gpu] on a GPU machine)")
    else:
        from export.quantize import quantize_fp16
        from export.tensorrt import build_engine

        fp16, engine = out / "student_fp16.onnx", out / "student_fp16.engine"
        if not fp16.is_file():
            quantize_fp16(fp32, fp16, quiet=False)       # TensorRT 10/11 take the precision from the ONNX
        if not engine.is_file():
            build_engine(fp16, engine)
        models["trt_fp16"] = engine
    scores = {name: reused(s, f"runtime_f1_{name}", _test_split_key(root, path, 0),
                           lambda: task_scores(path, root, "test")) for name, path in models.items()}
    for name, sc in scores.items():
        print(f"  {name:<9} F1 {100 * sc['f1']:.1f} (runtime post-processing, {sc['images']} test images)")
    return models, scores


def run_runtime(s: DemoSettings, model: Path, video: Path) -> dict[str, Any]:
    from distill.checkpoint import file_sha256
    from runtime.pipeline import run

    outs = (s.out / "annotated.mp4", s.out / "lanes.jsonl", s.out / "runtime_summary.json")
    key = {"model": file_sha256(model), "video": file_sha256(video), "threads": s.threads}
    return reused(s, "runtime", key, lambda: run(model, str(video), out=outs[0], jsonl=outs[1], summary=outs[2],
                                                threads=s.threads or None), needs=outs)


def benchmark(s: DemoSettings, models: dict[str, Path], video: Path) -> dict[str, Any]:
    from runtime.bench import bench

    # every exported file on every backend that takes it here; the report names the fastest
    return bench(list(models.values()), str(video), frames=s.bench_frames, warmup=5,
                 threads=s.threads or None, json_path=s.out / "bench.json", png_path=s.out / "bench.png",
                 backends="all", rounds=2)


def run_demo(s: DemoSettings) -> Path:
    """Run every step; return the report's path."""
    from demo.report import write_report

    s.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    mode = resolve_teacher(s)
    runs = s.out / "runs"
    root, video = _step(s, "data", lambda: make_data(s))
    teacher = _step(s, "teacher", lambda: get_teacher(s, mode, root))
    check_distilled_teacher(runs / "distilled", teacher)
    base_job = (s.student_recipe, runs / "baseline", [])
    kd_job = (s.distill_recipe, runs / "distilled", [f"teacher.checkpoint={teacher}"])
    if s.side_by_side:
        baseline, distilled = _step(s, "students", lambda: train_side_by_side(s, [base_job, kd_job], root))
    else:
        baseline = _step(s, "baseline", lambda: train_recipe(s, base_job[0], base_job[1], s.student_steps, root))
        distilled = _step(s, "distill", lambda: train_recipe(s, kd_job[0], kd_job[1], s.student_steps, root,
                                                             kd_job[2]))
    ckpts = {"teacher": teacher, "baseline": baseline, "distilled": distilled}
    scores = _step(s, "evaluate", lambda: evaluate(s, root, ckpts))
    models, export_scores = _step(s, "export", lambda: export(s, distilled, root))
    summary = _step(s, "runtime", lambda: run_runtime(s, models["int8"], video))
    bench_result = _step(s, "bench", lambda: benchmark(s, models, video))
    report = _step(s, "report", lambda: write_report(s, root, video, ckpts, scores, models,
                                                      export_scores, summary, bench_result))
    total = time.perf_counter() - t0
    (s.out / "timings.json").write_text(json.dumps({"seconds": {**s.timings, "total": total},
                                                    "load_average_1min": s.loads, "teacher": mode,
                                                    "side_by_side": s.side_by_side}, indent=2))
    print(f"\ndemo finished in {total / 60:.1f} min; report: {report}")
    for r in bench_result["models"]:
        print(f"  {Path(r['model']).name} on {r['backend']['backend']}: {r['serial_fps']:.1f} FPS serial, "
              f"{r.get('pipelined_fps') or 0:.1f} FPS pipelined (whole pipeline on {video.name})")
    return report
