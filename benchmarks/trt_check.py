"""The TensorRT recipe end to end: precision-explicit ONNX -> strongly typed engines, verified, timed.

    python -m benchmarks.trt_check MODEL.onnx|CHECKPOINT.pt [--precisions fp32 fp16 int8] [--quick]

For a user with a GPU and TensorRT 10.x or 11.x. FP32 is the verified ONNX, FP16 the float16 ONNX
(``export quantize --precision fp16``), INT8 the TensorRT-target Q/DQ ONNX (``--precision int8
--target tensorrt``, calibrated on synthetic scenes); each becomes an engine with no precision flag.
Every engine is checked against ONNX Runtime running the same ONNX (inside ``build_engine``) and
against the FP32 ONNX at task level on the same frames, then timed. Results are measured, never
filled in: without TensorRT the script says so and exits with status 2. Writes
benchmarks/out/trt_check.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from runtime.sinks import write_json

OUT = Path(__file__).resolve().parent / "out" / "trt_check.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", nargs="?", help=".onnx (with model.json) or a lanekd checkpoint")
    p.add_argument("--precisions", nargs="*", default=["fp32", "fp16", "int8"])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--quick", action="store_true", help="fp16 only, 2 frames, 10 iterations")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    if importlib.util.find_spec("tensorrt") is None:
        print("TensorRT not available: nothing was built or measured. On a GPU machine: pip install .[gpu]",
              file=sys.stderr)
        return 2
    if args.model is None:
        p.error("give a .onnx model or a checkpoint")
    if args.quick:
        args.precisions, args.frames, args.iters = ["fp16"], 2, 10

    from export.artifacts import read_meta
    from export.onnx import export_onnx
    from export.quantize import quantize_fp16, quantize_int8
    from export.tensorrt import EngineRunner, build_engine
    from export.verify import OrtRunner, compare, model_inputs, synthetic_frames

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = Path(args.model)
        onnx = src if src.suffix == ".onnx" else export_onnx(src, work / "model.onnx", verify_frames=2)
        meta = read_meta(onnx)
        feeds = model_inputs(meta, synthetic_frames(args.frames, seed=3))
        ref = [OrtRunner(onnx)(f) for f in feeds]
        for prec in args.precisions:
            model = {"fp32": lambda: onnx,
                     "fp16": lambda: quantize_fp16(onnx, work / "model_fp16.onnx"),
                     "int8": lambda: quantize_int8(onnx, work / "model_int8.onnx", "synthetic", target="tensorrt",
                                                   calib_frames=32)}[prec]()
            eng = build_engine(model, work / f"model_{prec}.engine", precision=prec)
            run = EngineRunner(eng)
            rep = compare(meta, ref, [run(f) for f in feeds], prec, onnx.name, eng.name)
            for f in feeds[:3]:
                run(f)
            ts = []
            for i in range(args.iters):
                t = time.perf_counter()
                run(feeds[i % len(feeds)])
                ts.append((time.perf_counter() - t) * 1e3)
            run.close()
            rows.append({"precision": prec, "ok": rep.ok, "failures": rep.failures,
                         "argmax_agreement": rep.argmax_agreement, "lane_count_match": rep.lane_count_match,
                         "outputs": rep.outputs, "p50_ms": float(np.median(ts)),
                         "p90_ms": float(np.percentile(ts, 90)), "tensorrt": read_meta(eng).extra.get("tensorrt"),
                         "note": "includes host<->device copies"})
    print(f"{'precision':<9} {'ok':<5} {'argmax':>8} {'p50 ms':>8} {'p90 ms':>8}")
    for r in rows:
        print(f"{r['precision']:<9} {str(r['ok']):<5} {r['argmax_agreement'] or 0:>8.4f} {r['p50_ms']:>8.2f} "
              f"{r['p90_ms']:>8.2f}")
    print(f"wrote {write_json(args.out, {'model': str(args.model), 'rows': rows})}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
