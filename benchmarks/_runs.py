"""Training runs for the benchmark tables: a recipe trained (or resumed) into a folder, and its step time."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from distill.config import load_config
from distill.train import train
from distill.train_config import TrainConfig

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
DATA = Path("runs/kd/data")              # where the benchmark's synthetic data set is written
SCENES, SPLITS = 880, (0.75, 0.05, 0.2)  # 176 test images: enough to keep the evaluation noise small
# The data set's own validation split is 44 images, on which one lane moves F1 by ~0.7 points: too
# few to tell whether a run has converged. Long runs validate on this one instead: 240 further
# scenes (another generator seed) inside the data root, under their own list file.
VAL_SPLIT, VAL_SCENES, VAL_SEED = "list/val240_gt.txt", 240, 11


def ensure_data(root: Path) -> None:
    """Write the synthetic benchmark (seed 0) into ``root`` unless a data set is already there."""
    if not (root / "list" / "test.txt").is_file():
        from distill.data.synth import write_culane
        write_culane(root, SCENES, seed=0, splits=SPLITS, workers=2, overwrite=True)


def ensure_val_split(root: Path) -> str:
    """Write ``VAL_SCENES`` extra validation scenes into ``root/val240`` (once) and return the split
    name (a list file, relative to ``root``) that reads them."""
    listed = root / VAL_SPLIT
    if not listed.is_file():
        from distill.data.synth import write_culane
        sub = root / "val240"
        write_culane(sub, VAL_SCENES, seed=VAL_SEED, splits=(0.0, 1.0, 0.0), workers=2, overwrite=True)
        lines = [" ".join(f"/val240/{tok.lstrip('/')}" if i < 2 else tok for i, tok in enumerate(line.split()))
                 for line in (sub / "list" / "val_gt.txt").read_text().splitlines() if line.strip()]
        tmp = listed.with_name(listed.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in lines))
        tmp.replace(listed)
    return VAL_SPLIT


def write_outputs(out: Path, stem: str, data: object, table: str) -> None:
    """``<out>/<stem>.json`` and ``<out>/<stem>.md``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(data, indent=2))
    (out / f"{stem}.md").write_text(table + "\n")
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')}")


def train_recipe(recipe: str, out: Path, data: Path, overrides: list[str] = (), steps: int | None = None,
                 val_every: int | None = None) -> Path:
    """Train ``recipes/<recipe>`` into ``out`` on ``data`` and return its last checkpoint.

    A finished run is returned as it is (not resumed: parallel workers share the teacher), so tables
    can be built up over several sessions; a run scheduled for another number of steps is an error.
    ``steps`` (when given) also sets four checkpoints and validation every ``val_every`` steps
    (default: only at the end; 0 also means only at the end).
    """
    if steps is not None and (out / "last.pt").is_file():
        from distill.checkpoint import load_checkpoint

        ckpt = load_checkpoint(out / "last.pt")
        planned = int(ckpt.get("config", {}).get("steps", steps))
        if planned != steps:   # resuming would graft a new learning-rate schedule onto the old one
            raise ValueError(f"{out} holds a run scheduled for {planned} steps, not {steps}: "
                             f"use another output folder (--out)")
        if int(ckpt["step"]) >= steps:
            return out / "last.pt"
    sets = [f"out={out}", f"data.root={data}"]
    val_every = steps if val_every is None else val_every
    if steps is not None:
        sets += [f"steps={steps}", f"ckpt_every={max(10, steps // 4)}"]
    if val_every is not None:
        sets.append(f"val_every={val_every}")
    train(load_config(TrainConfig, RECIPES / recipe, [*sets, *overrides]), quiet=True)
    return out / "last.pt"


def recipe_steps(recipe: str) -> int:
    return load_config(TrainConfig, RECIPES / recipe).steps


def finished(out: Path, steps: int) -> bool:
    """Whether ``out`` holds a run that reached ``steps``."""
    from distill.checkpoint import load_checkpoint

    last = out / "last.pt"
    return last.is_file() and int(load_checkpoint(last)["step"]) >= steps


def sec_per_step(out: Path) -> float:
    """Median seconds per step over a run's logged windows, start-up window excluded."""
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    vals = [r["sec_per_step"] for r in rows if "sec_per_step" in r]
    return statistics.median(vals[1:] or vals)
