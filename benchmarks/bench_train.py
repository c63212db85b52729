"""Training throughput (images/s) per student: one optimiser step of CE + existence BCE.

    python -m benchmarks.bench_train [--quick] [--size 288x800] [--batch 4] [--steps 5]

On CPU: fp32 for every student. On a GPU (when one is present): fp32 vs AMP bf16 vs AMP bf16 +
channels_last, measured side by side in one run and reported as ratios. Prints a table and writes
``benchmarks/out/bench_train.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from distill.models.base import build_model, model_names
from runtime.sinks import write_json

OUT = Path(__file__).parent / "out" / "bench_train.json"


def step_time(name: str, size: tuple[int, int], batch: int, steps: int, device: torch.device,
              amp: bool = False, channels_last: bool = False) -> float:
    """Seconds per training step after two warm-up steps."""
    kwargs = {"decoder": "interp"} if name == "enet" else {}
    model = build_model(name, num_classes=5, lane_slots=4, **kwargs).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, *size, device=device)
    y = torch.randint(0, 5, (batch, *size), device=device)
    e = torch.randint(0, 2, (batch, 4), device=device).float()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if amp else contextlib.nullcontext
    times = []
    for i in range(steps + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with ctx():
            taps = model.forward_taps(x)
            loss = F.cross_entropy(taps["logits"].float(), y) + 0.1 * F.binary_cross_entropy_with_logits(
                taps["exist"].float(), e)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="288x800", help="HxW")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="96x256, batch 2, 2 steps")
    ap.add_argument("--models", nargs="*", default=None)
    args = ap.parse_args()
    h, w = (96, 256) if args.quick else map(int, args.size.lower().split("x"))
    batch, steps = (2, 2) if args.quick else (args.batch, args.steps)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    names = args.models or model_names("student")
    rows = []
    for name in names:
        row = {"model": name, "fp32_img_s": batch / step_time(name, (h, w), batch, steps, device)}
        if device.type == "cuda":
            row["amp_img_s"] = batch / step_time(name, (h, w), batch, steps, device, amp=True)
            row["amp_cl_img_s"] = batch / step_time(name, (h, w), batch, steps, device, amp=True, channels_last=True)
            row["amp_vs_fp32"] = row["amp_img_s"] / row["fp32_img_s"]
            row["amp_cl_vs_fp32"] = row["amp_cl_img_s"] / row["fp32_img_s"]
        rows.append(row)
        cells = "  ".join(f"{k} {v:.2f}" for k, v in row.items() if k != "model")
        print(f"{name:<22} {cells}", flush=True)
    result = {"size": [h, w], "batch": batch, "steps": steps, "device": str(device),
              "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
              "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None, "rows": rows}
    print(f"wrote {write_json(OUT, result)}")


if __name__ == "__main__":
    main()
