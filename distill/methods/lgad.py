"""LGAD: label-guided attention distillation.

Liu & Zhu, "Lane detection with label-guided attention distillation" (Neurocomputing 438, 2021;
arXiv 2304.01636). No public code exists; lanekd's choices (KD_METHODS.md §11, §13):

- The label teacher is a model of the student's family built with ``in_channels = 1 + L``, trained
  first as a label auto-encoder (input: one-hot lane-slot planes, target: the same label map) and
  then frozen. It is given as ``label_teacher_checkpoint`` (loaded with
  ``distill.checkpoint.model_from_checkpoint``) or as a module ``label_teacher`` (tests).
- Its input is built here from ``batch["mask"]`` (B, H, W) at the student's input size: one plane per
  class (background + L slots), ignore pixels go to the background plane. It runs in eval mode under
  ``no_grad``. The main teacher is not used (``uses_teacher = False``).
- Attention map per stage, as SAD: A = sum_c F_c^2 (B, 1, h, w); when the label teacher's map has
  another size it is bilinearly resized (align_corners=False) to the student's; then a spatial
  softmax over h*w. Loss = sum over stages of MSE-mean(att_s, att_label_teacher); weight 0.1.
- Stages: ``stages`` (default ("stage2", "stage3", "decoder")) restricted to the taps both the
  student and the label teacher declare; none shared -> error at build time.

The label teacher is held outside nn.Module registration (not in the student's optimiser, DDP or
this method's state_dict; ``.to()`` still moves it, ``.train()`` never touches it): a checkpoint
rebuilds it from ``label_teacher_checkpoint``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from distill.data.sample import DataSpec
from distill.inputs import label_input
from distill.methods.base import METHODS, KDMethod
from distill.models.base import TapInfo

DEFAULT_STAGES = ("stage2", "stage3", "decoder")


def attention_map(feat: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """SAD-style attention: sum_c F^2, optional bilinear resize, softmax over the h*w positions.

    (B, C, h, w) -> (B, h*w) (or the resized size's h*w).
    """
    att = feat.pow(2).sum(dim=1, keepdim=True)
    if size is not None and tuple(att.shape[-2:]) != tuple(size):
        att = F.interpolate(att, size=tuple(size), mode="bilinear", align_corners=False)
    return torch.softmax(att.flatten(1), dim=1)


def lgad_loss(s_feats: Sequence[torch.Tensor], lt_feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over stages of MSE(att(student), att(label teacher resized to the student's size))."""
    if len(s_feats) != len(lt_feats) or not s_feats:
        raise ValueError(f"lgad: need matching non-empty stage lists, got {len(s_feats)} and {len(lt_feats)}")
    total = s_feats[0].new_zeros(())
    for s, t in zip(s_feats, lt_feats):
        total = total + F.mse_loss(attention_map(s), attention_map(t.detach(), s.shape[-2:]))
    return total


@METHODS.register("lgad")
class LGAD(KDMethod):
    """Student attention maps imitate a frozen label teacher's; term ``kd/lgad``."""

    uses_teacher = False

    def __init__(self, s_info: dict[str, TapInfo], t_info: dict[str, TapInfo] | None, spec: DataSpec,
                 weight: float = 0.1, label_teacher_checkpoint: str | None = None,
                 label_teacher: nn.Module | None = None, stages: Sequence[str] = DEFAULT_STAGES) -> None:
        super().__init__()
        if (label_teacher is None) == (label_teacher_checkpoint is None):
            raise ValueError("lgad: give exactly one of label_teacher_checkpoint (a path) or label_teacher (a module)")
        if label_teacher is None:
            from distill.checkpoint import model_from_checkpoint

            label_teacher, _ = model_from_checkpoint(Path(label_teacher_checkpoint))
        if not hasattr(label_teacher, "forward_taps"):
            raise TypeError(f"lgad: the label teacher ({type(label_teacher).__name__}) has no forward_taps")
        lt_info = getattr(label_teacher, "feature_info", None)
        shared = [s for s in stages if s in s_info and (lt_info is None or s in lt_info)]
        if not shared:
            raise ValueError(f"lgad: none of the stages {list(stages)} is declared by both the student "
                             f"({sorted(s_info)}) and the label teacher ({sorted(lt_info or {})})")
        in_ch = getattr(label_teacher, "in_channels", None)
        if in_ch is not None and in_ch != spec.num_classes:
            raise ValueError(f"lgad: the label teacher takes {in_ch} input channels but the label map "
                             f"has {spec.num_classes} classes (background + lane slots)")
        label_teacher.eval()
        for p in label_teacher.parameters():
            p.requires_grad_(False)
        self.__dict__["_label_teacher"] = label_teacher
        self.label_teacher_checkpoint = label_teacher_checkpoint
        self.weight = float(weight)
        self.stages = tuple(shared)
        self.num_classes, self.ignore_index = spec.num_classes, spec.ignore_index
        self.s_taps_needed, self.t_taps_needed = self.stages, ()

    @property
    def label_teacher(self) -> nn.Module:
        return self.__dict__["_label_teacher"]

    def _apply(self, fn, recurse: bool = True):  # move the hidden label teacher along
        super()._apply(fn, recurse)
        self.label_teacher._apply(fn)
        return self

    def forward(self, s_taps: dict[str, torch.Tensor], t_taps: dict[str, torch.Tensor],
                batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        lt = self.label_teacher
        lt.eval()
        x = label_input(batch["mask"], self.num_classes, self.ignore_index)
        param = next(lt.parameters(), None)
        if param is not None:
            x = x.to(param.dtype)
        with torch.no_grad():
            lt_taps = lt.forward_taps(x)
        missing = [s for s in self.stages if s not in lt_taps]
        if missing:
            raise ValueError(f"lgad: the label teacher returned no tap(s) {missing}")
        loss = lgad_loss([s_taps[s] for s in self.stages], [lt_taps[s] for s in self.stages])
        return {"kd/lgad": self.weight * loss}
