"""FP32 vs post-training INT8 vs QAT INT8 (with and without KD during QAT) on the embedded default.

    python -m benchmarks.bench_qat --checkpoint runs/culane/enet/best.pt --root data/CULane \\
        [--target cpu] [--steps 60] [--seeds 0 1 2]

From one trained FP32 student: its FP32 ONNX, the post-training INT8 Q/DQ file (``export.quantize``,
calibrated on the same training frames QAT calibrates on), and per seed a QAT run without KD and
one with logit KD against the FP32 student (``distill.qat``), and with ``--teacher`` one with CWD
from the student's own (FP32) teacher, each exported with ``export.qat``.
Every file is scored through the runtime (``export.accuracy.task_scores``: runtime pre-processing,
ONNX Runtime on the CPU, runtime lane decoding, CULane protocol) on the test split, and timed on
ONNX Runtime's CPU provider (median ms per frame, one thread, in interleaved rounds). Prints a table and writes
benchmarks/out/bench_qat_<target>.{json,md}. QAT runs are kept in ``--work`` and resume if cut short.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from benchmarks._runs import write_outputs

OUT = Path(__file__).resolve().parent / "out"
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "culane_enet_qat.yaml"


def split_frames(root: Path, k: int, split: str = "train") -> list:
    """The first ``k`` frames (BGR) of a split: training frames calibrate, validation frames verify."""
    import cv2

    lines = (root / "list" / f"{split}.txt").read_text().split()
    return [cv2.imread(str(root / line.lstrip("/"))) for line in lines[:k]]


def latencies_ms(paths: list[Path], frames: list, rounds: int = 7, iters: int = 15) -> list[float]:
    """Median ms per frame of each file on ONNX Runtime's CPU provider (one thread), timed in
    interleaved rounds so that a load change on a shared machine hits every file alike."""
    from benchmarks.bench_export import _time
    from export.verify import OrtRunner, model_inputs
    from runtime.metadata import ModelMeta, sidecar_path

    runs = [(OrtRunner(p, threads=1), model_inputs(ModelMeta.load(sidecar_path(p)), frames)) for p in paths]
    times: list[list[float]] = [[] for _ in paths]
    for r in range(rounds):
        for i in range(len(runs)):
            j = (i + r) % len(runs)           # each round starts with a different file
            times[j].append(_time(runs[j][0], runs[j][1], 3, iters))
    return [statistics.median(t) for t in times]


def qat_variants(args: argparse.Namespace) -> dict[str, tuple[str, list[str]]]:
    """Run name -> (row label, recipe overrides): QAT without KD, with the recipe's default logit KD
    against the FP32 student, and (``--teacher``) with CWD from the student's own teacher."""
    variants = {"nokd": ("INT8 QAT", ["methods=[]"]), "kd": ("INT8 QAT + KD", [])}
    if args.teacher:
        variants["teacher"] = ("INT8 QAT + CWD from the teacher",
                               [f"teacher={{checkpoint: {args.teacher}}}", "methods=[{name: cwd}]"])
    return variants


def qat_run(args: argparse.Namespace, seed: int, variant: str, overrides: list[str]) -> Path:
    """One QAT run (resumed if its folder holds a cut one), exported; returns the ONNX path."""
    from distill.qat import load_qat_config, qat
    from export.qat import export_qat

    out = args.work / f"qat_{args.target}_{variant}_s{seed}"
    sets = [f"out={out}", f"qat.student={args.checkpoint}", f"qat.target={args.target}", f"data.root={args.root}",
            f"steps={args.steps}", "val_every=0", f"ckpt_every={max(5, args.steps // 4)}", f"seed={seed}",
            f"qat.calib_images={args.calib_images}", "data.num_workers=0", *overrides]
    cfg = load_qat_config(RECIPE, sets)
    qat(cfg, quiet=True)
    onnx_path = out / "model_int8.onnx"
    if not onnx_path.is_file():
        export_qat(out / "last.pt", onnx_path, frames=split_frames(args.root, 8, "val"), verify_frames=8)
    return onnx_path


