"""How much F1 an input size allows: the ground-truth masks at that size, decoded as a prediction.

    python -m benchmarks.grid_oracle [--root runs/kd/data] [--sizes 48x128 96x256] [--splits test]

A perfect student at (h, w) predicts the label map resized to (h, w); scoring that map with the
validation pipeline (lane decode, CULane F1 at IoU 0.5 in the original frame) gives the most any
model at that size can reach. The KD table's gap setup uses it to check that its 48x128 students
are held back by what they learn, not by their grid. Prints a table, writes
``benchmarks/out/grid_oracle.json``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks._runs import DATA, write_outputs
from distill.data.dataset import build_dataset
from distill.validate import Validator

OUT = Path(__file__).resolve().parent / "out"


class LabelEcho(torch.nn.Module):
    """Reads the one-hot label planes (the label-teacher input) and returns them as sharp logits."""

    def forward_taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": 20.0 * x}


def oracle(root: Path, split: str, size: tuple[int, int], crop_top: int) -> dict[str, float]:
    ds = build_dataset("culane", root, split, size, crop_top, train=False)
    return Validator(ds, ds.spec, torch.device("cpu")).run(LabelEcho(), label_teacher=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(DATA))
    ap.add_argument("--sizes", nargs="+", default=["48x128", "64x160", "96x256"])
    ap.add_argument("--splits", nargs="+", default=["test"])
    ap.add_argument("--crop-top", type=int, default=180, help="rows cut from the frame (the recipes' 180)")
    args = ap.parse_args()
    rows = []
    for size in args.sizes:
        h, w = (int(v) for v in size.split("x"))
        for split in args.splits:
            r = oracle(Path(args.root), split, (h, w), args.crop_top)
            rows.append({"size": size, "split": split, "f1": r["f1"], "miou": r["miou"]})
    table = "\n".join(["| input size | split | oracle F1 | oracle mIoU |", "|---|---|---|---|",
                       *(f"| {r['size']} | {r['split']} | {100 * r['f1']:.1f} | {100 * r['miou']:.1f} |" for r in rows)])
    print(table)
    write_outputs(OUT, "grid_oracle", rows, table)


if __name__ == "__main__":
    main()
