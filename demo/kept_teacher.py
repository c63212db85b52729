"""The demo's kept teacher: a weights-only checkpoint in the repository that the demo's own teacher
recipe produced, so `make demo` need not spend most of its time training the teacher.

``python -m demo.kept_teacher`` remakes it from scratch: the demo's data step and teacher step
with the demo's default settings, single-threaded (so the command gives the same weights on another
machine as far as its CPU's arithmetic allows), then keeps only what inference and distillation
need (no optimizer, RNG or method state) plus a ``provenance`` record: recipe name and sha256, data
seed and scene count, steps, the training overrides, git revision, versions, CPU and the time taken.
The demo uses the file only when that record matches its settings and the recipe file as it is now.
"""
from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from demo.flow import KEPT_TEACHER, RECIPES, DemoSettings, make_data, overrides, train_recipe

COMMAND = "python -m demo.kept_teacher"
# what the Trainer writes that a teacher used for inference and distillation needs
_KEEP = ("model_name", "model_kwargs", "spec", "input_size", "crop_top", "orig_size", "label_teacher",
         "state_dict", "step", "metrics")


def _git_state() -> str:
    """HEAD's revision, with ``+dirty`` when tracked files differ from it."""
    from distill.config import git_revision

    rev = git_revision()
    try:
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=RECIPES.parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return rev
    return f"{rev}+dirty" if dirty else rev


def expected_provenance(s: DemoSettings) -> dict[str, Any]:
    """What a teacher trained by these settings records (and what a kept one must match)."""
    from distill.checkpoint import file_sha256

    return {"recipe": s.teacher_recipe, "recipe_sha256": file_sha256(RECIPES / s.teacher_recipe),
            "data_seed": s.seed, "scenes": s.scenes, "steps": s.teacher_steps, "seed": s.seed}


def mismatch(s: DemoSettings, path: Path) -> str | None:
    """Why the kept checkpoint at ``path`` cannot stand in for training the teacher with ``s``; None if it can."""
    from distill.checkpoint import CheckpointError, load_checkpoint

    try:
        prov = load_checkpoint(path).get("provenance")
    except CheckpointError as exc:
        return str(exc)
    if not isinstance(prov, dict):
        return f"{path} has no provenance record"
    diff = [f"{k} {prov.get(k)!r} (these settings: {v!r})" for k, v in expected_provenance(s).items()
            if prov.get(k) != v]
    return f"{path} was made with " + ", ".join(diff) if diff else None


def keep(run_ckpt: Path, dest: Path, s: DemoSettings, threads: int) -> Path:
    """Write the slim checkpoint with its provenance from a finished teacher run's ``best.pt``."""
    import json

    import torch

    from distill.checkpoint import load_checkpoint, save_checkpoint
    from runtime.bench import system_info

    ckpt = load_checkpoint(run_ckpt)
    if ckpt.get("step") != s.teacher_steps:
        raise ValueError(f"{run_ckpt} is from step {ckpt.get('step')}, not the run's last ({s.teacher_steps})")
    log = run_ckpt.parent / "log.jsonl"
    history = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    sysinfo = system_info()
    prov = {**expected_provenance(s), "command": COMMAND, "git_revision": _git_state(),
            "overrides": overrides(s, run_ckpt.parent, s.teacher_steps, s.out / "data"),
            "torch_threads": threads, "train_seconds": round(train_seconds(history), 1), "cpu": sysinfo["cpu"],
            "cores": sysinfo["cores"], "torch": str(torch.__version__), "python": platform.python_version(),
            "made": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    return save_checkpoint(dest, {**{k: ckpt[k] for k in _KEEP if k in ckpt}, "history": history,
                                  "provenance": prov})


def train_seconds(history: list[dict[str, Any]]) -> float:
    """Seconds spent in training steps, from the log (each row averages the steps since the one before),
    so a resumed or reused run still reports the time its steps took."""
    rows = [r for r in history if "sec_per_step" in r]
    return sum(r["sec_per_step"] * (r["step"] - prev["step"]) for prev, r in zip([{"step": 0}, *rows], rows))


def describe(path: Path) -> str:
    """One sentence for the report: where the kept teacher came from."""
    from distill.checkpoint import load_checkpoint

    p = load_checkpoint(path)["provenance"]
    size = path.stat().st_size / 1e6
    return (f"The teacher is the kept checkpoint `{path.name}` ({size:.1f} MB, weights only, in "
            f"`recipes/checkpoints/`), made by `{p['command']}` at git revision {p['git_revision'][:12]} "
            f"from `recipes/{p['recipe']}` (sha256 {p['recipe_sha256'][:12]}, checked against the file "
            f"now): {p['steps']} steps on {p['scenes']} synthetic scenes, seed {p['data_seed']}, "
            f"{p['torch_threads']} torch thread(s), {p['train_seconds'] / 60:.1f} min on {p['cpu']} "
            f"({p['made']}). Its scores above are computed in this run; `make demo TEACHER=train` "
            f"trains it here instead.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/kept_teacher"),
                        help="folder for the data and the training run (a finished run there is reused)")
    parser.add_argument("--dest", type=Path, default=KEPT_TEACHER, help="where the kept checkpoint goes")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    s = DemoSettings(out=args.work, teacher="train")
    root, _ = make_data(s)
    best = train_recipe(s, s.teacher_recipe, s.out / "runs" / "teacher", s.teacher_steps, root)
    path = keep(best, args.dest, s, torch.get_num_threads())
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
