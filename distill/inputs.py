"""What a model is fed: the image, or for a label teacher (LGAD) the one-hot label map.

One home for the Trainer, the Validator and the ``lgad`` method, so that ``distill.train`` and
``distill.validate`` do not import each other.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def label_input(mask: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """(B, H, W) labels -> (B, num_classes, H, W) float one-hot planes; ignore pixels -> background."""
    m = torch.where(mask == ignore_index, torch.zeros_like(mask), mask).long()
    if bool(((m < 0) | (m >= num_classes)).any()):
        raise ValueError(f"label input: labels outside 0..{num_classes - 1} (ignore={ignore_index})")
    return F.one_hot(m, num_classes).permute(0, 3, 1, 2).float()


def model_input(batch: dict[str, torch.Tensor], num_classes: int, ignore_index: int, label_teacher: bool,
                device: torch.device | None = None) -> torch.Tensor:
    """The network input of a batch: its ``image``, or ``label_input`` of its ``mask`` for a label teacher."""
    if label_teacher:
        mask = batch["mask"] if device is None else batch["mask"].to(device)
        return label_input(mask, num_classes, ignore_index)
    return batch["image"] if device is None else batch["image"].to(device)
