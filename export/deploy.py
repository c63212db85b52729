"""The deploy wrapper: what is exported around a trained ``SegModel``.

The model's ``forward`` returns logits (and lane-existence logits); the deployed graph returns
probabilities, and can optionally take over pre-processing (uint8 BGR NHWC in, so the host only
crops and resizes) and post-processing (per lane slot and sampling row, the peak probability and
its column, so only kilobytes leave the device).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from runtime.metadata import IMAGENET_MEAN, IMAGENET_STD

TASKS = ("lanes", "marking")


class DeployModule(nn.Module):
    """Wrap ``model`` for export.

    Outputs, by name (see ``output_names``):
      lanes,   unfused post: ``probs`` (B, C, H, W) softmax, ``exist`` (B, L) sigmoid (if the model has
               an existence head);
      lanes,   fused post:   ``exist``, ``peak_vals`` (B, L, R) float32 and ``peak_cols`` (B, L, R) int32:
               for lane slots 1..L and the input rows ``rows``, the max probability and its column
               (first maximum wins, as ``numpy.argmax``);
      marking, unfused post: ``probs``; fused post: ``classes`` (B, H, W) uint8 arg-max.
    With ``fused_pre`` the input is (B, H, W, 3) uint8 BGR, already cropped and resized; otherwise
    (B, 3, H, W) float32 RGB normalised with ``(x - mean) / std``.
    """

    def __init__(self, model: nn.Module, task: str, fused_pre: bool = False, fused_post: bool = False,
                 rows: Sequence[int] | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
        self.model = model
        self.task = task
        self.fused_pre = bool(fused_pre)
        self.fused_post = bool(fused_post)
        self.lane_slots = int(getattr(model, "lane_slots", 0)) if task == "lanes" else 0
        self.has_exist = bool(getattr(model, "has_exist", False))
        if self.fused_post and task == "lanes":
            if rows is None or len(rows) == 0:
                raise ValueError("fused lane post-processing needs the sampling rows (input-row indices)")
            if self.lane_slots <= 0:
                raise ValueError("fused lane post-processing needs a model with lane_slots > 0")
        rows_t = torch.as_tensor(np.asarray(rows if rows is not None else [], dtype=np.int64))
        self.register_buffer("rows", rows_t, persistent=False)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("inv_std", 1.0 / torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)

    @property
    def output_names(self) -> list[str]:
        exist = ["exist"] if self.has_exist and self.task == "lanes" else []
        if self.task == "marking":
            return ["classes"] if self.fused_post else ["probs"]
        if self.fused_post:
            return exist + ["peak_vals", "peak_cols"]
        return ["probs"] + exist

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 BGR NHWC -> float RGB NCHW, normalised (the fused pre-processing)."""
        x = image.permute(0, 3, 1, 2).to(torch.float32)
        x = x[:, [2, 1, 0]]
        return (x - self.mean) * self.inv_std

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.preprocess(image) if self.fused_pre else image
        out = self.model(x)
        logits, exist_logits = (out[0], out[1]) if isinstance(out, (tuple, list)) else (out, None)
        if self.has_exist and exist_logits is None:
            raise RuntimeError("model declares an existence head but forward() returned only logits")
        probs = torch.softmax(logits, dim=1)
        if self.task == "marking":
            if self.fused_post:
                return (torch.argmax(probs, dim=1).to(torch.uint8),)
            return (probs,)
        exist = (torch.sigmoid(exist_logits),) if self.has_exist else ()
        if not self.fused_post:
            return (probs,) + exist
        lanes = probs[:, 1:1 + self.lane_slots].index_select(2, self.rows)   # (B, L, R, W)
        vals, cols = torch.max(lanes, dim=3)
        return exist + (vals, cols.to(torch.int32))


def peaks_numpy(probs: np.ndarray, rows: Sequence[int], lane_slots: int) -> tuple[np.ndarray, np.ndarray]:
    """What the fused post-processing computes, in numpy: (peak_vals, peak_cols), each (B, L, R)."""
    sel = probs[:, 1:1 + lane_slots][:, :, np.asarray(rows, dtype=np.int64)]
    return sel.max(axis=3), sel.argmax(axis=3).astype(np.int32)


def input_rows(rows: Sequence[float], in_h: int) -> list[int]:
    """Sampling rows in input coordinates -> integer row indices the fused graph reads."""
    return [int(r) for r in np.clip(np.rint(np.asarray(rows, dtype=np.float64)), 0, in_h - 1)]
