"""IntRA-KD: inter-region affinity distillation.

Hou et al., "Inter-Region Affinity Distillation for Road Marking Segmentation", CVPR 2020. The
authors never released the distillation code; lanekd follows KD_METHODS.md §10/§13 (the first
author's example code in Codes-for-IntRA-KD issue #14, and the paper):

1. AOIs: one-hot label planes of the C classes (B, C, H, W) at label resolution (ignore pixels are 0
   in every plane), box-blurred 11x11 (cv2.blur: normalised box, BORDER_REFLECT_101), then bilinearly
   resized (align_corners=False, as cv2.resize) to each net's feature size (h, w).
2. Per class k and channel: mean mu = sum M_k F / Z, variance var = sum M_k (F - mu)^2 / Z, skewness
   sum M_k ((F - mu) / sqrt(var + 1e-10))^3 / Z; Z = h*w (``normaliser="image"``, the authors'
   example, default) or sum M_k (``"area"``, the paper).
3. Only classes present in the image's label are nodes; an image with < 2 present classes adds 0.
   Per image and moment: mean over the n x n entries of (cos-affinity_s - cos-affinity_t)^2.
   ``average="batch"`` (default) divides the per-image sum by B, ``"valid"`` by the number of
   images with >= 2 nodes. The three moments are summed.

Shapes: student tap (B, Cs, hs, ws), teacher tap (B, Ct, ht, wt): cosine affinities are
channel-free and AOIs are resized to each net's own size, so neither channels nor sizes must match
(no adapter, no tap resizing). ``batch["mask"]`` (B, H, W) long, 255 = ignore. Default taps
``decoder``. Weight 1.0 is lanekd's choice: the paper's weight is unconfirmed.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from distill.data.sample import DataSpec
from distill.methods.base import METHODS, KDMethod
from distill.models.base import TapInfo

NORMALISERS = ("image", "area")
AVERAGES = ("batch", "valid")


def box_blur(x: torch.Tensor, kernel: int = 11) -> torch.Tensor:
    """cv2.blur on (B, C, H, W) float maps: normalised k x k box, BORDER_REFLECT_101 (odd k)."""
    if kernel % 2 != 1 or kernel < 1:
        raise ValueError(f"box blur kernel must be odd and >= 1, got {kernel}")
    r = kernel // 2
    if r == 0:
        return x
    if x.shape[-2] <= r or x.shape[-1] <= r:
        raise ValueError(f"box blur {kernel}x{kernel} needs maps larger than {r} px per side, got {tuple(x.shape[-2:])}")
    # torch's "reflect" pad is reflect-101 (the edge pixel is not repeated), like OpenCV's default.
    return F.avg_pool2d(F.pad(x, (r, r, r, r), mode="reflect"), kernel, stride=1)


def aoi_maps(mask: torch.Tensor, num_classes: int, size: tuple[int, int], kernel: int = 11,
             ignore_index: int = 255) -> torch.Tensor:
    """Soft AOIs (B, C, h, w): blurred one-hot label planes resized bilinearly to ``size``."""
    valid = (mask != ignore_index) & (mask >= 0) & (mask < num_classes)
    bad = (mask != ignore_index) & ~valid
    if bool(bad.any()):
        raise ValueError(f"intra_kd: labels outside 0..{num_classes - 1} (ignore={ignore_index}): "
                         f"{sorted(torch.unique(mask[bad]).tolist())[:5]}")
    onehot = F.one_hot(torch.where(valid, mask, torch.zeros_like(mask)).long(), num_classes)
    onehot = (onehot * valid.unsqueeze(-1)).permute(0, 3, 1, 2).float()
    blurred = box_blur(onehot, kernel)
    if tuple(blurred.shape[-2:]) == tuple(size):
        return blurred
    return F.interpolate(blurred, size=tuple(size), mode="bilinear", align_corners=False)


def moment_vectors(feat: torch.Tensor, aoi: torch.Tensor, normaliser: str = "image",
                   eps: float = 1e-10) -> torch.Tensor:
    """(3, n, C) mean / variance / skewness per AOI node and channel, for one image.

    feat: (C, h, w); aoi: (n, h, w) at the same size.
    """
    if normaliser not in NORMALISERS:
        raise ValueError(f"unknown IntRA-KD normaliser {normaliser!r}; choose from {NORMALISERS}")
    c = feat.shape[0]
    f = feat.reshape(1, c, -1)                       # 1, C, P
    m = aoi.reshape(aoi.shape[0], 1, -1)             # n, 1, P
    z = float(f.shape[-1]) if normaliser == "image" else m.sum(dim=-1)   # scalar or (n, 1)
    mean = (m * f).sum(-1) / z                       # n, C
    centred = f - mean.unsqueeze(-1)                 # n, C, P
    var = (m * centred ** 2).sum(-1) / z
    std = torch.sqrt(var + eps)
    skew = (m * (centred / std.unsqueeze(-1)) ** 3).sum(-1) / z
    return torch.stack([mean, var, skew])


def _cosine_matrix(v: torch.Tensor) -> torch.Tensor:
    v = F.normalize(v, p=2, dim=-1)
    return v @ v.transpose(-1, -2)


def intra_kd_loss(s_feat: torch.Tensor, t_feat: torch.Tensor, mask: torch.Tensor, num_classes: int,
                  kernel: int = 11, normaliser: str = "image", average: str = "batch",
                  ignore_index: int = 255, eps: float = 1e-10) -> torch.Tensor:
    """IntRA-KD loss (unweighted) for student/teacher features and the (B, H, W) label map."""
    if average not in AVERAGES:
        raise ValueError(f"unknown IntRA-KD average {average!r}; choose from {AVERAGES}")
    if s_feat.shape[0] != t_feat.shape[0] or s_feat.shape[0] != mask.shape[0]:
        raise ValueError(f"intra_kd: batch sizes differ: student {s_feat.shape[0]}, teacher {t_feat.shape[0]}, "
                         f"mask {mask.shape[0]}")
    aoi_s = aoi_maps(mask, num_classes, s_feat.shape[-2:], kernel, ignore_index)
    aoi_t = aoi_maps(mask, num_classes, t_feat.shape[-2:], kernel, ignore_index)
    total = s_feat.new_zeros(())
    n_valid = 0
    for b in range(mask.shape[0]):
        labels = torch.unique(mask[b])
        present = labels[(labels != ignore_index) & (labels >= 0) & (labels < num_classes)]
        if present.numel() < 2:
            continue
        n_valid += 1
        ms = moment_vectors(s_feat[b], aoi_s[b, present], normaliser, eps)
        mt = moment_vectors(t_feat[b], aoi_t[b, present], normaliser, eps)
        total = total + ((_cosine_matrix(ms) - _cosine_matrix(mt)) ** 2).mean(dim=(1, 2)).sum()
    if average == "batch":
        return total / mask.shape[0]
    return total / max(n_valid, 1)


@METHODS.register("intra_kd")
class IntraKD(KDMethod):
    """IntRA-KD on the ``decoder`` taps; term ``kd/intra_kd``. See the module docstring."""

    def __init__(self, s_info: dict[str, TapInfo], t_info: dict[str, TapInfo] | None, spec: DataSpec,
                 weight: float = 1.0, kernel: int = 11, normaliser: str = "image", average: str = "batch",
                 eps: float = 1e-10, s_tap: str = "decoder", t_tap: str = "decoder") -> None:
        super().__init__()
        if t_info is None:
            raise ValueError("intra_kd needs a teacher")
        self.bind_taps(s_info, t_info, s_tap, t_tap, "intra_kd")
        if normaliser not in NORMALISERS:
            raise ValueError(f"intra_kd: unknown normaliser {normaliser!r}; choose from {NORMALISERS}")
        if average not in AVERAGES:
            raise ValueError(f"intra_kd: unknown average {average!r}; choose from {AVERAGES}")
        if kernel % 2 != 1 or kernel < 1:
            raise ValueError(f"intra_kd: kernel must be odd and >= 1, got {kernel}")
        self.weight, self.kernel, self.eps = float(weight), int(kernel), float(eps)
        self.normaliser, self.average = normaliser, average
        self.num_classes, self.ignore_index = spec.num_classes, spec.ignore_index

    def forward(self, s_taps: dict[str, torch.Tensor], t_taps: dict[str, torch.Tensor],
                batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        loss = intra_kd_loss(s_taps[self.s_tap], t_taps[self.t_tap].detach(), batch["mask"], self.num_classes,
                             self.kernel, self.normaliser, self.average, self.ignore_index, self.eps)
        return {"kd/intra_kd": self.weight * loss}
