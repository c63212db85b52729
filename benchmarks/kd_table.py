"""The KD table: every method against the baseline on the synthetic benchmark, same budget, several seeds.

    python -m benchmarks.kd_table [--setup gap|same-size] [--students enet erfnet] [--seeds 0 1 2]
                                  [--steps N] [--val-every N] [--methods baseline kd skd ...] [--jobs 2]

On the benchmark's data set (880 synthetic scenes, 176 test images; written when missing) a teacher
is trained once (or reused), LGAD's label teacher once per student family, then every (student,
method, seed) run trains for the same number of steps and is scored on the test split (F1 with the
CULane protocol, mIoU over the lane classes). Three setups (``SETUPS``):

- ``gap`` (default): the teacher is an ENet trained 1200 steps at 96x256 (test F1 86); the students
  read the same frames at 48x128 and train 1600 steps (their baseline is 13.5 F1 below the teacher
  there, but still rising: 76.6 at 3200 steps, 79.1 at 6400), the teacher reading its own size with
  its logits resized to theirs. Runs validate on 240 extra scenes (``ensure_val_split``).
- ``gap32``: trained 6400 steps the 48x128 baseline reaches 79 F1, too close to that teacher; here
  the teacher is the same ENet trained 2400 steps (test F1 87.2) and the students read 32x88 (the
  labels at that size, decoded as a prediction, still score 98.4), 6400 steps.
- ``same-size``: the first table: teacher and students at 96x256, the teacher the student
  architecture trained 2.4x longer, 250 steps.

Every run validates every ``--val-every`` steps (default: a tenth of the run), so it has a curve
(``kd_curves``). Prints a Markdown table (mean ± std over seeds, gain over the baseline, step time
relative to the baseline, F1 at the baseline's training time), under it whether each baseline
converged (F1 moves less than 1 point over the last fifth of the run) and whether plain logit/feature
KD beat the specialised methods at equal time; writes ``<out>/kd_table.json`` and
``<out>/kd_table.md``. The step times are measured side by side in this process after training
(``step_ratios``), not read from the runs' logs, which record whatever else shared the machine.

Finished runs are reused, so the table can be built up over sessions. ``--jobs N`` trains the runs
in N processes side by side, the methods shared out by cost (on a 2-core CPU, two single-threaded
processes train 1.6x the runs per hour of one two-threaded process); the table is then scored in
this process. ``--report-only`` scores what has finished and trains nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks._runs import (DATA, RECIPES, ensure_data, ensure_val_split, finished, sec_per_step, train_recipe,
                              write_outputs)
from benchmarks.kd_curves import convergence, equal_time_step, f1_at_step, tail_start, tail_trend, val_curve
from distill.checkpoint import load_checkpoint
from distill.config import load_config
from distill.train import Trainer
from distill.train_config import TrainConfig
from distill.validate import evaluate_checkpoint

# name -> methods list ({"name": ..., kwargs}); "{label_teacher}" is filled in per student family.
METHODS: dict[str, list[dict[str, Any]]] = {
    "baseline": [],
    "kd": [{"name": "kd", "T": 1.0}],
    "fitnet": [{"name": "fitnet", "s_tap": "stage3", "t_tap": "decoder"}, {"name": "kd"}],
    "at": [{"name": "at", "s_tap": "stage3", "t_tap": "decoder"}, {"name": "kd"}],
    "sad": [{"name": "sad", "pairs": [["stage1", "stage2"], ["stage2", "stage3"]], "warmup": 0.4}],
    "cwd": [{"name": "cwd"}],
    "ifvd": [{"name": "ifvd", "s_tap": "stage3", "t_tap": "decoder"}, {"name": "kd"}],
    "dsd": [{"name": "dsd"}],
    # the authors distil 1/8-resolution logits (at full resolution the WGAN-GP discriminator costs 2 s
    # a step on a CPU); the pixel term's weight is its scaled default, lambda_pi = 10 per image
    "skd": [{"name": "skd_pixel", "logits_scale": 0.125}, {"name": "skd_pair", "s_tap": "stage3", "t_tap": "decoder"},
            {"name": "skd_holistic", "variant": "wgan-gp", "logits_scale": 0.5, "d_l4": False}],
    # bank sizes: the scaled defaults (the authors' age in steps at 8 images a step: 10000 / 1000)
    "cirkd+kd": [{"name": "kd"}, {"name": "cirkd", "s_tap": "stage3", "t_tap": "decoder"}],
    "cirkd_channel+kd": [{"name": "kd"}, {"name": "cirkd_channel", "s_tap": "stage3", "t_tap": "decoder"}],
    "intra_kd+kd": [{"name": "kd"}, {"name": "intra_kd", "s_tap": "stage3", "t_tap": "decoder"}],
    "lgad": [{"name": "lgad", "label_teacher_checkpoint": "{label_teacher}", "stages": ["stage1", "stage2", "stage3"]}],
}
# What was tried on the methods that stay below the baseline (``--methods NAME``; not in the default
# table): the whole method switched on after 40% of the run, the warm-up SAD's authors use
# (``start``, which every method takes), SKD without its GAN term, IntRA-KD without the logit KD.
WARMUP = 0.4
VARIANTS: dict[str, list[dict[str, Any]]] = {
    f"{m}@start{WARMUP}": [{**part, "start": WARMUP} for part in METHODS[m]]
    for m in ("kd", "fitnet", "ifvd", "dsd", "skd", "intra_kd+kd", "lgad")}
VARIANTS["skd-holistic"] = METHODS["skd"][:2]
# the authors' lambda_pi = 10 on the batch-summed pixel term (8x its scaled default at 8 images a
# step): the first table's "skd" row
VARIANTS["skd_authors_pixel_weight"] = [{**METHODS["skd"][0], "weight": 10.0}, *METHODS["skd"][1:]]
# even per image SKD's pixel term pulls 9x as hard as the task loss at start-up (gap setup): scaled
# to half of it (weight: auto), the pair-wise and GAN terms as they are
VARIANTS["skd-pixel_auto"] = [{**METHODS["skd"][0], "weight": "auto", "share": 0.5}, *METHODS["skd"][1:]]
VARIANTS["intra_kd"] = METHODS["intra_kd+kd"][1:]
# LGAD's own teacher sees labels, not images: with the big teacher's logit KD beside it, as IntRA-KD
# and CIRKD run here, so that "lgad+kd" against "kd" says what the attention term adds
VARIANTS["lgad+kd"] = [{"name": "kd"}, *METHODS["lgad"]]
RUNS = {**METHODS, **VARIANTS}
# compared at the baseline's training time: plain logit and feature KD against the specialised losses
PLAIN = ("kd", "fitnet", "cwd")
SPECIALISED = ("cirkd+kd", "cirkd_channel+kd", "intra_kd+kd", "lgad", "skd", "sad", "ifvd", "dsd", "at")
STUDENT_RECIPES = {"enet": "synthetic_enet.yaml", "erfnet": "synthetic_erfnet.yaml"}


@dataclass(frozen=True)
class Setup:
    """Who teaches whom: the teacher's recipe and budget, the students' input size and validation split."""

    teacher_recipe: str
    teacher_steps: int
    student_size: tuple[int, int] | None     # None: the student recipe's (96x256), the teacher's too
    long_val: bool                           # validate on the 240-image split (ensure_val_split)
    steps: int                               # default student budget
    out: str
    method_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)   # method name -> settings

    def adapt(self, methods: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``methods`` with this setup's settings for the named methods."""
        return [{**m, **self.method_kwargs.get(m["name"], {})} for m in methods]


