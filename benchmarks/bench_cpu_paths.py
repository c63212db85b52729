"""Every CPU inference path for one student, side by side in one run: what a user builds by hand
against what lanekd ships.

    python -m benchmarks.bench_cpu_paths [--students enet,erfnet] [--size 288x800] [--rounds 5]
                                         [--threads 2] [--quick]

By hand: PyTorch eager, ``torch.compile`` (inductor, freezing), a plain ``torch.onnx.export`` of
the same module (raw outputs, static 1x3xHxW) on ONNX Runtime FP32 and INT8 (``quantize_static``,
QDQ, defaults) and on OpenVINO with its defaults (bfloat16 on CPUs that have it). lanekd: the
exported FP32 file and its INT8 Q/DQ file on every backend available here (``create_backend``),
and OpenVINO's bfloat16 as an explicit opt-in. Random weights with non-trivial BatchNorm
statistics (a fresh BatchNorm's identical weight/variance tensors get merged by the exporter).

Timing: interleaved rounds (each round times every path, starting one path later each round), the
median per path; the machine is shared, so quote the ratios, not the absolute numbers. Agreement:
pixel arg-max of each path against PyTorch eager on the same input. Writes
benchmarks/out/bench_cpu_paths.json and .png and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

OUT = Path(__file__).resolve().parent / "out"
Run = Callable[[np.ndarray], np.ndarray]          # input -> (C, H, W) class scores of the one image


def random_student(name: str, seed: int = 0) -> Any:
    """A student with random weights and random (trained-looking) BatchNorm statistics."""
    import torch

    from distill.models.base import build_model

    torch.manual_seed(seed)
    kwargs = {"decoder": "interp"} if name == "enet" else {}
    model = build_model(name, num_classes=5, lane_slots=4, **kwargs).eval()
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=g)
            m.bias.data = 0.1 * torch.randn(n, generator=g)
            m.running_mean.data = 0.1 * torch.randn(n, generator=g)
            m.running_var.data = 0.5 + torch.rand(n, generator=g)
    return model, kwargs


def save_student(model: Any, name: str, kwargs: dict, size: tuple[int, int], path: Path) -> Path:
    from distill.checkpoint import save_checkpoint

    return save_checkpoint(path, {
        "model_name": name, "model_kwargs": {"num_classes": 5, "lane_slots": 4, **kwargs},
        "spec": {"task": "lanes", "class_names": ["background", "l1", "l2", "l3", "l4"], "lane_slots": 4},
        "input_size": list(size), "crop_top": 0, "orig_size": [590, 1640], "state_dict": model.state_dict()})


def hand_paths(model: Any, x: np.ndarray, folder: Path, calib: list[np.ndarray],
               compile_: bool = True) -> tuple[dict[str, Run], dict[str, str]]:
    """What a user builds without lanekd; returns (paths, skipped-with-reason)."""
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    paths: dict[str, Run] = {}
    skipped: dict[str, str] = {}
    first = lambda out: out[0] if isinstance(out, (tuple, list)) else out  # noqa: E731

    def eager(a: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return first(model(torch.from_numpy(a)))[0].numpy()
    paths["hand: PyTorch eager"] = eager
    try:
        if not compile_:
            raise RuntimeError("left out by --no-compile")
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        compiled = torch.compile(model, backend="inductor")
        with torch.inference_mode():
            compiled(torch.from_numpy(x))                       # compiles here, not in the timing

        def comp(a: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return first(compiled(torch.from_numpy(a)))[0].numpy()
        paths["hand: torch.compile (inductor, freezing)"] = comp
    except Exception as exc:      # no C++ compiler, an inductor bug: say which and go on
        skipped["hand: torch.compile (inductor, freezing)"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"

    fp32 = folder / "hand_fp32.onnx"
    torch.onnx.export(model, (torch.from_numpy(x),), str(fp32), input_names=["x"], dynamo=True)
    int8 = folder / "hand_int8.onnx"

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calib)

        def get_next(self) -> dict[str, np.ndarray] | None:
            a = next(self.items, None)
            return None if a is None else {"x": a}
    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ)
    for label, f in (("FP32", fp32), ("INT8", int8)):
        so = ort.SessionOptions()
        so.intra_op_num_threads = THREADS
        sess = ort.InferenceSession(str(f), so, providers=["CPUExecutionProvider"])
        paths[f"hand: ONNX Runtime {label}"] = (lambda s: lambda a: s.run(None, {"x": a})[0][0])(sess)
    try:
        from runtime.backends.openvino import core   # the process's one Core (a second one's plugin breaks signals)

        req = core().compile_model(str(fp32), "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                    "INFERENCE_NUM_THREADS": str(THREADS)}).create_infer_request()
        paths["hand: OpenVINO FP32 file, defaults (bf16 here)"] = lambda a: req.infer({0: a})[0][0].copy()
    except ImportError:
        skipped["hand: OpenVINO"] = "openvino is not installed"
    return paths, skipped


def lanekd_paths(fp32: Path, int8: Path) -> tuple[dict[str, Run], dict[str, str], dict[str, Any]]:
    """lanekd's exported files on every backend available here."""
    from runtime.backends.base import BACKENDS, BackendError, backend_class, create_backend

    paths: dict[str, Run] = {}
    skipped: dict[str, str] = {}
    keep: dict[str, Any] = {}
    variants = [(b, {}) for b in BACKENDS if ".onnx" in backend_class(b).suffixes]
    variants.append(("openvino", {"inference_precision": "bf16"}))
    for backend, opts in variants:
        for label, f in (("FP32", fp32), ("INT8", int8)):
            name = f"lanekd: {backend} {label}" + (" (bf16 opt-in)" if opts else "")
            try:
                be = create_backend(f, backend, output_names=["probs"], threads=THREADS, **opts).open()
            except BackendError as exc:
                skipped[name] = str(exc).split(": ", 1)[-1]
                continue
            keep[name] = be
            paths[name] = (lambda b: lambda a: b.infer({"image": a})["probs"][0])(be)
    return paths, skipped, keep


