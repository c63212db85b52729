"""FitNets hint loss (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015), as CIRKD
applies it to segmentation."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distill.data.sample import DataSpec
from distill.methods.base import METHODS, KDMethod
from distill.models.base import TapInfo


def fitnet_loss(s_feat: torch.Tensor, t_feat: torch.Tensor,
                conv_weight: torch.Tensor | None = None) -> torch.Tensor:
    """MSE (mean over B*Ct*H*W) between the 1x1-conv-adapted student feature and the teacher's.

    ``conv_weight`` (Ct,Cs,1,1), no bias; None means the student is already in the teacher's space.
    The teacher is not detached here.
    """
    if conv_weight is not None:
        s_feat = F.conv2d(s_feat, conv_weight)
    if s_feat.shape != t_feat.shape:
        raise ValueError(f"fitnet_loss: adapted student {tuple(s_feat.shape)} and teacher "
                         f"{tuple(t_feat.shape)} differ in shape")
    return F.mse_loss(s_feat, t_feat)


@METHODS.register("fitnet")
class FitNet(KDMethod):
    """FitNets on the penultimate head feature.

    Taps: ``decoder`` of both nets (CIRKD taps the post-ASPP feature ``outputs[-1]``).
    Adapter: ``Conv2d(Cs, Ct, 1, bias=False)`` on the student, always built (CIRKD builds it even
    when Cs == Ct); no BN/ReLU, no normalisation of either feature. The teacher tap is bilinearly
    resized to the student's spatial size when strides differ. Default weight 10 (CIRKD's
    ``train_fitnet.sh``, used together with ``kd`` at weight 1).
    """

    def __init__(self, s_info: dict[str, TapInfo], t_info: dict[str, TapInfo] | None, spec: DataSpec,
                 weight: float = 10.0, s_tap: str = "decoder", t_tap: str = "decoder") -> None:
        super().__init__()
        self.weight = float(weight)
        s_i, t_i = self.bind_taps(s_info, t_info, s_tap, t_tap, "fitnet")
        cs, ct = s_i.channels, t_i.channels
        self.adapter = nn.Conv2d(cs, ct, kernel_size=1, bias=False)

    def forward(self, s_taps: dict[str, torch.Tensor], t_taps: dict[str, torch.Tensor],
                batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        s, t = self.feature_pair(s_taps, t_taps)
        return {"kd/fitnet": self.weight * fitnet_loss(s, t, self.adapter.weight)}
