"""Data loading throughput: CULane-format JPEG frames (1640x590) -> 288x800 training batches.

Writes a small CULane-layout dataset with the synthetic generator (``distill.data.synth``), or,
where that is unavailable, plain road-like JPEG frames of its own whose seg labels the reader
rasterises from ``.lines.txt``; then times:
  * per-sample stages in one process: read (decode + label), train transforms, eval transforms;
  * a DataLoader with ``--workers`` persistent workers: one warm-up epoch, then ``--epochs`` timed.

Usage: ``python -m benchmarks.bench_loader [--quick]``; JSON to ``benchmarks/out/bench_loader.json``.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from distill.data.culane import CULane
from distill.data.dataset import SegDataset, collate
from distill.data.transforms import eval_transforms, train_transforms
from runtime.lane_io import write_culane_lines
from runtime.sinks import write_json

OUT = Path(__file__).resolve().parent / "out" / "bench_loader.json"


def write_frames(root: Path, n: int, h: int = 590, w: int = 1640, seed: int = 0) -> Path:
    """A CULane-layout set of road-like JPEG frames (smooth gradient, grain, four lanes)."""
    rng = np.random.default_rng(seed)
    names = []
    base = np.linspace(60, 140, h, dtype=np.float32)[:, None, None] * np.ones((1, w, 3), np.float32)
    for i in range(n):
        img = base + rng.normal(0, 6, (h, w, 3)).astype(np.float32)
        lanes = []
        shift = rng.uniform(-60, 60)
        for xb, xt in ((150, 700), (560, 780), (1080, 860), (1500, 940)):
            ys = np.linspace(h - 1, 300, 18)
            xs = np.linspace(xb + shift, xt + shift / 3, 18)
            pts = np.stack([xs, ys], 1)
            cv2.polylines(img, [np.rint(pts).astype(np.int32)], False, (230, 230, 230), 10)
            lanes.append(pts)
        rel = f"driver_bench/clip/{i:05d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        write_culane_lines((root / rel).with_suffix(".lines.txt"), lanes)
        names.append(f"/{rel} /laneseg_label_w16/{rel[:-4]}.png 1 1 1 1")
    (root / "list").mkdir(exist_ok=True)
    (root / "list" / "train_gt.txt").write_text("\n".join(names) + "\n")
    return root


def make_dataset(root: Path, n: int) -> tuple[Path, str]:
    """The synthetic generator's CULane set when importable, else this module's own frames."""
    try:
        from distill.data.synth.writer import write_culane
    except ImportError:
        return write_frames(root, n), "bench frames (labels rasterised by the reader)"
    write_culane(root, n, seed=0, splits=(1.0, 0.0, 0.0), progress=False)
    return root, "distill.data.synth.writer.write_culane"


def _per_sample_ms(fn, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) * 1000 / n


def run(n_images: int, epochs: int, workers: int, batch: int, size: tuple[int, int]) -> dict:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root, source = make_dataset(Path(tmp), n_images)
        reader = CULane(root, "train")
        n_images = len(reader)
        train_t, eval_t = train_transforms(size, 0), eval_transforms(size, 0)
        samples = [reader[i] for i in range(min(n_images, 8))]
        rng = np.random.default_rng(0)
        k = len(samples)
        stages = {
            "read (decode image + label)": _per_sample_ms(lambda i: reader[i % n_images], k),
            "train transforms": _per_sample_ms(lambda i: train_t(samples[i % k], rng), k),
            "eval transforms": _per_sample_ms(lambda i: eval_t(samples[i % k], rng), k),
        }
        ds = SegDataset(reader, train_t, seed=0)
        loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate,
                            drop_last=False, persistent_workers=workers > 0)
        for _ in loader:                            # warm-up epoch: starts the persistent workers
            pass
        counted, t0 = 0, time.perf_counter()
        for _ in range(epochs):                     # measured: whole epochs, prefetch start included
            for b in loader:
                counted += b["image"].shape[0]
        t_total = time.perf_counter() - t0
        ips = counted / t_total if t_total > 0 else float("nan")
    return {"source": source, "n_images": n_images, "epochs": epochs, "workers": workers, "batch": batch,
            "input_hw": list(size), "frame_hw": [590, 1640], "stages_ms_per_image": stages,
            "loader_images_per_s": ips, "cpu_count": os.cpu_count(), "machine": platform.platform(),
            "torch": torch.__version__, "opencv": cv2.__version__}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="16 images, 1 timed epoch")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, nargs=2, default=(288, 800), metavar=("H", "W"))
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)
    n, epochs = (16, 1) if a.quick else (a.images, a.epochs)
    res = run(n, epochs, a.workers, a.batch, tuple(a.size))
    print(f"data loader: {res['n_images']} CULane-format JPEGs 1640x590 ({res['source']}) -> {a.size[0]}x{a.size[1]}, "
          f"{a.workers} workers, batch {a.batch}, {epochs} epoch(s)")
    print(f"{'stage':<36}{'ms / image':>12}")
    for k, v in res["stages_ms_per_image"].items():
        print(f"{k:<36}{v:>12.2f}")
    ips = res["loader_images_per_s"]
    print(f"{'DataLoader throughput':<36}{ips:>12.1f} images/s")
    print(f"note: a training step of batch {a.batch} taking T ms consumes {a.batch}*1000/T images/s; "
          f"the loader keeps up while that is below {ips:.0f} images/s "
          f"(e.g. T >= {a.batch * 1000 / ips:.0f} ms)." if ips == ips and ips > 0 else "")
    print(f"wrote {write_json(a.out, res)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
