"""Validation curves of training runs and the KD table's arithmetic on them (no torch).

A run's ``log.jsonl`` holds its validation entries as ``{"step": N, "val/f1": ..., "val/miou": ...}``;
its curve is the (step, F1) pairs. Two things are read off a curve: whether the run converged (the
rule: F1 moves less than 1 point over the last fifth of the run), with the tail's trend beside it
(whether a run that fails the rule is still rising or only jittering from checkpoint to checkpoint),
and a method's F1 when it gets the baseline's training time (``steps / step_ratio`` steps).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

Curve = Sequence[Sequence[float]]   # (step, F1) pairs; lists once read back from JSON
TAIL = 0.2                          # the last fifth of the run
CONVERGED_POINTS = 1.0              # F1 moves less than this (in points) over the tail


def val_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, validation F1) pairs from ``run_dir/log.jsonl``, in step order.

    A resumed run appends to its log, so a step may be logged twice: the last entry counts.
    """
    f1: dict[int, float] = {}
    for line in (Path(run_dir) / "log.jsonl").read_text().splitlines():
        row = json.loads(line) if line.strip() else {}
        if "val/f1" in row:
            f1[int(row["step"])] = float(row["val/f1"])
    return sorted(f1.items())


def tail_start(steps: int, tail: float = TAIL) -> int:
    """The first step of the last ``tail`` of a ``steps``-step run: ceil((1 - tail) * steps)."""
    return math.ceil((1 - tail) * steps)


def convergence(curve: Curve, steps: int, tail: float = TAIL) -> tuple[float | None, bool | None]:
    """How far F1 moved over the run's tail, in points, and whether the run converged.

    The rule: over the validation points at step >= (1 - tail) * steps, F1 (x100) moves
    max - min < 1 point, and there are at least 2 such points. With fewer, whether it converged is
    not known: (None, None).
    """
    f1 = [100 * f for s, f in curve if s >= tail_start(steps, tail)]
    if len(f1) < 2:
        return None, None
    moved = max(f1) - min(f1)
    return moved, moved < CONVERGED_POINTS


def tail_trend(curve: Curve, steps: int, tail: float = TAIL) -> float | None:
    """F1's drift over the run's tail in points: the least-squares slope through the tail's
    validation points times the tail's length in steps. Checkpoint-to-checkpoint jitter moves F1
    without moving this; a run still learning moves both. None with fewer than 3 tail points."""
    start = tail_start(steps, tail)
    pts = [(s, 100 * f) for s, f in curve if s >= start]
    if len(pts) < 3:
        return None
    ms = sum(s for s, _ in pts) / len(pts)
    mf = sum(f for _, f in pts) / len(pts)
    var = sum((s - ms) ** 2 for s, _ in pts)
    slope = sum((s - ms) * (f - mf) for s, f in pts) / var
    return slope * (steps - start)


def f1_at_step(curve: Curve, step: int) -> float | None:
    """F1 of the last validation at or before ``step``; None when there is none.

    No interpolation: the validation points are what was measured; the model between two of them
    was never scored, and a line between them would be a score nobody measured.
    """
    before = [(s, f) for s, f in curve if s <= step]
    return max(before)[1] if before else None


def equal_time_step(steps: int, step_ratio: float) -> int:
    """Steps a method whose step costs ``step_ratio`` times the baseline's gets in the baseline's
    training time: floor(steps / step_ratio), at most the run's ``steps`` (a cheaper step does not
    make the run longer than it was)."""
    return min(steps, math.floor(steps / step_ratio))
