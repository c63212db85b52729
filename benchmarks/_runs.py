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


def ensure_data(root: Path) -> None:
    """Write the synthetic benchmark (seed 0) into ``root`` unless a data set is already there."""
    if not (root / "list" / "test.txt").is_file():
        from distill.data.synth import write_culane
        write_culane(root, SCENES, seed=0, splits=SPLITS, workers=2, overwrite=True)


def write_outputs(out: Path, stem: str, data: object, table: str) -> None:
    """``<out>/<stem>.json`` and ``<out>/<stem>.md``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(data, indent=2))
    (out / f"{stem}.md").write_text(table + "\n")
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')}")


def train_recipe(recipe: str, out: Path, data: Path, overrides: list[str] = (), steps: int | None = None,
                 val_every: int | None = None) -> Path:
    """Train ``recipes/<recipe>`` into ``out`` on ``data`` and return its last checkpoint.

    A finished run resumes at its last step and trains no more, so tables can be built up over
    several sessions. ``steps`` (when given) also sets four checkpoints and validation every
    ``val_every`` steps (default: only at the end; 0 also means only at the end).
    """
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
