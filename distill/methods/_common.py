"""Small helpers shared by the KD methods: tap look-up, resizing, attention maps.

Kept deliberately stable: other method modules import from here. Everything is plain tensor
code; nothing here holds state.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from distill.models.base import TapInfo


def tap_info(info: Mapping[str, TapInfo] | None, tap: str, side: str, method: str) -> TapInfo:
    """Return the ``TapInfo`` of ``tap`` or raise naming the method, the side and the valid taps."""
    if info is None:
        raise ValueError(f"{method}: needs a {side} model but none is configured")
    if tap not in info:
        raise ValueError(f"{method}: {side} has no tap {tap!r}; available: {sorted(info)}")
    return info[tap]


def same_channels(s: TapInfo, t: TapInfo, s_tap: str, t_tap: str, method: str) -> None:
    """Raise at build time when a method that has no adapter sees different channel counts."""
    if s.channels != t.channels:
        raise ValueError(f"{method}: student tap {s_tap!r} has {s.channels} channels but teacher tap "
                         f"{t_tap!r} has {t.channels}; this method needs equal channel counts")


def check_choice(value: str, choices: tuple[str, ...], what: str, method: str) -> str:
    if value not in choices:
        raise ValueError(f"{method}: {what} must be one of {list(choices)}, got {value!r}")
    return value


def check_positive(value: float, what: str, method: str) -> float:
    if not value > 0:
        raise ValueError(f"{method}: {what} must be > 0, got {value!r}")
    return float(value)


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners=False) resize of a (B,C,H,W) map; a no-op when already that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def match_spatial(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Resize a teacher tap to the student tap's spatial size (the project-wide default)."""
    return resize_to(t, tuple(s.shape[-2:]))


def scale_pair(s: torch.Tensor, t: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinearly rescale student maps by ``scale`` and the teacher's to the same size.

    Used for ``logits_scale``: the authors distil 1/8-resolution logits, ours are at input
    resolution, so 0.125 reproduces their cost and smoothing. ``scale == 1`` only matches sizes.
    """
    if scale != 1.0:
        h, w = s.shape[-2:]
        s = resize_to(s, (max(1, int(round(h * scale))), max(1, int(round(w * scale)))))
    return s, match_spatial(t, s)


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest resize of a (B,H,W) label map to ``size``, as the authors do (``nn.Upsample``)."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask.long()
    out = F.interpolate(mask[:, None].float(), size=tuple(size), mode="nearest")
    return out[:, 0].long()


def attention_map(feat: torch.Tensor) -> torch.Tensor:
    """AT map (Zagoruyko & Komodakis, as CIRKD codes it): L2-normalise_HW(mean_C(f^2)) -> (B, H*W)."""
    return F.normalize(feat.pow(2).mean(1).view(feat.size(0), -1))


def sad_attention(feat: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """SAD's AT-GEN: spatial softmax of sum_C(f^2), bilinearly resized to ``size`` BEFORE the softmax.

    (B,C,H,W) -> (B, H'*W'). Resizing uses align_corners=False as the PyTorch SAD port does.
    """
    a = feat.pow(2).sum(dim=1, keepdim=True)
    if size is not None:
        a = resize_to(a, size)
    return F.softmax(a.flatten(1), dim=-1)
