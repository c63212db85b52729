"""Synthetic scene throughput on one core: generation only, and generation + CULane-layout write.

    python -m benchmarks.bench_synthetic [--quick] [--size 1640x590] [--num 200]

Prints a table and writes ``benchmarks/out/bench_synthetic.json``. Target: >= 30 scenes/s at
1640x590 for generation alone.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from distill.data.cli import parse_size
from distill.data.synth import SceneConfig, plan_scene, render, write_culane
from runtime.sinks import write_json

OUT = Path(__file__).parent / "out" / "bench_synthetic.json"


def bench(num: int, size: tuple[int, int], seed: int = 0) -> dict[str, float]:
    cfg = SceneConfig(width=size[0], height=size[1])
    render(plan_scene(seed, 10 ** 6, cfg))          # warm-up: per-process textures
    times = []
    for i in range(num):
        t0 = time.perf_counter()
        render(plan_scene(seed, i, cfg))
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_culane(Path(tmp) / "d", num, seed, cfg, progress=False)
        write_s = time.perf_counter() - t0
    return {"size": f"{size[0]}x{size[1]}", "scenes": num,
            "gen_scenes_per_s": float(num / ms.sum() * 1000), "gen_ms_p50": float(np.percentile(ms, 50)),
            "gen_ms_p90": float(np.percentile(ms, 90)), "gen_write_scenes_per_s": float(num / write_s)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few scenes, small and full size")
    ap.add_argument("--num", type=int, default=200, help="scenes per size")
    ap.add_argument("--size", type=parse_size, action="append", help="WIDTHxHEIGHT (repeatable)")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    sizes = args.size or [(1640, 590), (800, 288), (400, 144)]
    num = 20 if args.quick else args.num
    rows = [bench(num, s) for s in sizes]
    print(f"{'size':>10} {'scenes':>7} {'gen/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'gen+write/s':>12}")
    for r in rows:
        print(f"{r['size']:>10} {r['scenes']:>7} {r['gen_scenes_per_s']:>8.1f} {r['gen_ms_p50']:>8.1f} "
              f"{r['gen_ms_p90']:>8.1f} {r['gen_write_scenes_per_s']:>12.1f}")
    write_json(OUT, {"benchmark": "bench_synthetic", "threads": 1, "quick": args.quick,
                     "machine": platform.processor() or platform.machine(),
                     "opencv": cv2.__version__, "results": rows})
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