def ort_variants(lanekd_fp32: Path, hand_fp32: Path) -> dict[str, Run]:
    """ONNX Runtime settings tried on lanekd's FP32 file, one change each against the backend as it
    ships (intra-op threads do not spin), plus plain sessions (ONNX Runtime's defaults) on lanekd's
    file and on the hand export: where lanekd's overhead on ORT came from."""
    import onnxruntime as ort

    from runtime.backends.base import create_backend

    def session(path: Path, **cfg: Any) -> Any:
        so = ort.SessionOptions()
        so.intra_op_num_threads = THREADS
        if "level" in cfg:
            so.graph_optimization_level = cfg["level"]
        for k, v in cfg.get("entries", {}).items():
            so.add_session_config_entry(k, v)
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    out: dict[str, Run] = {}
    be = create_backend(lanekd_fp32, "onnxruntime", output_names=["probs", "exist"], threads=THREADS).open()
    out["lanekd backend as shipped (probs + exist)"] = lambda a: be.infer({"image": a})["probs"][0]
    spin = create_backend(lanekd_fp32, "onnxruntime", output_names=["probs", "exist"], threads=THREADS,
                          spin=True).open()
    out["lanekd backend, spin=True (ONNX Runtime's default)"] = lambda a: spin.infer({"image": a})["probs"][0]
    be1 = create_backend(lanekd_fp32, "onnxruntime", output_names=["probs"], threads=THREADS).open()
    out["lanekd backend, probs only"] = lambda a: be1.infer({"image": a})["probs"][0]
    plain = session(lanekd_fp32)
    out["lanekd file, plain session (defaults)"] = lambda a: plain.run(["probs"], {"image": a})[0][0]
    ext = session(lanekd_fp32, level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    out["lanekd file, ORT_ENABLE_EXTENDED"] = lambda a: ext.run(["probs"], {"image": a})[0][0]
    nospin = session(lanekd_fp32, entries={"session.intra_op.allow_spinning": "0"})
    out["lanekd file, no thread spinning"] = lambda a: nospin.run(["probs"], {"image": a})[0][0]
    bound = session(lanekd_fp32)
    binding = bound.io_binding()
    shape = [d if isinstance(d, int) else 1 for d in bound.get_outputs()[0].shape]
    buf = np.empty(shape, np.float32)
    binding.bind_ortvalue_output("probs", ort.OrtValue.ortvalue_from_numpy(buf))

    def iob(a: np.ndarray) -> np.ndarray:
        binding.bind_cpu_input("image", a)
        bound.run_with_iobinding(binding)
        return buf[0]
    out["lanekd file, IO binding into a preallocated output"] = iob
    hand = session(hand_fp32)
    out["hand export (logits), plain session"] = lambda a: hand.run(None, {"x": a})[0][0]
    return out


def interleaved(paths: dict[str, Run], x: np.ndarray, rounds: int, reps: int) -> dict[str, list[float]]:
    """Per path, ``rounds * reps`` call times (s); round r starts with path r (mod n)."""
    names = list(paths)
    for n in names:
        paths[n](x)                                             # warm-up
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[: r % len(names)]:
            for _ in range(reps):
                t0 = time.perf_counter()
                paths[n](x)
                times[n].append(time.perf_counter() - t0)
    return times


def bench_student(name: str, size: tuple[int, int], rounds: int, reps: int, folder: Path,
                  compile_: bool = True) -> dict[str, Any]:
    from export.onnx import export_onnx
    from export.quantize import quantize_int8
    from export.verify import synthetic_frames
    from runtime.metadata import ModelMeta
    from runtime.preprocess import Preprocessor

    model, kwargs = random_student(name)
    ckpt = save_student(model, name, kwargs, size, folder / f"{name}.pt")
    fp32 = export_onnx(ckpt, folder / f"{name}_fp32.onnx", verify_frames=1)
    int8 = quantize_int8(fp32, folder / f"{name}_int8.onnx", frames="synthetic", calib_frames=8, verify_frames=1)
    pre = Preprocessor(ModelMeta.load(fp32.with_suffix(".json")))
    frames = [pre(f).copy() for f in synthetic_frames(9, seed=5)]
    x, calib = frames[0], frames[1:]
    hand, skipped = hand_paths(model, x, folder, calib, compile_)
    ours, skipped_ours, keep = lanekd_paths(fp32, int8)
    paths = {**hand, **ours}
    ref = paths["hand: PyTorch eager"](x).argmax(0)
    agree = {n: float((np.asarray(run(x)).argmax(0) == ref).mean()) for n, run in paths.items()}
    times = interleaved(paths, x, rounds, reps)
    for be in keep.values():
        be.close()
    med = {n: 1e3 * float(np.median(t)) for n, t in times.items()}
    ort_ms = {n: 1e3 * float(np.median(t)) for n, t in
              interleaved(ort_variants(fp32, folder / "hand_fp32.onnx"), x, rounds, reps).items()}
    best_hand = min((n for n in hand), key=med.get)
    best_ours = min((n for n in ours), key=med.get) if ours else None
    exact = [n for n in paths if "bf16" not in n]
    bh = min((n for n in hand if n in exact), key=med.get)
    bo = min((n for n in ours if n in exact), key=med.get) if ours else None
    return {"student": name, "size": list(size), "median_ms": med, "argmax_agreement": agree, "ort_variants_ms": ort_ms,
            "samples": {n: len(t) for n, t in times.items()}, "skipped": {**skipped, **skipped_ours},
            "best_hand": best_hand, "best_lanekd": best_ours,
            "ratio": med[best_hand] / med[best_ours] if best_ours else None,
            "best_hand_fp32_exact": bh, "best_lanekd_fp32_exact": bo,
            "ratio_without_bf16": med[bh] / med[bo] if bo else None}


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| student | path | median ms | arg-max agreement vs eager |", "|---|---|---|---|"]
    for r in results:
        for n, ms in sorted(r["median_ms"].items(), key=lambda kv: kv[1]):
            lines.append(f"| {r['student']} {r['size'][0]}x{r['size'][1]} | {n} | {ms:.1f} "
                         f"| {100 * r['argmax_agreement'][n]:.2f} % |")
        for n, why in r["skipped"].items():
            lines.append(f"| {r['student']} | {n} | skipped: {why} | |")
    lines += ["", "| student | best by hand | lanekd's best | ratio (hand ms / lanekd ms) | same, bf16 paths left out |",
              "|---|---|---|---|---|"]
    for r in results:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] else "-"
        r2 = f"{r['ratio_without_bf16']:.2f}x ({r['best_hand_fp32_exact']} vs {r['best_lanekd_fp32_exact']})" \
            if r["ratio_without_bf16"] else "-"
        lines.append(f"| {r['student']} | {r['best_hand']} | {r['best_lanekd']} | {ratio} | {r2} |")
    lines += ["", "| student | ONNX Runtime, FP32: one change at a time | median ms | vs as shipped |", "|---|---|---|---|"]
    for r in results:
        v = r.get("ort_variants_ms", {})
        base = v.get("lanekd backend as shipped (probs + exist)")
        for n, ms in v.items():
            lines.append(f"| {r['student']} | {n} | {ms:.1f} | {base / ms:.2f}x |" if base else f"| {n} | {ms:.1f} | |")
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(7 * len(results), 5), squeeze=False)
    for ax, r in zip(axes[0], results):
        items = sorted(r["median_ms"].items(), key=lambda kv: kv[1])
        colors = ["tab:orange" if n.startswith("lanekd") else "tab:blue" for n, _ in items]
        ax.barh([n for n, _ in items], [v for _, v in items], color=colors)
        ax.invert_yaxis()
        ax.set_xlabel("median latency, batch 1 (ms)")
        ax.set_title(f"{r['student']} {r['size'][0]}x{r['size'][1]} (blue: by hand, orange: lanekd)")
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


THREADS = 2


def main(argv: list[str] | None = None) -> int:
    global THREADS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", default="enet,erfnet")
    ap.add_argument("--size", default="288x800", help="input HxW")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3, help="calls per path per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="ENet at 32x96, one round: a smoke run")
    ap.add_argument("--no-compile", action="store_true", help="leave torch.compile out (it compiles for minutes)")
    ap.add_argument("--out", default=str(OUT / "bench_cpu_paths.json"))
    args = ap.parse_args(argv)
    import torch

    THREADS = args.threads
    torch.set_num_threads(THREADS)
    h, w = (int(v) for v in args.size.lower().split("x"))
    students, rounds, reps = args.students.split(","), args.rounds, args.reps
    if args.quick:
        students, (h, w), rounds, reps = ["enet"], (32, 96), 1, 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as d:
        for s in students:
            results.append(bench_student(s, (h, w), rounds, reps, Path(d), not args.no_compile))
            print(table(results[-1:]), flush=True)
    from runtime.bench import system_info

    report = {"threads": THREADS, "rounds": rounds, "reps": reps, "system": system_info(THREADS),
              "students": results, "png": str(plot(results, out.with_suffix(".png")))}
    out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n" + table(results))
    print(f"wrote {out} and {report['png']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
