"""QAT checkpoint -> verified INT8 Q/DQ ONNX with its sidecar (``python -m distill qat-export``).

The fake-quantised student of a ``python -m distill qat`` run is converted with torchao's
``convert_pt2e`` (int8 weights, BatchNorm folded, quantize/dequantize ops) and exported through
the same ``export_module`` as every FP32 model, so the runtime runs it unchanged. The file is then
checked at task level (INT8 tolerance) against the fake-quantised PyTorch model it came from, and
for target ``tensorrt`` against TensorRT's Q/DQ rules (``export.quantize.qdq_violations``); the
comparison with the FP32 student the run started from is recorded in the sidecar as well (it
measures what QAT changed, so it informs and does not gate). A failure leaves nothing behind.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from export.artifacts import ExportError, check_out, commit, staged
from export.verify import OrtRunner, TorchRunner, VerifyReport, check_build, load_frames, model_inputs

ACTIVATION_TYPE = {"tensorrt": "int8", "cpu": "uint8"}


def _summary(rep: VerifyReport) -> dict[str, Any]:
    return {k: v for k, v in rep.to_dict().items() if k not in ("ref", "test")}


def export_qat(checkpoint: str | Path, out: str | Path, frames: Any = None, verify_frames: int = 8, opset: int = 18,
               fused_pre: bool = False, fused_post: bool = False, quiet: bool = True) -> Path:
    """Export a QAT checkpoint to a Q/DQ ONNX ``out`` (+ sidecar, ``precision: int8``); return ``out``.

    ``frames`` (list, image folder, video; None = synthetic scenes) feed the task-level check
    against the fake-quantised PyTorch model on ``verify_frames`` frames (0 skips it).
    """
    import onnx

    from distill.checkpoint import file_sha256
    from distill.qat import convert_student, qat_student_from_checkpoint
    from export.deploy import DeployModule
    from export.onnx import _run_torch, build_meta, checkpoint_geometry, embed_meta, export_module, sampling_rows
    from export.quantize import qdq_violations

    out = check_out(out, ".onnx")
    student, ckpt = qat_student_from_checkpoint(checkpoint)
    info = ckpt["qat"]
    target = info["target"]
    geometry = checkpoint_geometry(ckpt)
    task = ckpt["spec"]["task"]
    rows = sampling_rows(geometry)[1] if fused_post and task == "lanes" else None
    reference = DeployModule(student, task, fused_pre, fused_post, rows).eval()
    module = DeployModule(convert_student(student), task, fused_pre, fused_post, rows).eval()
    source = Path(checkpoint).resolve()
    meta = build_meta(ckpt, geometry, module.output_names, fused_pre, fused_post, False, False, precision="int8",
                      source=source, sha256=file_sha256(checkpoint))
    meta.extra["quantization"] = {"qat": True, "target": target, "format": "QDQ", "tool": info["tool"],
                                  "from": str(source), "fp32_student": info["source_checkpoint"],
                                  "activation_type": ACTIVATION_TYPE[target], "weight_type": "int8",
                                  "per_channel": True, "symmetric_activations": target == "tensorrt",
                                  "calib_images": info["calib_images"], "qat_steps": int(ckpt.get("step", 0)),
                                  "kd": list(info.get("kd", [])), "teacher": info.get("teacher", "")}
    with staged(out) as (tmp, tmp_side):
        export_module(module, meta, tmp, opset, verify_frames=0, quiet=True)
        if target == "tensorrt":
            problems = qdq_violations(tmp)
            if problems:
                raise ExportError(f"{out.name}: the Q/DQ graph breaks TensorRT's rules: " + "; ".join(problems[:5]))
        if verify_frames > 0:
            feeds = model_inputs(meta, load_frames(frames, verify_frames))
            ort = OrtRunner(tmp)
            rep = check_build(meta, lambda f: _run_torch(reference, f), ort, feeds, "int8",
                              f"torch:{source.name} (fake-quantised)", out.name)
            if not quiet:
                print(rep.table())
            meta.extra["verification"] = _summary(rep)
            if not rep.ok:
                raise ExportError(f"{out.name} disagrees with the fake-quantised PyTorch model: "
                                  + "; ".join(rep.failures))
            fp32 = Path(info["source_checkpoint"])
            if fp32.is_file():
                rep32 = check_build(meta, TorchRunner(fp32, meta), ort, feeds, "int8", f"torch:{fp32.name}", out.name)
                meta.extra["verification_vs_fp32_student"] = _summary(rep32)
        proto = onnx.load(str(tmp))
        embed_meta(proto, meta)
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
        meta.save(tmp_side)
        return commit(tmp, tmp_side, out)
