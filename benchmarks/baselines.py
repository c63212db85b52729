"""Baselines on the synthetic benchmark: the teacher and every student, each with its embedded-default recipe.

    python -m benchmarks.baselines [--data runs/kd/data] [--out runs/kd] [--models teacher enet erfnet ...]
                                   [--seed 0] [--eval-images 0]

Each model trains with ``recipes/synthetic_<name>.yaml`` as written (steps, optimiser, 96x256 input)
on the given synthetic data, is scored on its test split (F1 with the CULane protocol, mIoU over the
lane classes), and the table (F1, mIoU, parameters, seconds per training step) is printed and
written to ``<out>/baselines.json`` / ``.md``. The teacher goes to ``<out>/teacher`` (where the KD
table looks for it), students to ``<out>/baselines/<name>``; finished runs are reused.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks._runs import DATA, ensure_data, finished, recipe_steps, sec_per_step, train_recipe, write_outputs
from distill.checkpoint import model_from_checkpoint
from distill.validate import evaluate_checkpoint

MODELS = {"teacher": "synthetic_teacher.yaml", "enet": "synthetic_enet.yaml", "erfnet": "synthetic_erfnet.yaml",
          "resnet18": "synthetic_resnet18.yaml", "resnet34": "synthetic_resnet34.yaml",
          "mobilenetv2": "synthetic_mobilenetv2.yaml"}


def run(args: argparse.Namespace) -> list[dict]:
    out, data = Path(args.out), Path(args.data)
    ensure_data(data)
    rows = []
    for name in args.models:
        run_dir = out / "teacher" if name == "teacher" else out / "baselines" / name
        if args.report_only and not finished(run_dir, recipe_steps(MODELS[name])):
            continue
        ckpt = train_recipe(MODELS[name], run_dir, data, [f"seed={args.seed}"])
        scores = evaluate_checkpoint(str(ckpt), "culane", str(data), "test", max_images=args.eval_images)
        model, state = model_from_checkpoint(ckpt)
        row = {"name": name, "model": state["model_name"], "recipe": MODELS[name],
               "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "steps": int(state["step"]),
               "sec_per_step": sec_per_step(run_dir), **scores}
        rows.append(row)
        print(f"{name:<12} F1 {100 * row['f1']:.1f}  mIoU {100 * row['miou']:.1f}  {row['sec_per_step']:.2f} s/step",
              flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | recipe | params (M) | steps | F1 | precision | recall | mIoU | s/step |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} ({r['model']}) | {r['recipe']} | {r['params_m']:.2f} | {r['steps']} | "
                     f"{100 * r['f1']:.1f} | {100 * r['precision']:.1f} | {100 * r['recall']:.1f} | "
                     f"{100 * r['miou']:.1f} | {r['sec_per_step']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA), help="synthetic data (written there when missing)")
    ap.add_argument("--out", default="runs/kd")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-images", type=int, default=0, help="0 = the whole test split")
    ap.add_argument("--report-only", action="store_true", help="score the runs that finished; train nothing")
    args = ap.parse_args()
    rows = run(args)
    text = table(rows)
    print("\n" + text)
    write_outputs(Path(args.out), "baselines", rows, text)


if __name__ == "__main__":
    main()
