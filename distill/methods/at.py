"""Attention Transfer (Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017),
as CIRKD applies it to one segmentation feature."""
from __future__ import annotations

import torch

from distill.data.sample import DataSpec
from distill.methods._common import attention_map
from distill.methods.base import METHODS, KDMethod
from distill.models.base import TapInfo


def at_loss(s_feat: torch.Tensor, t_feat: torch.Tensor) -> torch.Tensor:
    """mean over (B, H*W) of (a(s) - a(t))^2, a = L2-normalise_HW(mean_C(f^2)).

    Channel counts may differ; spatial sizes must match. The teacher is not detached here.
    """
    if s_feat.shape[0] != t_feat.shape[0] or s_feat.shape[-2:] != t_feat.shape[-2:]:
        raise ValueError(f"at_loss: student {tuple(s_feat.shape)} and teacher {tuple(t_feat.shape)} "
                         "need the same batch and spatial size")
    return (attention_map(s_feat) - attention_map(t_feat)).pow(2).mean()


@METHODS.register("at")
class AT(KDMethod):
    """Attention transfer on one feature, p = 2 with the channel MEAN (CIRKD's formulation).

    Taps: ``decoder`` of both nets (CIRKD: post-ASPP feature); any channel counts. The teacher tap
    is bilinearly resized to the student's spatial size when strides differ. Default weight
    10000 (CIRKD ``train_at.sh``, used together with ``kd`` at weight 1). One layer, not the
    multi-stage sum of the original AT paper; list the method twice with other taps for more.
    """

    def __init__(self, s_info: dict[str, TapInfo], t_info: dict[str, TapInfo] | None, spec: DataSpec,
                 weight: float = 10000.0, s_tap: str = "decoder", t_tap: str = "decoder") -> None:
        super().__init__()
        self.weight = float(weight)
        self.bind_taps(s_info, t_info, s_tap, t_tap, "at")

    def forward(self, s_taps: dict[str, torch.Tensor], t_taps: dict[str, torch.Tensor],
                batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        s, t = self.feature_pair(s_taps, t_taps)
        return {"kd/at": self.weight * at_loss(s, t)}
