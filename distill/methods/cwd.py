"""Channel-wise distillation (Shu et al., "Channel-wise Knowledge Distillation for Dense
Prediction", ICCV 2021; authors' code: TorchDistiller ``SemSeg-distill``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distill.data.sample import DataSpec
from distill.methods._common import check_choice, check_positive, match_spatial, scale_pair
from distill.methods.base import METHODS, KDMethod
from distill.models.base import TapInfo

NORMS = ("channel", "spatial", "channel_mean")
DIVERGENCES = ("kl", "mse")
VARIANTS = ("official", "cirkd")
ADAPTERS = ("auto", "none", "conv", "conv_bn_relu")


def cwd_loss(s_feat: torch.Tensor, t_feat: torch.Tensor, T: float = 4.0, norm: str = "channel",
             divergence: str = "kl", n_channels: int | None = None) -> torch.Tensor:
    """CWD between (N,C,H,W) maps, with the authors' normalisations and reductions.

    ``norm``: ``"channel"`` = softmax over H*W per (n, c) (the method); ``"spatial"`` = softmax over
    C per pixel; ``"channel_mean"`` = the spatial mean per (n, c) (ablations). ``divergence``:
    ``"kl"`` = sum p_t*(log p_t - log p_s) with the student's log taken of the softmax (not
    log_softmax), or ``"mse"`` = summed squared error. The sum is divided by N*C for the channel
    norms and by N*H*W for ``"spatial"``, then multiplied by T^2. As in the authors' code T is used
    only with ``"kl"`` (with ``"mse"`` it is 1 whatever is passed). ``n_channels`` overrides C in
    the divisor (CIRKD's quirk: C of the student before its adapter). The teacher is detached.
    """
    check_choice(norm, NORMS, "norm", "cwd_loss")
    check_choice(divergence, DIVERGENCES, "divergence", "cwd_loss")
    if norm == "channel_mean" and divergence == "kl":
        raise ValueError("cwd_loss: norm='channel_mean' gives unnormalised means; use divergence='mse'")
    if s_feat.shape != t_feat.shape:
        raise ValueError(f"cwd_loss: student {tuple(s_feat.shape)} and teacher {tuple(t_feat.shape)} "
                         "differ in shape")
    n, c, h, w = s_feat.shape
    temp = T if divergence == "kl" else 1.0
    t_feat = t_feat.detach()
    if norm == "channel":
        norm_s = F.softmax((s_feat / temp).reshape(n, c, -1), dim=-1)
        norm_t = F.softmax((t_feat / temp).reshape(n, c, -1), dim=-1)
    elif norm == "spatial":
        norm_s = F.softmax(s_feat / temp, dim=1)
        norm_t = F.softmax(t_feat / temp, dim=1)
    else:
        norm_s = (s_feat / temp).reshape(n, c, -1).mean(-1)
        norm_t = (t_feat / temp).reshape(n, c, -1).mean(-1)
    if divergence == "kl":
        loss = F.kl_div(norm_s.log(), norm_t, reduction="sum")
    else:
        loss = F.mse_loss(norm_s, norm_t, reduction="sum")
    divisor = n * (c if n_channels is None else n_channels) if norm != "spatial" else n * h * w
    return loss / divisor * (temp ** 2)


@METHODS.register("cwd")
class CWD(KDMethod):
    """Channel-wise distillation on logits (default) or on a feature.

    Defaults follow the official Cityscapes command: logits, ``norm="channel"``, ``"kl"``, T=4,
    weight 3 (CIRKD's feature term uses weight 50). Logits need equal class counts; teacher maps
    are bilinearly resized to the student's size; ``logits_scale`` downsamples both logits first.

    Feature taps (e.g. ``s_tap=t_tap="decoder"``) go through a student adapter. ``adapter="auto"``
    picks, for ``variant="official"``, TorchDistiller's Conv1x1 (no bias) + BN + ReLU (their
    InPlaceABNSync) whenever the tap is not ``logits``; for ``variant="cirkd"``, CIRKD's plain
    Conv1x1 (no bias) only when channel counts differ. ``"none"``, ``"conv"``, ``"conv_bn_relu"``
    force a choice. ``variant="cirkd"`` also divides by N*C_student (CIRKD reads C before the
    adapter) instead of N*C_teacher; for logits the two variants agree.
    """

    def __init__(self, s_info: dict[str, TapInfo], t_info: dict[str, TapInfo] | None, spec: DataSpec,
                 weight: float = 3.0, T: float = 4.0, norm: str = "channel", divergence: str = "kl",
                 variant: str = "official", adapter: str = "auto", logits_scale: float = 1.0,
                 s_tap: str = "logits", t_tap: str = "logits") -> None:
        super().__init__()
        self.weight = float(weight)
        self.T = check_positive(T, "T", "cwd")
        self.norm = check_choice(norm, NORMS, "norm", "cwd")
        self.divergence = check_choice(divergence, DIVERGENCES, "divergence", "cwd")
        if norm == "channel_mean" and divergence == "kl":
            raise ValueError("cwd: norm='channel_mean' needs divergence='mse'")
        self.variant = check_choice(variant, VARIANTS, "variant", "cwd")
        check_choice(adapter, ADAPTERS, "adapter", "cwd")
        self.logits_scale = check_positive(logits_scale, "logits_scale", "cwd")
        if self.logits_scale != 1.0 and s_tap != "logits":
            raise ValueError(f"cwd: logits_scale applies to the logits tap only, not {s_tap!r}")
        s_i, t_i = self.bind_taps(s_info, t_info, s_tap, t_tap, "cwd")
        cs, ct = s_i.channels, t_i.channels
        if adapter == "auto":
            if variant == "official":
                adapter = "conv_bn_relu" if s_tap != "logits" else "none"
            else:
                adapter = "conv" if cs != ct else "none"
        if adapter == "none" and cs != ct:
            raise ValueError(f"cwd: student tap {s_tap!r} has {cs} channels, teacher tap {t_tap!r} has "
                             f"{ct}; use an adapter ('conv' or 'conv_bn_relu')")
        self.adapter: nn.Module | None = None
        if adapter == "conv":
            self.adapter = nn.Conv2d(cs, ct, 1, bias=False)
        elif adapter == "conv_bn_relu":
            self.adapter = nn.Sequential(nn.Conv2d(cs, ct, 1, bias=False), nn.BatchNorm2d(ct), nn.ReLU(inplace=True))
        self.s_channels = cs

    def forward(self, s_taps: dict[str, torch.Tensor], t_taps: dict[str, torch.Tensor],
                batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        s, t = s_taps[self.s_tap], t_taps[self.t_tap].detach()
        if self.logits_scale != 1.0:
            s, t = scale_pair(s, t, self.logits_scale)
        if self.adapter is not None:
            s = self.adapter(s)
        t = match_spatial(t, s)
        n_channels = self.s_channels if self.variant == "cirkd" else None
        loss = cwd_loss(s, t, self.T, self.norm, self.divergence, n_channels)
        return {"kd/cwd": self.weight * loss}
