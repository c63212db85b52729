"""Optional PyTorch backend: a ``torch.export`` program (``.pt2``) or a lanekd checkpoint (``.pt``).

The only runtime module allowed to use torch, and only when chosen: torch (and ``distill``, for
checkpoints) are imported inside ``open()``, so importing this module works without them.

A ``.pt2`` program runs as exported; its input and output names come from the sidecar (an
exported program has positional outputs). A checkpoint is rebuilt with
``distill.checkpoint.model_from_checkpoint`` and wrapped exactly as export wraps it
(``export.deploy.DeployModule``), so it returns the same named outputs an ONNX export would.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from runtime.backends.base import Backend, BackendError, IOSpec
from runtime.metadata import ModelMeta, sidecar_path


class TorchBackend(Backend):
    """Options: ``meta`` (a ``ModelMeta``; default: the sidecar beside the model), ``device``
    ("cpu"), ``threads``."""

    name = "torch"
    suffixes = (".pt2", ".pt", ".pth")

    def __init__(self, path: str | Path, output_names: Sequence[str] | None = None, **options: Any) -> None:
        super().__init__(path, output_names, **options)
        self.module = None
        self._meta: ModelMeta | None = options.get("meta")

    @classmethod
    def is_available(cls) -> bool:
        # find_spec, not import: `python -m runtime doctor` must not pay for (or need) importing torch
        try:
            return importlib.util.find_spec("torch") is not None
        except (ImportError, ValueError):     # ValueError: torch blocked via sys.modules["torch"] = None
            return False

    @classmethod
    def version(cls) -> str:
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version("torch")
        except PackageNotFoundError:
            return ""

    def open(self) -> "TorchBackend":
        try:
            import torch
        except ImportError:
            raise BackendError("the torch backend needs PyTorch, which is not installed here") from None
        if self._meta is None:
            self._meta = ModelMeta.load(sidecar_path(self.path))
        self.device = torch.device(self.options.get("device", "cpu"))
        if self.options.get("threads"):
            torch.set_num_threads(int(self.options["threads"]))
        suffix = self.path.suffix.lower()
        try:
            if suffix == ".pt2":
                self.module = torch.export.load(str(self.path)).module().to(self.device)
            else:
                self.module = self._from_checkpoint(torch)
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"{self.path}: cannot load with torch: {exc}") from None
        self._check_requested()
        self._open = True
        return self

    def _from_checkpoint(self, torch: Any):
        from distill.checkpoint import model_from_checkpoint
        from export.deploy import DeployModule
        from runtime.postprocess import LaneDecodeConfig, sample_rows

        meta = self._meta
        model, _ = model_from_checkpoint(self.path)
        rows = None
        if meta.fused_postprocess and meta.task == "lanes":
            cfg = LaneDecodeConfig(rows=list(meta.sample_rows) or None)
            rows = sample_rows(meta.geometry, cfg)[1].tolist()
        wrapped = DeployModule(model, meta.task, fused_pre=meta.fused_preprocess,
                               fused_post=meta.fused_postprocess, rows=rows, mean=meta.mean, std=meta.std)
        if wrapped.output_names != [o.name for o in meta.outputs]:
            raise BackendError(f"{self.path}: the checkpoint's model gives outputs {wrapped.output_names}, "
                               f"the sidecar lists {[o.name for o in meta.outputs]}")
        return wrapped.eval().to(self.device)

    def close(self) -> None:
        self.module = None
        self._open = False

    @property
    def inputs(self) -> list[IOSpec]:
        return [IOSpec(t.name, tuple(t.shape), t.dtype) for t in self._require_meta().inputs]

    @property
    def outputs(self) -> list[IOSpec]:
        return [IOSpec(t.name, tuple(t.shape), t.dtype) for t in self._require_meta().outputs]

    def _require_meta(self) -> ModelMeta:
        if self._meta is None:
            raise BackendError(f"{self.path}: backend not opened (call open() or use `with`)")
        return self._meta

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.module is None:
            raise BackendError(f"{self.path}: backend not opened (call open() or use `with`)")
        import torch

        args = []
        for spec in self.inputs:
            if spec.name not in feeds:
                raise BackendError(f"{self.path}: missing input {spec.name!r}")
            args.append(torch.from_numpy(np.ascontiguousarray(feeds[spec.name])).to(self.device))
        with torch.inference_mode():
            out = self.module(*args)
        if isinstance(out, dict):
            values = [out[o.name] for o in self.outputs]
        else:
            values = list(out) if isinstance(out, (tuple, list)) else [out]
        if len(values) != len(self.outputs):
            raise BackendError(f"{self.path}: the program returned {len(values)} outputs, the sidecar "
                               f"lists {len(self.outputs)}")
        named = {o.name: v.detach().cpu().numpy() for o, v in zip(self.outputs, values)}
        return {n: named[n] for n in self.output_names}
