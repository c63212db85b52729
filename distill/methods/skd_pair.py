"""SKD pair-wise (affinity) distillation (Liu et al., "Structured Knowledge Distillation for
Semantic Segmentation", CVPR 2019 / TPAMI 2020; authors' code: irfanICMLL/structure_knowledge_distillation)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.data.sample import DataSpec
from distill.methods._common import check_choice, check_positive
from distill.methods.base import METHODS, KDMethod
from distill.models.base import TapInfo

VARIANTS = ("official", "cirkd")
DEFAULT_WEIGHT = {"official": 0.5, "cirkd": 10.0}


def _affinity_official(feat: torch.Tensor) -> torch.Tensor:
    """Cosine affinity with the node norm DETACHED (the authors' ``L2(feat).detach()``)."""
    norm = feat.pow(2).sum(dim=1, keepdim=True).pow(0.5) + 1e-8
    x = (feat / norm.detach()).reshape(feat.shape[0], feat.shape[1], -1)
    return torch.einsum("icm,icn->imn", x, x)


def _affinity_cirkd(feat: torch.Tensor) -> torch.Tensor:
    """Cosine affinity through ``F.normalize`` (gradient flows through the norm)."""
    x = F.normalize(feat, p=2, dim=1).reshape(feat.shape[0], feat.shape[1], -1)
    return torch.bmm(x.transpose(1, 2), x)


def pairwise_loss(s_feat: torch.Tensor, t_feat: torch.Tensor, pool_scale: float = 0.5,
                  variant: str = "official") -> torch.Tensor:
    """Distance between the students' and the teacher's node-affinity matrices.

    ``"official"``: MaxPool with kernel = stride = (int(H*pool_scale), int(W*pool_scale)),
    ceil_mode (a 3x3 node grid on a 65x65 map), nodes divided by their detached L2 norm + 1e-8,
    loss = sum (A_t - A_s)^2 / N^2 / B with N nodes. ``"cirkd"``: fixed 2x2 max-pool (ceil),
    ``F.normalize``, MSE mean (``pool_scale`` unused). Channel counts may differ; spatial sizes
    must match. The teacher is not detached here.
    """
    check_choice(variant, VARIANTS, "variant", "pairwise_loss")
    if s_feat.shape[0] != t_feat.shape[0] or s_feat.shape[-2:] != t_feat.shape[-2:]:
        raise ValueError(f"pairwise_loss: student {tuple(s_feat.shape)} and teacher {tuple(t_feat.shape)} "
                         "need the same batch and spatial size")
    if variant == "cirkd":
        s = F.max_pool2d(s_feat, kernel_size=2, stride=2, padding=0, ceil_mode=True)
        t = F.max_pool2d(t_feat, kernel_size=2, stride=2, padding=0, ceil_mode=True)
        return (_affinity_cirkd(s) - _affinity_cirkd(t)).pow(2).mean()
    h, w = s_feat.shape[-2:]
    # The authors' int() is 0 on maps smaller than 1/pool_scale; clamp to a 1-pixel kernel there.
    kernel = (max(1, int(h * pool_scale)), max(1, int(w * pool_scale)))
    s = F.max_pool2d(s_feat, kernel_size=kernel, stride=kernel, padding=0, ceil_mode=True)
    t = F.max_pool2d(t_feat, kernel_size=kernel, stride=kernel, padding=0, ceil_mode=True)
    n_nodes = t.shape[-1] * t.shape[-2]
    err = (_affinity_official(t) - _affinity_official(s)).pow(2) / (n_nodes ** 2) / t.shape[0]
    return err.sum()


@METHODS.register("skd_pair")
class SKDPair(KDMethod):
    """SKD pair-wise term on the penultimate head feature (``decoder``; authors: PSP output).

    ``variant="official"`` (default, the paper's repository): pool_scale 0.5, weight 0.5 (its
    ``run_train_val.sh``). ``variant="cirkd"``: CIRKD's 2x2 re-implementation, weight 10;
    ``weight=None`` picks the variant's default. No adapter (affinities are channel-free). The
    teacher tap is bilinearly resized to the student's size when strides differ. ``pool_scale`` is
    a fraction of the map, so the node grid does not grow with the resolution: ceil(1 / pool_scale)
    or one more per side (3x3 on the authors' 65x65 map, 2x2 on an even-sized one); nothing to scale.
    """

    def __init__(self, s_info: dict[str, TapInfo], t_info: dict[str, TapInfo] | None, spec: DataSpec,
                 weight: float | None = None, variant: str = "official", pool_scale: float = 0.5,
                 s_tap: str = "decoder", t_tap: str = "decoder") -> None:
        super().__init__()
        self.variant = check_choice(variant, VARIANTS, "variant", "skd_pair")
        self.weight = DEFAULT_WEIGHT[variant] if weight is None else float(weight)
        self.pool_scale = check_positive(pool_scale, "pool_scale", "skd_pair")
        self.bind_taps(s_info, t_info, s_tap, t_tap, "skd_pair")

    def forward(self, s_taps: dict[str, torch.Tensor], t_taps: dict[str, torch.Tensor],
                batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        s, t = self.feature_pair(s_taps, t_taps)
        return {"kd/skd_pair": self.weight * pairwise_loss(s, t, self.pool_scale, self.variant)}
