"""Lane files on disk: CULane ``.lines.txt`` (one lane per line, ``x1 y1 x2 y2 ...``).

Shared by the dataset readers, the synthetic writer, the evaluators and the runtime's writers.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np


class LaneFileError(ValueError):
    """A malformed lane file; the message names the file and line."""


def read_culane_lines(path: str | Path, keep_empty: bool = False,
                      universal_newlines: bool = False) -> list[np.ndarray]:
    """Read a ``.lines.txt`` into a list of (N, 2) float64 arrays (x, y), file order kept.

    Only ``\\n`` ends a line (as ``std::getline`` in the official CULane evaluator); with
    ``universal_newlines`` a ``\\r\\n`` or a lone ``\\r`` ends one too, as Python's text mode reads
    (the LLAMAS script's ``open(path, 'r')``: old Mac files hold one lane per line). Blank lines are
    skipped, or with ``keep_empty`` kept as (0, 2) lanes, which is what the official CULane
    evaluator counts them as. An odd number of values or a token that is not a finite number is
    an error naming the file and line.
    """
    path = Path(path)
    lanes: list[np.ndarray] = []
    with open(path, "r", newline=None if universal_newlines else "\n") as fh:
        for lineno, line in enumerate(fh, 1):
            toks = line.split()
            if not toks and not keep_empty:
                continue
            if len(toks) % 2:
                raise LaneFileError(f"{path}:{lineno}: odd number of coordinates ({len(toks)})")
            try:
                vals = np.array([float(t) for t in toks], dtype=np.float64)
            except ValueError:
                raise LaneFileError(f"{path}:{lineno}: not a number in {line.strip()[:60]!r}") from None
            if not np.all(np.isfinite(vals)):
                raise LaneFileError(f"{path}:{lineno}: NaN or infinite coordinate")
            lanes.append(vals.reshape(-1, 2))
    return lanes


def format_culane_lines(lanes: Iterable[Sequence[Sequence[float]]]) -> str:
    out = []
    for lane in lanes:
        pts = np.asarray(lane, dtype=np.float64).reshape(-1, 2)
        if len(pts) == 0:
            continue
        if not np.all(np.isfinite(pts)):
            raise ValueError("lane with NaN or infinite coordinates")
        out.append(" ".join(f"{x:.5g} {y:.5g}" for x, y in pts))
    return "\n".join(out) + ("\n" if out else "")


def write_culane_lines(path: str | Path, lanes: Iterable[Sequence[Sequence[float]]]) -> Path:
    """Write lanes as a ``.lines.txt`` (atomically: temp file then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(format_culane_lines(lanes))
    tmp.replace(path)
    return path


