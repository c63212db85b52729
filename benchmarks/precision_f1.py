"""Task-level cost of each precision-explicit ONNX: F1 through the runtime, against FP32.

    python -m benchmarks.precision_f1 [--checkpoint runs/demo/runs/distilled/best.pt] [--root runs/demo/data]

Exports the checkpoint to FP32 ONNX, then FP16 (``quantize --precision fp16``), INT8 for the CPU
(``--target cpu``) and INT8 for TensorRT (``--target tensorrt``, the Q/DQ file TensorRT 10 and 11
build from), calibrated on synthetic scenes, and scores each on the dataset's test split through the
runtime's pre-processing, ONNX Runtime (CPU) and the runtime's lane decoding, with the CULane
protocol. The defaults are what ``make demo`` leaves behind. Writes benchmarks/out/precision_f1.json.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from runtime.sinks import write_json

OUT = Path(__file__).resolve().parent / "out" / "precision_f1.json"


def score_precisions(checkpoint: Path, root: Path, work: Path, max_images: int = 0) -> list[dict]:
    """One row per model file: F1 / precision / recall, and the F1 change against FP32."""
    from export.accuracy import task_scores
    from export.onnx import export_onnx
    from export.parity import verify
    from export.quantize import quantize_fp16, quantize_int8

    # the export-time check is replaced by a larger one recorded in the row (16 frames instead of 4),
    # so a file that the default check would refuse is still scored, and the row says so
    fp32 = export_onnx(checkpoint, work / "fp32.onnx")
    files = {"fp32": fp32,
             "fp16": quantize_fp16(fp32, work / "fp16.onnx", verify_frames=0),
             "int8 (cpu)": quantize_int8(fp32, work / "int8_cpu.onnx", "synthetic", target="cpu", verify_frames=0),
             "int8 (tensorrt)": quantize_int8(fp32, work / "int8_trt.onnx", "synthetic", target="tensorrt",
                                              verify_frames=0)}
    rows = []
    for name, path in files.items():
        rep = verify(fp32, path, k=16, quiet=True)
        rows.append({"model": name, **task_scores(path, root, "test", max_images=max_images),
                     "argmax_agreement": rep.argmax_agreement, "lane_count_match": rep.lane_count_match,
                     "verify_ok": rep.ok})
    for r in rows:
        r["f1_delta_vs_fp32"] = r["f1"] - rows[0]["f1"]
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=Path("runs/demo/runs/distilled/best.pt"))
    p.add_argument("--root", type=Path, default=Path("runs/demo/data"), help="CULane-layout dataset (test split)")
    p.add_argument("--max-images", type=int, default=0, help="0 = the whole test split")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    for path in (args.checkpoint, args.root):
        if not path.exists():
            p.error(f"{path} not found (run `make demo` first, or pass --checkpoint and --root)")
    with tempfile.TemporaryDirectory() as tmp:
        rows = score_precisions(args.checkpoint, args.root, Path(tmp), args.max_images)
    print(f"{'model':<16} {'F1':>6} {'P':>6} {'R':>6} {'dF1':>6} {'argmax':>7} {'lanes=':>6} check images")
    for r in rows:
        print(f"{r['model']:<16} {100 * r['f1']:>6.1f} {100 * r['precision']:>6.1f} {100 * r['recall']:>6.1f} "
              f"{100 * r['f1_delta_vs_fp32']:>+6.1f} {100 * r['argmax_agreement']:>7.2f} {r['lane_count_match']:>6.2f} "
              f"{'pass' if r['verify_ok'] else 'FAIL':<5} {r['images']}")
    print(f"wrote {write_json(args.out, {'checkpoint': str(args.checkpoint), 'root': str(args.root), 'rows': rows})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