# students read a fraction of the teacher's pixels: SKD's terms read the logits at the authors' sizes
# relative to their 64x64 (1/8 of a 512 crop): the pixel term at half the student's size, D at full
# size (it needs 32 px a side: 48x128 and 32x88 both have them)
SKD_SMALL_STUDENT = {"skd_pixel": {"logits_scale": 0.5}, "skd_holistic": {"logits_scale": 1.0}}
SETUPS = {
    # the capacity gap: an ENet trained 1200 steps at 96x256 teaches students that see the same
    # frames at 48x128 (a quarter of the pixels); its logits are resized to theirs
    "gap": Setup("synthetic_enet.yaml", 1200, (48, 128), True, 1600, "runs/kd_gap", SKD_SMALL_STUDENT),
    # the gap at convergence: trained 6400 steps, a 48x128 student reaches 79 F1, 7 under the 1200-step
    # teacher; at 32x88 (a ninth of the teacher's pixels; the labels at that size still score 98.4)
    # the student learns from the 2400-step teacher (test F1 87.2)
    "gap32": Setup("synthetic_enet.yaml", 2400, (32, 88), True, 6400, "runs/kd_gap32", SKD_SMALL_STUDENT),
    # the first table: teacher = the student architecture trained 2.4x longer, same input size
    "same-size": Setup("synthetic_teacher.yaml", 600, None, False, 250, "runs/kd"),
}


