"""Double Similarity Distillation (Feng et al., "Double Similarity Distillation for Semantic
Image Segmentation", IEEE TIP 2021), as shipped by CIRKD (``losses/dsd.py``)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from distill.data.sample import DataSpec
from distill.methods._common import attention_map, check_positive, resize_to, same_channels, tap_info
from distill.methods.base import METHODS, KDMethod
from distill.models.base import TapInfo


def psd_loss(s_feats: Sequence[torch.Tensor], t_feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Pixel-wise similarity distillation over a list of same-size maps of each net.

    Each map -> AT map a = L2norm_HW(mean_C f^2); for every pair n < m the residual
    r = L2norm(a_m - a_n); loss = mean over pairs of mean_{B,HW}((L2norm(r_s) - L2norm(r_t))^2).
    """
    if len(s_feats) != len(t_feats) or len(s_feats) < 2:
        raise ValueError(f"psd_loss: needs two equally long lists of >= 2 maps, got {len(s_feats)} and {len(t_feats)}")
    a_s = [attention_map(f) for f in s_feats]
    a_t = [attention_map(f) for f in t_feats]
    total, pairs = s_feats[0].new_zeros(()), 0
    for n in range(len(a_s) - 1):
        for m in range(n + 1, len(a_s)):
            r_s = F.normalize(a_s[m] - a_s[n])
            r_t = F.normalize(a_t[m] - a_t[n])
            total = total + (F.normalize(r_s) - F.normalize(r_t)).pow(2).mean()
            pairs += 1
    return total / pairs


def csd_loss(s_logits: torch.Tensor, t_logits: torch.Tensor, tau: float = 4.0) -> torch.Tensor:
    """Category-wise similarity distillation: AvgPool 2x2 (ceil), per-class softmax over H*W at
    temperature ``tau``, C x C Gram matrix P P^T per image, MSE (mean) between the nets'."""
    if s_logits.shape[:2] != t_logits.shape[:2]:
        raise ValueError(f"csd_loss: student {tuple(s_logits.shape)} and teacher {tuple(t_logits.shape)} "
                         "need the same batch and class count")

    def gram(x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(x, kernel_size=2, stride=2, padding=0, ceil_mode=True)
        p = F.softmax(x.reshape(x.shape[0], x.shape[1], -1) / tau, dim=-1)
        return torch.bmm(p, p.transpose(1, 2))

    return (gram(s_logits) - gram(t_logits)).pow(2).mean()


@METHODS.register("dsd")
class DSD(KDMethod):
    """DSD: PSD over three maps of each net plus CSD over the last one (the logits).

    The authors feed ``[aux_logits, feature, logits]``, all at output stride 8. lanekd models have
    no aux head, so the default taps are ``("stage3", "decoder", "logits")`` (CIRKD's aux head
    reads stage 3). Deviation: our logits are at input resolution and taps may sit at different
    strides, so every map is bilinearly resized to the smallest spatial size among the student's
    taps (stride 8 for the defaults, as the authors'), and the teacher's to the same size.
    Defaults: ``psd_weight=1000``, ``csd_weight=10``, tau 4 (CIRKD ``train_dsd.sh``, no KD term);
    ``weight`` scales both. Terms ``kd/dsd_psd`` and ``kd/dsd_csd``.
    """

    def __init__(self, s_info: dict[str, TapInfo], t_info: dict[str, TapInfo] | None, spec: DataSpec,
                 weight: float = 1.0, psd_weight: float = 1000.0, csd_weight: float = 10.0, tau: float = 4.0,
                 s_taps: Sequence[str] = ("stage3", "decoder", "logits"),
                 t_taps: Sequence[str] = ("stage3", "decoder", "logits")) -> None:
        super().__init__()
        if isinstance(s_taps, str) or isinstance(t_taps, str):
            raise ValueError("dsd: s_taps / t_taps are lists of tap names")
        s_taps, t_taps = tuple(s_taps), tuple(t_taps)
        if len(s_taps) != len(t_taps) or len(s_taps) < 2:
            raise ValueError(f"dsd: s_taps and t_taps need the same length >= 2, got {s_taps} and {t_taps}")
        for s_tap, t_tap in zip(s_taps, t_taps):
            s_i = tap_info(s_info, s_tap, "student", "dsd")
            t_i = tap_info(t_info, t_tap, "teacher", "dsd")
        same_channels(s_i, t_i, s_taps[-1], t_taps[-1], "dsd")   # CSD compares C x C matrices
        self.weight, self.psd_weight, self.csd_weight = float(weight), float(psd_weight), float(csd_weight)
        self.tau = check_positive(tau, "tau", "dsd")
        self.s_taps_needed, self.t_taps_needed = s_taps, t_taps

    def forward(self, s_taps: dict[str, torch.Tensor], t_taps: dict[str, torch.Tensor],
                batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        s_maps = [s_taps[k] for k in self.s_taps_needed]
        size = min((tuple(x.shape[-2:]) for x in s_maps), key=lambda hw: hw[0] * hw[1])
        s_maps = [resize_to(x, size) for x in s_maps]
        t_maps = [resize_to(t_taps[k].detach(), size) for k in self.t_taps_needed]
        return {"kd/dsd_psd": self.weight * self.psd_weight * psd_loss(s_maps, t_maps),
                "kd/dsd_csd": self.weight * self.csd_weight * csd_loss(s_maps[-1], t_maps[-1], self.tau)}
