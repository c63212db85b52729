"""Training curves as a PNG: every logged loss term and validation metric against the step."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def plot_curves(history: list[dict[str, Any]], out: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    losses = sorted({k for row in history for k in row if k == "loss" or "/" in k and not k.startswith("val/")})
    metrics = sorted({k for row in history for k in row if k.startswith("val/")})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key in losses:
        pts = [(r["step"], r[key]) for r in history if key in r]
        if pts:
            axes[0].plot(*zip(*pts), label=key, lw=1.5 if key == "loss" else 1.0)
    axes[0].set_yscale("log")
    axes[0].set_title("training loss terms")
    axes[0].set_xlabel("step")
    for key in metrics:
        pts = [(r["step"], r[key]) for r in history if key in r]
        if pts:
            axes[1].plot(*zip(*pts), marker="o", label=key[4:])
    axes[1].set_title("validation")
    axes[1].set_xlabel("step")
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.png")   # per process: two writers never share it
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(out)
    return out