def student_overrides(setup: Setup, data: Path) -> list[str]:
    """The config overrides every student run (and label teacher) of ``setup`` gets."""
    extra = [f"data.input_size=[{setup.student_size[0]},{setup.student_size[1]}]"] if setup.student_size else []
    if setup.long_val:
        extra.append(f"data.val_split={ensure_val_split(data)}")
    return extra


def teacher_input(setup: Setup | None) -> list[int] | None:
    """The teacher's own input size when the students read another one."""
    if setup is None or setup.student_size is None:
        return None
    return list(load_config(TrainConfig, RECIPES / setup.teacher_recipe).data.input_size)


def run(args: argparse.Namespace) -> dict[str, Any]:
    out, data, setup = Path(args.out), Path(args.data), SETUPS[args.setup]
    ensure_data(data)
    if args.report_only and not finished(out / "teacher", args.teacher_steps):
        raise SystemExit(f"--report-only: no finished teacher in {out / 'teacher'}")
    teacher = train_recipe(setup.teacher_recipe, out / "teacher", data, steps=args.teacher_steps)
    common = student_overrides(setup, data)
    results: dict[str, Any] = {"teacher": evaluate_checkpoint(str(teacher), "culane", str(data), "test",
                                                              max_images=args.eval_images),
                               "teacher_model": load_checkpoint(teacher)["model_name"], "rows": []}
    for student in args.students:
        recipe = STUDENT_RECIPES[student]
        label_teacher = None
        for method in args.methods:
            if "{label_teacher}" in json.dumps(RUNS[method]) and label_teacher is None:
                label_teacher = out / f"{student}_label_teacher" / "last.pt"
                if not args.report_only:
                    train_recipe(recipe, label_teacher.parent, data, ["label_teacher=true", *common], steps=args.steps)
            for seed in args.seeds:
                run_dir = out / student / method / f"seed{seed}"
                if args.report_only and not finished(run_dir, args.steps):
                    continue
                extra = [f"seed={seed}", *common, *run_overrides(method, teacher, label_teacher, setup)]
                ckpt = train_recipe(recipe, run_dir, data, extra, steps=args.steps, val_every=args.val_every)
                scores = evaluate_checkpoint(str(ckpt), "culane", str(data), "test", max_images=args.eval_images)
                row = {"student": student, "method": method, "seed": seed, **scores,
                       "sec_per_step": sec_per_step(run_dir), "steps": args.steps, "curve": val_curve(run_dir)}
                results["rows"].append(row)
                print(f"{student:<7} {method:<12} seed {seed}: F1 {100 * scores['f1']:.1f}  "
                      f"mIoU {100 * scores['miou']:.1f}  {row['sec_per_step']:.2f} s/step", flush=True)
        done = [m for m in args.methods if any(r["student"] == student and r["method"] == m for r in results["rows"])]
        if args.timing_rounds and "baseline" in done:
            results.setdefault("step_ratio", {})[student] = step_ratios(
                recipe, done, teacher, label_teacher, data, out / "timing", args.timing_rounds, common, setup)
    annotate(results)
    return results


