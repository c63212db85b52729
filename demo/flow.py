"""The whole lanekd flow on the embedded default, one step after another.

1 synthetic scenes + dashcam video, 2 teacher and baseline student, 3 distilled student,
4 evaluation, 5 ONNX FP32 / INT8 export (TensorRT where it imports), 6 the runtime on the video,
7 FP32 vs INT8 benchmark, 8 the report. Every step reuses what a previous run in the same output
folder finished (training resumes from its last checkpoint), so a second run is quick.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from distill.config import load_config

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


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
    timings: dict[str, float] = field(default_factory=dict)


STEPS = ["data", "teacher", "baseline", "distill", "evaluate", "export", "runtime", "bench", "report"]


def _step(s: DemoSettings, index: int, name: str, fn: Callable[[], Any]) -> Any:
    print(f"\n[{index}/{len(STEPS)}] {name}", flush=True)
    t0 = time.perf_counter()
    result = fn()
    s.timings[name] = time.perf_counter() - t0
    print(f"[{index}/{len(STEPS)}] {name}: done in {s.timings[name]:.1f} s", flush=True)
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


def train_recipe(s: DemoSettings, recipe: str, out: Path, steps: int, root: Path,
                 extra: list[str] | None = None) -> Path:
    from distill.train import train
    from distill.train_config import TrainConfig

    overrides = [f"out={out}", f"data.root={root}", f"steps={steps}", f"val_every={steps}",
                 f"ckpt_every={max(10, steps // 5)}", f"seed={s.seed}", *(extra or [])]
    # a finished run is resumed at its last step, so it is reused without training again
    train(load_config(TrainConfig, RECIPES / recipe, overrides))
    return out / "best.pt"


def evaluate(s: DemoSettings, root: Path, models: dict[str, Path]) -> dict[str, dict[str, float]]:
    from distill.validate import evaluate_checkpoint

    results = {}
    for name, ckpt in models.items():
        results[name] = evaluate_checkpoint(str(ckpt), "culane", str(root), "test", max_images=s.eval_images)
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
    scores = {name: task_scores(path, root, "test") for name, path in models.items()}
    for name, sc in scores.items():
        print(f"  {name:<9} F1 {100 * sc['f1']:.1f} (runtime post-processing, {sc['images']} test images)")
    return models, scores


def run_runtime(s: DemoSettings, model: Path, video: Path) -> dict[str, Any]:
    from runtime.pipeline import run

    return run(model, str(video), out=s.out / "annotated.mp4", jsonl=s.out / "lanes.jsonl",
               summary=s.out / "runtime_summary.json", threads=s.threads or None)


def benchmark(s: DemoSettings, models: dict[str, Path], video: Path) -> dict[str, Any]:
    from runtime.bench import bench

    return bench(list(models.values()), str(video), frames=s.bench_frames, warmup=5,
                 threads=s.threads or None, json_path=s.out / "bench.json", png_path=s.out / "bench.png")


def run_demo(s: DemoSettings) -> Path:
    """Run every step; return the report's path."""
    from demo.report import write_report

    s.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    root, video = _step(s, 1, "data", lambda: make_data(s))
    runs = s.out / "runs"
    teacher = _step(s, 2, "teacher", lambda: train_recipe(s, s.teacher_recipe, runs / "teacher", s.teacher_steps, root))
    baseline = _step(s, 3, "baseline", lambda: train_recipe(s, s.student_recipe, runs / "baseline",
                                                            s.student_steps, root))
    distilled = _step(s, 4, "distill", lambda: train_recipe(s, s.distill_recipe, runs / "distilled", s.student_steps,
                                                            root, [f"teacher.checkpoint={teacher}"]))
    ckpts = {"teacher": teacher, "baseline": baseline, "distilled": distilled}
    scores = _step(s, 5, "evaluate", lambda: evaluate(s, root, ckpts))
    models, export_scores = _step(s, 6, "export", lambda: export(s, distilled, root))
    summary = _step(s, 7, "runtime", lambda: run_runtime(s, models["int8"], video))
    bench_result = _step(s, 8, "bench", lambda: benchmark(s, models, video))
    report = _step(s, 9, "report", lambda: write_report(s, root, video, ckpts, scores, models,
                                                                  export_scores, summary, bench_result))
    total = time.perf_counter() - t0
    (s.out / "timings.json").write_text(json.dumps({**s.timings, "total": total}, indent=2))
    print(f"\ndemo finished in {total / 60:.1f} min; report: {report}")
    for r in bench_result["models"]:
        print(f"  {Path(r['model']).name}: {r['serial_fps']:.1f} FPS serial, "
              f"{r.get('pipelined_fps') or 0:.1f} FPS pipelined (whole pipeline on {video.name})")
    return report