def score(path: Path, root: Path) -> dict:
    from export.accuracy import task_scores

    return {**task_scores(path, root, "test"), "file": str(path)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=Path("runs/culane/enet/best.pt"))
    p.add_argument("--root", type=Path, default=Path("data/CULane"),
                   help="CULane-layout data set: the student's training data (QAT fine-tunes and calibrates on it)")
    p.add_argument("--test-root", type=Path, default=None,
                   help="the data set whose test split scores every file (default: --root); a larger held-out "
                        "set than the student's own test split narrows the F1 noise")
    p.add_argument("--target", choices=("cpu", "tensorrt"), default="cpu")
    p.add_argument("--steps", type=int, default=60, help="QAT fine-tuning steps per run")
    p.add_argument("--calib-images", type=int, default=64)
    p.add_argument("--teacher", type=Path, default=None,
                   help="the student's teacher checkpoint: adds QAT runs with CWD from it (as the distilled recipe)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--work", type=Path, default=Path("runs/bench_qat"))
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    args.test_root = args.test_root or args.root
    for path in (args.checkpoint, args.root, args.test_root, *([args.teacher] if args.teacher else [])):
        if not path.exists():
            p.error(f"{path} not found")
    from export.onnx import export_onnx
    from export.quantize import quantize_int8

    args.work.mkdir(parents=True, exist_ok=True)
    frames = split_frames(args.root, args.calib_images)
    fp32 = args.work / "fp32.onnx"
    if not fp32.is_file():
        export_onnx(args.checkpoint, fp32)
    ptq = args.work / f"ptq_{args.target}.onnx"
    if not ptq.is_file():
        quantize_int8(fp32, ptq, frames, target=args.target, calib_frames=len(frames), verify_frames=0)
    rows = [{"model": "FP32", "seed": None, **score(fp32, args.test_root)},
            {"model": f"INT8 post-training ({args.target})", "seed": None, **score(ptq, args.test_root)}]
    for seed in args.seeds:
        for variant, (label, overrides) in qat_variants(args).items():
            path = qat_run(args, seed, variant, overrides)
            rows.append({"model": f"{label} ({args.target})", "seed": seed, **score(path, args.test_root)})
    for row, ms in zip(rows, latencies_ms([Path(r["file"]) for r in rows], frames[:8])):
        row["latency_ms"] = ms
    table = summary_table(rows, args)
    print(table)
    data = {"rows": rows, "steps": args.steps, "target": args.target, "seeds": args.seeds,
            "checkpoint": str(args.checkpoint), "root": str(args.root),
            "test_root": str(args.test_root), "teacher": str(args.teacher or "")}
    write_outputs(args.out, f"bench_qat_{args.target}", data, table)
    return 0


def summary_table(rows: list[dict], args: argparse.Namespace) -> str:
    """One line per model: mean F1 over seeds (and the spread), F1 change against FP32, latency."""
    base = rows[0]["f1"]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["model"], []).append(r)
    lines = [f"QAT benchmark: {args.checkpoint}, {rows[0]['images']} test images, {args.steps} QAT steps, "
             f"seeds {args.seeds}",
             "| model | seeds | F1 | dF1 vs FP32 | F1 min-max | precision | recall | CPU ms (ORT, 1 thread) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, rs in groups.items():
        f1 = [100 * r["f1"] for r in rs]
        mean = statistics.mean(f1)
        lines.append(f"| {name} | {len(rs) if rs[0]['seed'] is not None else '-'} | {mean:.1f} | "
                     f"{mean - 100 * base:+.1f} | {min(f1):.1f}-{max(f1):.1f} | "
                     f"{100 * statistics.mean(r['precision'] for r in rs):.1f} | "
                     f"{100 * statistics.mean(r['recall'] for r in rs):.1f} | "
                     f"{statistics.median(r['latency_ms'] for r in rs):.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