def run_overrides(method: str, teacher: Path, label_teacher: Path | None, setup: Setup | None = None) -> list[str]:
    """The config overrides that turn a student recipe into the run of ``method`` in ``setup``."""
    methods = json.loads(json.dumps(RUNS[method]).replace("{label_teacher}", str(label_teacher)))
    methods = setup.adapt(methods) if setup else methods
    extra = [f"methods={json.dumps(methods)}"]
    teacher_size = teacher_input(setup)
    if any(m["name"] not in ("sad", "lgad") for m in methods):
        size = f", input_size: [{teacher_size[0]}, {teacher_size[1]}]" if teacher_size else ""
        extra.append(f"teacher={{checkpoint: {teacher}{size}}}")
    return extra


def step_ratios(recipe: str, methods: list[str], teacher: Path, label_teacher: Path | None, data: Path,
                scratch: Path, rounds: int, overrides: list[str] = (), setup: Setup | None = None) -> dict[str, float]:
    """Seconds per training step of each method over the baseline's, timed side by side here.

    Every method's Trainer is built on the same batch; ``rounds`` rounds then time one step of each in
    turn (so a change in the machine's load hits all of them alike; each round starts one method
    later, so none is always first after the heaviest), after one untimed warm-up round;
    the median per method over the baseline's. Every method is timed switched on (at the run's last
    step), so SAD's and the ``start`` variants' ratio is their cost once on, not averaged over the run.
    """
    trainers = {}
    for m in methods:
        sets = [f"out={scratch / m}", f"data.root={data}", "data.num_workers=0", "resume=never",
                *run_overrides(m, teacher, label_teacher, setup), *overrides]
        trainer = Trainer(load_config(TrainConfig, RECIPES / recipe, sets), quiet=True)
        trainer.step = trainer.cfg.steps - 1
        trainers[m] = trainer
    # one batch for all: from a run whose teacher reads its own input size when there is one (its
    # batch also carries ``teacher_image``; the others ignore it)
    source = next((t for t in trainers.values() if t.teacher_size is not None), trainers[methods[0]])
    batch = next(iter(source.loader))
    sync = torch.cuda.synchronize if trainers[methods[0]].device.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(rounds + 1):
        for m in methods[r % len(methods):] + methods[:r % len(methods)]:  # no method always goes first
            sync()
            t0 = time.perf_counter()
            trainers[m].train_step(batch)
            sync()                          # CUDA steps are asynchronous: time their end, not their launch
            if r:
                times[m].append(time.perf_counter() - t0)
    base = statistics.median(times["baseline"])
    return {m: statistics.median(v) / base for m, v in times.items()}


def relative_step_times(results: dict[str, Any], student: str) -> dict[str, float]:
    """Each method's step time over the baseline's for ``student``: timed side by side (``step_ratio``)
    where it was, else from the runs' logged seconds per step; empty without a baseline."""
    rows = [r for r in results["rows"] if r["student"] == student]
    timed = results.get("step_ratio", {}).get(student, {})
    sec = {m: timed[m] if m in timed else statistics.mean(r["sec_per_step"] for r in rows if r["method"] == m)
           for m in dict.fromkeys(r["method"] for r in rows)}
    return {m: t / sec["baseline"] for m, t in sec.items()} if "baseline" in sec else {}


