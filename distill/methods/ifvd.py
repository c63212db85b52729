"""Intra-class feature variation distillation (Wang et al., "Intra-class Feature Variation
Distillation for Semantic Segmentation", ECCV 2020; authors' code: YukangWang/IFVD)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.data.sample import DataSpec
from distill.methods._common import resize_mask
from distill.methods.base import METHODS, KDMethod
from distill.models.base import TapInfo


def ifv_map(feat: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Cosine between each pixel's feature and its class prototype in the same image -> (B,H,W).

    ``labels`` (B,H,W) at the feature's size. Prototype of class c in image b = masked mean of the
    features of its pixels (denominator + 1e-6). Pixels whose label is not in 0..C-1 (ignore)
    keep their own feature as centre, hence cosine 1.
    """
    b, ch, h, w = feat.shape
    flat = feat.reshape(b, ch, h * w)
    lab = labels.reshape(b, h * w)
    center = flat
    for c in range(num_classes):
        m = (lab == c).to(feat.dtype)[:, None, :]                            # (B,1,HW)
        proto = (m * flat).sum(-1) / (m.sum(-1) + 1e-6)                      # (B,C)
        center = (1 - m) * center + m * proto[:, :, None]
    return F.cosine_similarity(flat, center, dim=1).reshape(b, h, w)


def ifv_loss(s_feat: torch.Tensor, t_feat: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """IFV loss: MSE (mean over B*H*W) between the student's and the teacher's IFV maps.

    ``labels`` (B,H',W') int, any size: nearest-resized to the feature size first, as the authors
    do; ignore pixels still count in the mean (with zero difference). Channel counts may differ;
    spatial sizes must match. The teacher is not detached here.
    """
    if s_feat.shape[0] != t_feat.shape[0] or s_feat.shape[-2:] != t_feat.shape[-2:]:
        raise ValueError(f"ifv_loss: student {tuple(s_feat.shape)} and teacher {tuple(t_feat.shape)} "
                         "need the same batch and spatial size")
    if labels.dim() != 3 or labels.shape[0] != s_feat.shape[0]:
        raise ValueError(f"ifv_loss: labels must be (B,H,W) with B={s_feat.shape[0]}, got {tuple(labels.shape)}")
    lab = resize_mask(labels, tuple(s_feat.shape[-2:]))
    return F.mse_loss(ifv_map(s_feat, lab, num_classes), ifv_map(t_feat, lab, num_classes))


@METHODS.register("ifvd")
class IFVD(KDMethod):
    """IFVD on the penultimate head feature with the batch's label map.

    Taps: ``decoder`` of both nets (authors: PSP/ASPP output); channel counts may differ, no
    adapter. The teacher tap is bilinearly resized to the student's size when strides differ;
    ``batch["mask"]`` is nearest-resized to the feature size; classes 0..C-1 from the DataSpec.
    Default weight 200 (IFVD ``options.py``, trained with ``kd`` variant "mean" at weight 10 and
    the adversarial term; CIRKD's script uses 20 with batchmean KD at 1).
    """

    def __init__(self, s_info: dict[str, TapInfo], t_info: dict[str, TapInfo] | None, spec: DataSpec,
                 weight: float = 200.0, s_tap: str = "decoder", t_tap: str = "decoder") -> None:
        super().__init__()
        self.weight = float(weight)
        self.num_classes = spec.num_classes
        self.bind_taps(s_info, t_info, s_tap, t_tap, "ifvd")

    def forward(self, s_taps: dict[str, torch.Tensor], t_taps: dict[str, torch.Tensor],
                batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "mask" not in batch:
            raise KeyError("ifvd: the batch has no 'mask'; IFVD needs labelled frames")
        s, t = self.feature_pair(s_taps, t_taps)
        return {"kd/ifvd": self.weight * ifv_loss(s, t, batch["mask"], self.num_classes)}
