"""Hinton logit KD applied per pixel (Hinton et al., "Distilling the Knowledge in a Neural
Network", NIPS-W 2015), in the two forms segmentation code bases use."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.data.sample import DataSpec
from distill.methods._common import check_choice, check_positive, same_channels, scale_pair
from distill.methods.base import METHODS, KDMethod
from distill.models.base import TapInfo

VARIANTS = ("batchmean", "mean")
DEFAULT_WEIGHT = {"batchmean": 1.0, "mean": 10.0}


def kd_loss(s_logits: torch.Tensor, t_logits: torch.Tensor, T: float = 1.0,
            variant: str = "batchmean") -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) over the class axis of (B,C,H,W) logits.

    ``"batchmean"`` (CIRKD ``CriterionKD``): summed over classes and pixels, divided by the number
    of pixels B*H*W, times T^2. ``"mean"`` (IFVD / TorchDistiller ``CriterionKD``): element mean,
    divided by B*C*H*W, and -- as their code does -- NOT multiplied by T^2.
    The teacher is not detached here (as in the authors' code); callers pass detached logits.
    """
    check_choice(variant, VARIANTS, "variant", "kd_loss")
    if s_logits.shape != t_logits.shape:
        raise ValueError(f"kd_loss: student logits {tuple(s_logits.shape)} and teacher logits "
                         f"{tuple(t_logits.shape)} differ in shape")
    if variant == "batchmean":
        c = s_logits.shape[1]
        s = s_logits.permute(0, 2, 3, 1).reshape(-1, c)
        t = t_logits.permute(0, 2, 3, 1).reshape(-1, c)
        log_p_s = F.log_softmax(s / T, dim=1)
        p_t = F.softmax(t / T, dim=1)
        return F.kl_div(log_p_s, p_t, reduction="batchmean") * (T ** 2)
    log_p_s = F.log_softmax(s_logits / T, dim=1)
    p_t = F.softmax(t_logits / T, dim=1)
    # reduction="none" then mean: the same numbers as KLDivLoss()'s 'mean', without its deprecation.
    return F.kl_div(log_p_s, p_t, reduction="none").mean()


@METHODS.register("kd")
class KD(KDMethod):
    """Pixel-wise logit KD.

    Taps: ``logits`` (B,C,H,W) of both nets; channel counts must match. The teacher's logits are
    bilinearly resized to the student's size when they differ; ``logits_scale`` (e.g. 0.125)
    first downsamples both, as the authors distil 1/8-resolution logits. No pixel is masked:
    the authors distil ignore-label pixels too.

    Defaults: ``variant="batchmean"`` (CIRKD's copy; Hinton KD has no segmentation repository of
    its own, so lanekd follows CIRKD), T=1, weight 1. ``variant="mean"`` is the IFVD / CWD repos'
    element mean (a factor C smaller), whose paper weight is 10; ``weight=None`` picks the
    variant's default.
    """

    def __init__(self, s_info: dict[str, TapInfo], t_info: dict[str, TapInfo] | None, spec: DataSpec,
                 weight: float | None = None, T: float = 1.0, variant: str = "batchmean",
                 logits_scale: float = 1.0, s_tap: str = "logits", t_tap: str = "logits") -> None:
        super().__init__()
        self.variant = check_choice(variant, VARIANTS, "variant", "kd")
        self.weight = DEFAULT_WEIGHT[variant] if weight is None else float(weight)
        self.T = check_positive(T, "T", "kd")
        self.logits_scale = check_positive(logits_scale, "logits_scale", "kd")
        same_channels(*self.bind_taps(s_info, t_info, s_tap, t_tap, "kd"), s_tap, t_tap, "kd")

    def forward(self, s_taps: dict[str, torch.Tensor], t_taps: dict[str, torch.Tensor],
                batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        s, t = scale_pair(s_taps[self.s_tap], t_taps[self.t_tap].detach(), self.logits_scale)
        return {"kd/kd": self.weight * kd_loss(s, t, self.T, self.variant)}
