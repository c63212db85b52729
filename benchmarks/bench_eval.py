"""Time the CULane evaluator on a synthetic CULane-shaped set (N images x ~4 lanes).

    python -m benchmarks.bench_eval [--quick] [--images N] [--workers 2]

GT lanes have a point every 10 rows (like CULane's annotations), predictions every 20 rows with a
few px of error, some missing and some spurious. Prints a table and writes
benchmarks/out/bench_eval.json, with the time extrapolated to the 34,680 CULane test images.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from distill.eval.culane import evaluate_culane
from runtime.lane_io import write_culane_lines
from runtime.sinks import write_json

CULANE_TEST_IMAGES = 34680


def make_set(root: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        rel = f"driver_{i // 1000}/{i:05d}"
        gts, preds = [], []
        for k in range(int(rng.integers(2, 5))):
            xb, xt = 200 + 400 * k + rng.normal(0, 40), 700 + 80 * k + rng.normal(0, 20)
            top = int(rng.integers(240, 300))
            ys = np.arange(589, top, -10.0)
            xs = xb + (xt - xb) * (589 - ys) / (589 - top) + 15 * np.sin(ys / 120)
            gts.append(np.stack([xs, ys], 1))
            if rng.random() < 0.9:
                pys = ys[::2]
                pxs = np.interp(pys, ys[::-1], xs[::-1]) + rng.normal(0, 4) + rng.normal(0, 2, len(pys))
                preds.append(np.stack([pxs, pys], 1))
        if rng.random() < 0.2:
            preds.append(np.stack([np.linspace(50, 300, 10), np.linspace(589, 350, 10)], 1))
        write_culane_lines(root / "anno" / f"{rel}.lines.txt", gts)
        write_culane_lines(root / "pred" / f"{rel}.lines.txt", preds)
        names.append(f"/{rel}.jpg")
    lst = root / "list.txt"
    lst.write_text("\n".join(names) + "\n")
    return lst


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--images", type=int, default=CULANE_TEST_IMAGES)
    ap.add_argument("--quick", action="store_true", help="2000 images")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/out/bench_eval.json")
    args = ap.parse_args(argv)
    n = 2000 if args.quick else args.images
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        lst = make_set(root, n)
        t_make = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = evaluate_culane(root / "anno", root / "pred", lst, workers=args.workers)
        t_eval = time.perf_counter() - t0
    per_img_ms = 1e3 * t_eval / n
    out = {"images": n, "workers": args.workers, "cpu_count": os.cpu_count(), "eval_s": t_eval,
           "ms_per_image": per_img_ms, "extrapolated_culane_test_s": per_img_ms * CULANE_TEST_IMAGES / 1e3,
           "make_s": t_make, "tp": res["tp"], "fp": res["fp"], "fn": res["fn"], "f1": res["f1"]}
    print(f"{'images':>8}{'workers':>8}{'eval s':>9}{'ms/img':>8}{'34680 imgs s':>14}{'F1':>7}")
    print(f"{n:>8}{args.workers:>8}{t_eval:>9.1f}{per_img_ms:>8.2f}{out['extrapolated_culane_test_s']:>14.0f}"
          f"{100 * res['f1']:>7.2f}")
    print(f"wrote {write_json(args.out, out)}")
    return out


if __name__ == "__main__":
    main()
