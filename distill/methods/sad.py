"""Self Attention Distillation (Hou et al., "Learning Lightweight Lane Detection CNNs by Self
Attention Distillation", ICCV 2019): a shallower block of the student imitates the attention map
of the next deeper block of the same network. No teacher."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from distill.data.sample import DataSpec
from distill.methods._common import sad_attention, tap_info
from distill.methods.base import METHODS, KDMethod
from distill.models.base import TapInfo


def sad_loss(x_shallow: torch.Tensor, x_deep: torch.Tensor, detach_target: bool = True) -> torch.Tensor:
    """MSE (mean over B*H*W) between AT-GEN maps of a shallow block and the next deeper block.

    AT-GEN = spatial softmax of sum_C(x^2). When the spatial sizes differ, the deeper block's
    channel-sum is bilinearly resized (align_corners=False) to the shallow block's size BEFORE the
    softmax, as the PyTorch port does. ``detach_target`` stops gradients into the deeper block
    (lanekd's default); False reproduces the port, which lets them flow into both.
    """
    if x_shallow.shape[0] != x_deep.shape[0]:
        raise ValueError(f"sad_loss: batch sizes differ: {tuple(x_shallow.shape)} vs {tuple(x_deep.shape)}")
    if detach_target:
        x_deep = x_deep.detach()
    size = tuple(x_shallow.shape[-2:])
    a_shallow = sad_attention(x_shallow)
    a_deep = sad_attention(x_deep, size if tuple(x_deep.shape[-2:]) != size else None)
    return F.mse_loss(a_shallow, a_deep)


@METHODS.register("sad")
class SAD(KDMethod):
    """SAD on pairs ``(shallow, deep)`` of student taps, summed over pairs.

    Defaults (KD_METHODS.md section 13): ``pairs=(("stage2", "stage3"),)`` -- ERFNet stage 2
    imitates stage 3 as the author advises; for lanekd's ENet (taps stage1=E1, stage2=E2,
    stage3=E3) this is E2 -> E3; recipes may add ``["stage1", "stage2"]`` (the PyTorch port's
    E1 -> E2, resized) or deeper pairs of other backbones. ``detach_target=True``; weight 0.1. The term
    is active from step ``warmup_steps`` if given, else from ``warmup * total_steps`` (default 40%
    of the run; the authors switch SAD on after 40k of their iterations); before that it returns
    a zero term. Uses ``self.step`` / ``self.total_steps`` set by the Trainer.
    """

    uses_teacher = False

    def __init__(self, s_info: dict[str, TapInfo], t_info: dict[str, TapInfo] | None, spec: DataSpec,
                 weight: float = 0.1, pairs: Sequence[Sequence[str]] = (("stage2", "stage3"),),
                 detach_target: bool = True, warmup: float = 0.4, warmup_steps: int | None = None) -> None:
        super().__init__()
        self.weight = float(weight)
        self.pairs = tuple(self._pair(p) for p in pairs)
        if not self.pairs:
            raise ValueError("sad: pairs is empty")
        for shallow, deep in self.pairs:
            tap_info(s_info, shallow, "student", "sad")
            tap_info(s_info, deep, "student", "sad")
        if not 0.0 <= warmup <= 1.0:
            raise ValueError(f"sad: warmup is a fraction of the run in [0, 1], got {warmup!r}")
        if warmup_steps is not None and warmup_steps < 0:
            raise ValueError(f"sad: warmup_steps must be >= 0, got {warmup_steps!r}")
        self.warmup, self.warmup_steps = float(warmup), warmup_steps
        self.detach_target = bool(detach_target)
        self.s_taps_needed = tuple(dict.fromkeys(t for p in self.pairs for t in p))
        self.t_taps_needed = ()

    @staticmethod
    def _pair(p: Sequence[str]) -> tuple[str, str]:
        if isinstance(p, str) or len(p) != 2:
            raise ValueError(f"sad: each pair must be [shallow_tap, deep_tap], got {p!r}")
        return str(p[0]), str(p[1])

    def active(self) -> bool:
        """Whether the warm-up is over at ``self.step``."""
        start = self.warmup_steps if self.warmup_steps is not None else self.warmup * self.total_steps
        return self.step >= start

    def forward(self, s_taps: dict[str, torch.Tensor], t_taps: dict[str, torch.Tensor] | None,
                batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        first = s_taps[self.pairs[0][0]]
        if not self.active():
            return {"kd/sad": first.new_zeros(())}
        loss = sum(sad_loss(s_taps[a], s_taps[b], self.detach_target) for a, b in self.pairs)
        return {"kd/sad": self.weight * loss}
