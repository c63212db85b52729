"""Checkpoints: written atomically, loaded with ``weights_only=True`` (a stranger's file runs no code).

A lanekd checkpoint is a plain dict:
  format, version, model_name, model_kwargs, spec {task, class_names, lane_slots},
  input_size [h, w], crop_top, orig_size [h, w], state_dict,
  and for resuming: optimizer, scheduler, scaler, methods, step, epoch, rng, metrics, config.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from distill.data.sample import DataSpec
from distill.models.base import SegModel, build_model

FORMAT = "lanekd-checkpoint"
VERSION = 1
QAT_KEY = "qat"                       # the entry that marks a quantisation-aware (INT8) checkpoint


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, not ours, or does not fit the model asked for."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` via a temp file + rename, so an interrupted write loses nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, RuntimeError):     # torch's zip writer failed: a full disk, a lost mount
            free = shutil.disk_usage(path.parent).free / 2 ** 20
            why = str(exc).strip().splitlines()[-1][:120]
            raise CheckpointError(f"{path}: could not write the checkpoint ({why}); "
                                  f"{free:.0f} MiB free there -- free some space or write elsewhere") from None
        raise
    return path


def _load_failure(path: Path, exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in words that never suggest an unsafe load."""
    text = str(exc)
    if "weights only" in text.lower() or "weights_only" in text:
        return (f"{path}: not a lanekd checkpoint: it holds Python objects beyond tensors and plain "
                f"values, which the safe loader refuses because loading them could run code from the "
                f"file (it may be unsafe). Use a checkpoint written by lanekd, or re-save only the "
                f"weights (a state dict) with code you trust")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "").split(". ")[0]
    detail = f": {first[:160]}" if len(first) >= 12 else ""
    return f"{path}: not a readable checkpoint (truncated, corrupt or not a torch file{detail})"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a lanekd checkpoint (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(_load_failure(path, exc)) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a lanekd checkpoint (no '{FORMAT}' marker)")
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt['version']} is newer than this lanekd's {VERSION}")
    for key in ("model_name", "model_kwargs", "state_dict"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    return ckpt


def spec_from_checkpoint(ckpt: dict[str, Any]) -> DataSpec:
    s = ckpt["spec"]
    return DataSpec(s["task"], tuple(s["class_names"]), int(s["lane_slots"]))


def spec_to_dict(spec: DataSpec) -> dict[str, Any]:
    return {"task": spec.task, "class_names": list(spec.class_names), "lane_slots": spec.lane_slots}


def load_weights(model: SegModel, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load weights strictly, with an error that says what does not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = sorted(k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append("shape mismatch: " + ", ".join(
                f"{k} {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched[:5]))
        if missing:
            parts.append(f"missing {len(missing)} key(s), e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s), e.g. {unexpected[:3]}")
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state_dict)


def model_from_checkpoint(path_or_ckpt: str | Path | dict[str, Any],
                          map_location: str | torch.device = "cpu") -> tuple[SegModel, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained as and load its weights (eval mode)."""
    ckpt = path_or_ckpt if isinstance(path_or_ckpt, dict) else load_checkpoint(path_or_ckpt, map_location)
    kwargs = dict(ckpt["model_kwargs"])
    kwargs.pop("pretrained", None)
    model = build_model(ckpt["model_name"], **kwargs)
    load_weights(model, ckpt["state_dict"], source=str(path_or_ckpt) if not isinstance(path_or_ckpt, dict) else "checkpoint")
    model.eval()
    return model, ckpt


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
