"""Checkpoint -> verified ONNX model + ``model.json`` sidecar.

The graph is exported with the dynamo-based exporter (the one that handles ENet's max-unpooling),
saved as one self-contained file, checked with ``onnx.checker``, and verified against PyTorch on
real frames before it gets its final name: a failed export leaves nothing behind.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from export.artifacts import ExportError, check_out, commit, staged
from export.verify import OrtRunner, check_build, load_frames, model_inputs
from runtime.geometry import Geometry
from runtime.metadata import ONNX_METADATA_KEY, ModelMeta, TensorSpec

__all__ = ["ExportError", "export_onnx", "export_module", "build_meta", "embed_meta", "embedded_meta",
           "meta_from_checkpoint"]

SUPPORTED_OPSETS = (17, 18)
INPUT_NAME = "image"

OUTPUT_MEANINGS = {
    "probs": "softmax class probabilities at the input resolution",
    "exist": "lane-existence probabilities (sigmoid), one per lane slot",
    "peak_vals": "per lane slot and sampling row: the maximum probability over the row",
    "peak_cols": "per lane slot and sampling row: the column (input pixels) of that maximum, first max wins",
    "classes": "per-pixel arg-max class id",
}


def versions() -> dict[str, str]:
    """Versions of the tools that produced an artefact (recorded in the sidecar)."""
    import onnx
    import onnxruntime
    import torch

    out = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    try:
        from importlib.metadata import version

        out["lanekd"] = version("lanekd")
    except Exception:  # not installed as a distribution (e.g. run from a source tree)
        pass
    return out


def checkpoint_geometry(ckpt: dict[str, Any]) -> Geometry:
    """The crop/resize geometry a checkpoint was trained with (input_size, crop_top, orig_size)."""
    try:
        in_h, in_w = (int(v) for v in ckpt["input_size"])
        orig_h, orig_w = (int(v) for v in ckpt.get("orig_size", (590, 1640)))
        return Geometry(orig_h, orig_w, in_h, in_w, int(ckpt.get("crop_top", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        from distill.checkpoint import CheckpointError

        raise CheckpointError(f"checkpoint has no usable input geometry (input_size/orig_size/crop_top): {exc}") from None


def sampling_rows(geometry: Geometry) -> tuple[list[float], list[int]]:
    """Lane sampling rows: original-frame y (for the sidecar) and input-row indices (for fused post)."""
    from export.deploy import input_rows
    from runtime.postprocess import LaneDecodeConfig, sample_rows

    orig_rows, in_rows = sample_rows(geometry, LaneDecodeConfig())
    return [float(r) for r in orig_rows], input_rows(in_rows, geometry.in_h)


def build_meta(ckpt: dict[str, Any], geometry: Geometry, output_names: Sequence[str], fused_pre: bool,
               fused_post: bool, dynamic_batch: bool, dynamic_hw: bool, precision: str = "fp32",
               source: str | Path | None = None, sha256: str = "") -> ModelMeta:
    """The sidecar for a model exported from ``ckpt`` with the given options."""
    from distill.checkpoint import spec_from_checkpoint

    spec = spec_from_checkpoint(ckpt)
    batch: int | str = "batch" if dynamic_batch else 1
    h: int | str = "height" if dynamic_hw else geometry.in_h
    w: int | str = "width" if dynamic_hw else geometry.in_w
    if fused_pre:
        inp = TensorSpec(INPUT_NAME, [batch, h, w, 3], "uint8", "BGR uint8 frame, cropped and resized")
    else:
        inp = TensorSpec(INPUT_NAME, [batch, 3, h, w], "float32", "RGB, (x - mean) / std")
    L, C = spec.lane_slots, spec.num_classes
    rows: list[float] = []
    extra: dict[str, Any] = {}
    if spec.task == "lanes" and L > 0:
        rows, in_rows = sampling_rows(geometry)
        extra["input_rows"] = in_rows
    shapes = {"probs": ([batch, C, h, w], "float32"), "exist": ([batch, L], "float32"),
              "peak_vals": ([batch, L, len(rows)], "float32"), "peak_cols": ([batch, L, len(rows)], "int32"),
              "classes": ([batch, h, w], "uint8")}
    outputs = [TensorSpec(n, shapes[n][0], shapes[n][1], OUTPUT_MEANINGS[n]) for n in output_names]
    return ModelMeta(model=str(ckpt["model_name"]), task=spec.task, classes=list(spec.class_names),
                     lane_slots=L, geometry=geometry, inputs=[inp], outputs=outputs,
                     layout="NHWC" if fused_pre else "NCHW", fused_preprocess=fused_pre,
                     fused_postprocess=fused_post, sample_rows=rows, precision=precision,
                     source_checkpoint=str(source or ""), checkpoint_sha256=sha256, versions=versions(),
                     extra=extra)


def meta_from_checkpoint(checkpoint: str | Path, fused_pre: bool = False, fused_post: bool = False) -> ModelMeta:
    """The sidecar an FP32 export of ``checkpoint`` would get (used to run a checkpoint like a model)."""
    from distill.checkpoint import file_sha256, model_from_checkpoint
    from export.deploy import DeployModule

    model, ckpt = model_from_checkpoint(checkpoint)
    geometry = checkpoint_geometry(ckpt)
    task = ckpt["spec"]["task"]
    names = DeployModule(model, task, fused_pre, fused_post, rows=[0]).output_names
    return build_meta(ckpt, geometry, names, fused_pre, fused_post, True, False,
                      source=Path(checkpoint).resolve(), sha256=file_sha256(checkpoint))


def embed_meta(model_proto: Any, meta: ModelMeta) -> None:
    """Copy the sidecar into the ONNX ``metadata_props`` (replacing an older copy)."""
    props = model_proto.metadata_props
    for i in reversed(range(len(props))):
        if props[i].key == ONNX_METADATA_KEY:
            del props[i]
    entry = props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, meta.to_json()


def embedded_meta(onnx_path: str | Path) -> ModelMeta:
    """The sidecar copy stored inside an ONNX file."""
    import json

    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    for p in m.metadata_props:
        if p.key == ONNX_METADATA_KEY:
            return ModelMeta.from_dict(json.loads(p.value))
    raise ExportError(f"{onnx_path}: no '{ONNX_METADATA_KEY}' entry in metadata_props")


def _torch_export(module: Any, example: Any, path: Path, opset: int, dynamic_batch: bool, dynamic_hw: bool,
                  output_names: Sequence[str]) -> None:
    import torch

    dims: dict[int, Any] = {}
    if dynamic_batch:
        dims[0] = torch.export.Dim("batch", min=1, max=1024)
    if dynamic_hw:
        hw = (1, 2) if module.fused_pre else (2, 3)
        dims[hw[0]] = torch.export.Dim.AUTO
        dims[hw[1]] = torch.export.Dim.AUTO
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                                    output_names=list(output_names),
                                    dynamic_shapes={"image": dims} if dims else None,
                                    external_data=False, verbose=False)
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    program.save(str(path), external_data=False)


def export_onnx(checkpoint: str | Path, out: str | Path, opset: int = 18, dynamic_batch: bool = False,
                dynamic_hw: bool = False, fused_pre: bool = False, fused_post: bool = False,
                verify_frames: int = 8, frames: Any = None, quiet: bool = True) -> Path:
    """Export ``checkpoint`` to ``out`` (``.onnx``) with a ``model.json`` sidecar; return ``out``.

    The input is a static 1x3xHxW (or 1xHxWx3 with ``fused_pre``) by default: what a dashcam
    runtime feeds, and what TensorRT and ONNX Runtime optimise best; ``dynamic_batch`` opts in.
    ``frames`` (a list of BGR frames, an image folder or a video; None = synthetic scenes) feed the
    verification against PyTorch on ``verify_frames`` frames (0 skips it, not recommended). FP32
    must agree to 1e-4 and give the same lanes, otherwise ``ExportError`` and nothing is written.
    """
    from distill.checkpoint import QAT_KEY, file_sha256, load_checkpoint, model_from_checkpoint
    from export.deploy import DeployModule

    if opset not in SUPPORTED_OPSETS:
        raise ExportError(f"opset {opset} is not supported; use one of {SUPPORTED_OPSETS} (18 is the default)")
    out = check_out(out, ".onnx")
    if dynamic_hw and fused_post:
        raise ExportError("fused post-processing samples fixed input rows, so it cannot take a dynamic H/W")
    ckpt = load_checkpoint(checkpoint)
    if ckpt.get(QAT_KEY):               # exporting it as FP32 would drop its quantisation silently
        raise ExportError(f"{checkpoint} is a QAT checkpoint (INT8, target {ckpt[QAT_KEY].get('target')}); export "
                          f"it with `python -m distill qat-export {checkpoint} OUT.onnx`, not as an FP32 model")
    model, ckpt = model_from_checkpoint(ckpt)
    geometry = checkpoint_geometry(ckpt)
    task = ckpt["spec"]["task"]
    rows = None
    if fused_post and task == "lanes":
        rows = sampling_rows(geometry)[1]
    module = DeployModule(model, task, fused_pre, fused_post, rows).eval()
    meta = build_meta(ckpt, geometry, module.output_names, fused_pre, fused_post, dynamic_batch, dynamic_hw,
                      source=Path(checkpoint).resolve(), sha256=file_sha256(checkpoint))
    return export_module(module, meta, out, opset, verify_frames, frames, quiet,
                         ref_name=f"torch:{Path(checkpoint).name}")


def export_module(module: Any, meta: ModelMeta, out: str | Path, opset: int = 18, verify_frames: int = 8,
                  frames: Any = None, quiet: bool = True, ref_name: str = "torch") -> Path:
    """Export a ``DeployModule`` described by ``meta``: export, check, embed the sidecar, verify, rename.

    Which input dims are dynamic is read from the sidecar's input shape (a name = dynamic), so the
    graph and its sidecar cannot disagree.
    """
    import onnx
    import torch

    dims = meta.inputs[0].shape
    dynamic_batch = isinstance(dims[0], str)
    dynamic_hw = any(isinstance(d, str) for d in dims[1:])

    if opset not in SUPPORTED_OPSETS:
        raise ExportError(f"opset {opset} is not supported; use one of {SUPPORTED_OPSETS} (18 is the default)")
    out = check_out(out, ".onnx")
    geometry = meta.geometry
    meta.extra["opset"] = opset
    batch = 2 if dynamic_batch else 1           # a traced batch of 2 keeps the exporter from fixing it to 1
    if module.fused_pre:
        example = torch.zeros(batch, geometry.in_h, geometry.in_w, 3, dtype=torch.uint8)
    else:
        example = torch.zeros(batch, 3, geometry.in_h, geometry.in_w)
    with staged(out) as (tmp, tmp_side):
        _torch_export(module, example, tmp, opset, dynamic_batch, dynamic_hw, module.output_names)
        proto = onnx.load(str(tmp))
        got = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
        if got and max(got) != opset:
            raise ExportError(f"exporter produced opset {got}, asked for {opset}")
        onnx.checker.check_model(proto, full_check=True)
        embed_meta(proto, meta)
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
        meta.save(tmp_side)
        if verify_frames > 0:
            feeds = model_inputs(meta, load_frames(frames, verify_frames))
            rep = check_build(meta, lambda f: _run_torch(module, f), OrtRunner(tmp), feeds, "fp32", ref_name,
                              out.name)
            if not quiet:
                print(rep.table())
            if not rep.ok:
                raise ExportError(f"{out.name} does not match PyTorch: " + "; ".join(rep.failures))
        return commit(tmp, tmp_side, out)


def _run_torch(module: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import torch

    (x,) = feeds.values()
    with torch.inference_mode():
        outs = module(torch.from_numpy(np.ascontiguousarray(x)))
    return {n: o.numpy() for n, o in zip(module.output_names, outs)}
