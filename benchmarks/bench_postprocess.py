"""Time lane decoding at 288x800 (4 slots, one core) and measure what ``refine=True`` buys.

    python -m benchmarks.bench_postprocess [--quick]

Maps are realistic: GT lanes (curved, 4 slots) rendered as soft blobs (Gaussian blur of a thin
line) with noise, at the 288x800 input of a 1640x590 frame. Timing: decode_lanes on the full map
and decode_lanes_from_peaks on per-row peaks. Accuracy: CULane F1 (culane_counts, C++-exact) of
the standard decoding vs refine=True with rows every 10 px, both against the GT lanes; the GT is
shifted sub-pixel at random so the arg-max quantisation (2.05 px per input column) shows.
Writes benchmarks/out/bench_postprocess.json.
"""
from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

cv2.setNumThreads(1)

from distill.eval.culane import culane_counts  # noqa: E402
from runtime.geometry import Geometry  # noqa: E402
from runtime.postprocess import LaneDecodeConfig, decode_lanes, decode_lanes_from_peaks, sample_rows  # noqa: E402
from runtime.sinks import write_json

GEOM = Geometry(590, 1640, 288, 800)


def scene(rng: np.random.Generator, blur: float, noise: float):
    """GT lanes in frame coordinates and (5, 288, 800) soft probability maps for them."""
    ys = np.arange(589, 250, -10.0)
    lanes, logits = [], np.zeros((5, 288, 800), np.float32)
    for s in range(4):
        xb = 150 + 420 * s + rng.normal(0, 25)
        xt = 700 + 80 * s + rng.normal(0, 10)
        curve = rng.normal(0, 25)
        xs = xb + (xt - xb) * (589 - ys) / 339 + curve * ((589 - ys) / 339) ** 2 + rng.uniform(-1, 1)
        lane = np.stack([xs, ys], 1)
        lanes.append(lane)
        inp = GEOM.to_input(lane)
        m = np.zeros((288, 800), np.float32)
        cv2.polylines(m, [np.round(inp * 16).astype(np.int32).reshape(-1, 1, 2)], False, 1.0, 1,
                      cv2.LINE_AA, shift=4)
        m = cv2.GaussianBlur(m, (0, 0), blur)
        m /= max(m.max(), 1e-6)
        logits[s + 1] = 6.0 * m - 3.0
    logits += rng.normal(0, noise, logits.shape).astype(np.float32)
    e = np.exp(logits - logits.max(0))
    return lanes, e / e.sum(0)


def peaks(probs, cfg):
    _, rows = sample_rows(GEOM, cfg)
    band = probs[1:, rows, :]
    cols = band.argmax(2)
    return np.take_along_axis(band, cols[..., None], 2)[..., 0], cols


def timeit(fn, reps):
    fn()
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(t))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and scenes")
    ap.add_argument("--scenes", type=int, default=300)
    ap.add_argument("--out", default="benchmarks/out/bench_postprocess.json")
    args = ap.parse_args(argv)
    reps = 50 if args.quick else 500
    n_scenes = 40 if args.quick else args.scenes
    rng = np.random.default_rng(0)
    _, probs = scene(rng, 2.0, 0.3)
    std, fine = LaneDecodeConfig(), LaneDecodeConfig(refine=True, row_step=10, num_rows=34)
    pv, pc = peaks(probs, std)
    times = {
        "decode_lanes_ms": timeit(lambda: decode_lanes(probs, None, GEOM, std), reps),
        "decode_lanes_refine_ms": timeit(lambda: decode_lanes(probs, None, GEOM, fine), reps),
        "decode_lanes_from_peaks_ms": timeit(lambda: decode_lanes_from_peaks(pv, pc, None, GEOM, std), reps),
    }
    acc = {}
    for name, cfg in (("standard", std), ("refine_row10", fine)):
        acc[name] = {}
    thresholds = (0.5, 0.75)
    tot = {k: {t: [0, 0, 0] for t in thresholds} for k in acc}
    for _ in range(n_scenes):
        gt, pr = scene(rng, float(rng.uniform(1.5, 3.0)), float(rng.uniform(0.2, 0.6)))
        for name, cfg in (("standard", std), ("refine_row10", fine)):
            lanes = list(decode_lanes(pr, None, GEOM, cfg).values())
            c = culane_counts(lanes, gt, iou_thresholds=thresholds)
            for t in thresholds:
                for i in range(3):
                    tot[name][t][i] += c[t][i]
    for name in tot:
        for t, (tp, fp, fn) in tot[name].items():
            p = tp / (tp + fp) if tp + fp else 0.0
            r = tp / (tp + fn) if tp + fn else 0.0
            acc[name][f"F1@{t:.2f}"] = 2 * p * r / (p + r) if p + r else 0.0
    print(f"{'stage':<34}{'median ms':>10}")
    for k, v in times.items():
        print(f"{k:<34}{v:>10.3f}")
    print(f"\n{'setting':<16}{'F1@0.50':>9}{'F1@0.75':>9}   ({n_scenes} scenes x 4 lanes)")
    for k, v in acc.items():
        print(f"{k:<16}{100 * v['F1@0.50']:>9.2f}{100 * v['F1@0.75']:>9.2f}")
    out = {"input": "288x800", "slots": 4, "threads": 1, "reps": reps, **times, "scenes": n_scenes, "f1": acc}
    print(f"wrote {write_json(args.out, out)}")
    return out


if __name__ == "__main__":
    main()