def equal_time_f1(row: dict[str, Any], ratio: float | None) -> float | None:
    """The run's validation F1 at the baseline's training time, ``steps / ratio`` steps; None without a
    curve (results from before ``--val-every``), a ratio, or a validation that early."""
    if not row.get("curve") or ratio is None:
        return None
    return f1_at_step(row["curve"], equal_time_step(row["steps"], ratio))


def annotate(results: dict[str, Any]) -> None:
    """Record in every row its F1 at the baseline's time and how far its F1 moved over the last fifth."""
    ratios = {s: relative_step_times(results, s) for s in dict.fromkeys(r["student"] for r in results["rows"])}
    for r in results["rows"]:
        r["f1_equal_time"] = equal_time_f1(r, ratios[r["student"]].get(r["method"]))
        r["tail_moved"], r["converged"] = convergence(r.get("curve") or [], r.get("steps", 0))
        r["tail_trend"] = tail_trend(r.get("curve") or [], r.get("steps", 0))


EQUAL_TIME_NOTE = ("F1 at baseline's time: validation-split F1 at the last validation at or before "
                   "floor(steps / step-time ratio), mean over seeds. The learning rate was scheduled over the "
                   "whole run, so this is not the score of a run trained for that budget from the start.")


def summarise(results: dict[str, Any]) -> str:
    """The Markdown table; with validation curves also the equal-time column and the lines under it."""
    t, rows = results["teacher"], results["rows"]
    curves = any(r.get("curve") for r in rows)     # results from before --val-every have none
    cols = ["student", "method", "F1 (mean ± std)", "ΔF1 vs baseline", "mIoU (mean ± std)", "ΔmIoU",
            "step time vs baseline", "seeds", *(["F1 at baseline's time"] if curves else [])]
    lines = [f"Teacher ({results.get('teacher_model', '?')}): F1 {100 * t['f1']:.1f}, mIoU {100 * t['miou']:.1f}", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    notes = []
    for student in dict.fromkeys(r["student"] for r in rows):
        runs = {m: [r for r in rows if r["student"] == student and r["method"] == m]
                for m in dict.fromkeys(r["method"] for r in rows if r["student"] == student)}
        ratios = relative_step_times(results, student)
        equal = {m: _mean_points([equal_time_f1(r, ratios.get(m)) for r in rs]) for m, rs in runs.items()}
        for method, rs in runs.items():
            cells = _cells(rs, runs.get("baseline"), ratios.get(method))
            cells += ["n/a" if equal[method] is None else f"{equal[method]:.1f}"] if curves else []
            lines.append("| " + " | ".join([student, method, *cells]) + " |")
        if curves:
            notes += [convergence_line(student, runs.get("baseline", [])), *plain_vs_specialised(student, equal)]
    return "\n".join(lines + (["", EQUAL_TIME_NOTE, *notes] if notes else []))


def _mean_sd(rows: list[dict[str, Any]], key: str) -> tuple[float, float]:
    vals = [100 * r[key] for r in rows]
    return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _mean_points(vals: list[float | None]) -> float | None:
    """Mean over seeds in points; None when any seed has no value."""
    return None if not vals or None in vals else 100 * statistics.mean(vals)


def _cells(rows: list[dict[str, Any]], base: list[dict[str, Any]] | None, ratio: float | None) -> list[str]:
    """One method's cells from F1 to seeds; gains are "n/a" without a baseline."""
    (f1, f1_sd), (miou, miou_sd) = _mean_sd(rows, "f1"), _mean_sd(rows, "miou")
    gains = ["n/a"] * 3
    if base:
        gains = [f"{f1 - _mean_sd(base, 'f1')[0]:+.1f}", f"{miou - _mean_sd(base, 'miou')[0]:+.1f}", f"{ratio:.2f}x"]
    return [f"{f1:.1f} ± {f1_sd:.1f}", gains[0], f"{miou:.1f} ± {miou_sd:.1f}", gains[1], gains[2], str(len(rows))]


def convergence_line(student: str, base: list[dict[str, Any]]) -> str:
    """Whether ``student``'s baseline runs meet the rule: F1 moves less than 1 point over the last fifth."""
    if not base:
        return f"{student}: no baseline runs, so whether the baseline converged is not known."
    steps = max(r.get("steps", 0) for r in base)
    span = f"over the last fifth (steps {tail_start(steps)}-{steps})"
    moves = {r["seed"]: _tail(r.get("curve") or [], r.get("steps", 0)) for r in base}
    if all(ok for _, ok, _ in moves.values()):
        return (f"{student} baseline converged: F1 moved at most {max(m for m, _, _ in moves.values()):.1f} points "
                f"{span}, seeds {','.join(map(str, moves))}.")
    why = [f"seed {s}: F1 moved {m:.1f} points{_trend(trend)}" if ok is False
           else f"seed {s}: fewer than 2 validations" for s, (m, ok, trend) in moves.items() if not ok]
    verdict = "did not converge" if any(ok is False for _, ok, _ in moves.values()) else "convergence not known"
    return (f"{student} baseline {verdict} ({'; '.join(why)}) {span}: this table does not meet the convergence "
            f"rule (F1 moves less than 1 point over the last fifth of the run).")


def _tail(curve: list[tuple[int, float]], steps: int) -> tuple[float | None, bool | None, float | None]:
    """(points moved, rule met, trend) over a run's last fifth."""
    return (*convergence(curve, steps), tail_trend(curve, steps))


def _trend(drift: float | None) -> str:
    return "" if drift is None else f", trend {drift:+.1f}"


def plain_vs_specialised(student: str, equal: dict[str, float | None]) -> list[str]:
    """One sentence: the best plain (logit/feature) KD against the best specialised method at the
    baseline's training time; none unless both have an equal-time F1."""
    best = [max(((round(equal[m], 1), m) for m in group if equal.get(m) is not None), default=None)
            for group in (PLAIN, SPECIALISED)]
    if None in best:
        return []
    (p, pm), (sp, sm) = best
    verdict = f"{'plain KD' if p > sp else 'the specialised method'} is higher by {abs(p - sp):.1f} points"
    return [f"{student} at the baseline's training time: best plain KD {pm} {p:.1f}, best specialised {sm} {sp:.1f}; "
            f"{verdict if p != sp else 'they are equal'}."]


# Relative step cost of each method on a CPU (measured with the ENet student), to share the runs out
# evenly over --jobs (the two variants from RESULTS.md's rotated variants pass, the rest from an older
# one). ERFNet's method overheads weigh less against its heavier step (cirkd+kd 1.96x).
COST = {"baseline": 1.0, "kd": 1.14, "fitnet": 1.15, "at": 1.42, "sad": 0.88, "cwd": 1.09, "ifvd": 1.26,
        "dsd": 1.12, "skd": 2.64, "skd_authors_pixel_weight": 2.23, "cirkd+kd": 3.04, "intra_kd+kd": 1.36,
        "lgad": 1.11, "skd-holistic": 1.23, "intra_kd": 1.70,
        # step_ratios, 8 rounds, ENet at 96x256, with kd 1.23 and cirkd+kd 2.97 in the same pass
        "cirkd_channel+kd": 1.28}


def cost(method: str) -> float:
    """``COST``; an unlisted ``name-suffix`` variant costs as ``name``, a started one as the baseline
    until it starts."""
    base, _, start = method.partition("@start")
    c, on_from = COST.get(base, COST.get(base.partition("-")[0], 1.5)), float(start or 0)
    return on_from + (1 - on_from) * c


def shards(methods: list[str], jobs: int) -> list[list[str]]:
    """Methods split into ``jobs`` groups of about equal cost (longest first, to the lightest group)."""
    groups: list[list[str]] = [[] for _ in range(max(1, min(jobs, len(methods))))]
    load = [0.0] * len(groups)
    for m in sorted(methods, key=lambda m: -cost(m)):
        i = load.index(min(load))
        groups[i].append(m)
        load[i] += cost(m)
    return groups


def run_parallel(args: argparse.Namespace) -> None:
    """Train the teacher here, then the runs in ``args.jobs`` single-threaded processes side by side."""
    ensure_data(Path(args.data))
    setup = SETUPS[args.setup]
    train_recipe(setup.teacher_recipe, Path(args.out) / "teacher", Path(args.data), steps=args.teacher_steps)
    student_overrides(setup, Path(args.data))       # writes the validation split once, before the workers
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    common = ["--setup", args.setup, "--out", args.out, "--data", args.data, "--students", *args.students,
              "--seeds", *map(str, args.seeds),
              "--steps", str(args.steps), "--val-every", str(args.val_every),
              "--teacher-steps", str(args.teacher_steps), "--eval-images", str(args.eval_images),
              "--timing-rounds", "0"]  # timed here, afterwards
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.kd_table", *common, "--methods", *group],
                              env=env) for group in shards(args.methods, args.jobs)]
    failed = [p.args for p in procs if p.wait() != 0]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(procs)} training processes failed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setup", default="gap", choices=sorted(SETUPS),
                    help="gap (default): a 96x256 ENet teacher, students at 48x128, 240 validation images; "
                         "gap32: the 2400-step teacher, students at 32x88, 6400 steps; "
                         "same-size: the first table (teacher = the student architecture trained longer)")
    ap.add_argument("--out", default=None, help="default: the setup's (runs/kd_gap, runs/kd_gap32, runs/kd)")
    ap.add_argument("--data", default=str(DATA), help="synthetic data (written there when missing)")
    ap.add_argument("--students", nargs="+", default=["enet", "erfnet"], choices=sorted(STUDENT_RECIPES))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(RUNS),
                    help="default: the table's methods; also the variants tried (VARIANTS)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=None,
                    help="default: the setup's (gap 1600, gap32 6400, same-size 250)")
    ap.add_argument("--val-every", type=int, default=None,
                    help="validate every N steps, so each run has an F1 curve (default: steps // 10, at least 1; "
                         "0 = only at the end)")
    ap.add_argument("--teacher-steps", type=int, default=None,
                    help="default: the setup's (gap 1200, gap32 2400, same-size 600)")
    ap.add_argument("--eval-images", type=int, default=0, help="0 = the whole test split")
    ap.add_argument("--quick", action="store_true",
                    help="ENet, baseline and kd, one seed, 20 steps, in the setup's folder + _quick")
    ap.add_argument("--report-only", action="store_true", help="score the runs that finished; train nothing")
    ap.add_argument("--timing-rounds", type=int, default=5,
                    help="step time vs baseline: rounds of one step per method side by side in one process "
                         "(0 = the runs' logged step times instead)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="train in this many processes side by side (CPU: 2 on 2 cores gives 1.6x the runs/hour)")
    args = ap.parse_args()
    setup = SETUPS[args.setup]
    args.steps = args.steps or setup.steps
    args.teacher_steps = args.teacher_steps or setup.teacher_steps
    if args.quick:
        args.students, args.methods, args.seeds, args.steps, args.teacher_steps = ["enet"], ["baseline", "kd"], [0], 20, 20
    # --quick in its own folder: its 20-step runs must not meet the setup's full-length ones
    args.out = args.out or setup.out + ("_quick" if args.quick else "")
    if args.val_every is None:
        args.val_every = max(1, args.steps // 10)
    if args.jobs > 1 and not args.report_only:
        run_parallel(args)          # afterwards every run is finished: run() below only scores them
    results = run(args)
    table = summarise(results)
    print("\n" + table)
    write_outputs(Path(args.out), "kd_table", results, table)


if __name__ == "__main__":
    main()
