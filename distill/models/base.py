"""What every lanekd model is: ``forward`` for deployment, ``forward_taps`` for distillation."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from distill.registry import Registry

MODELS: Registry = Registry("model")
ROLES: dict[str, str] = {}      # registered name -> "teacher" | "student"


def register_model(name: str, role: str):
    """Register a model factory under ``name`` as a ``"teacher"`` or a ``"student"``."""
    if role not in ("teacher", "student"):
        raise ValueError(f"role must be 'teacher' or 'student', not {role!r}")

    def deco(fn):
        MODELS.register(name)(fn)
        ROLES[name] = role
        return fn

    return deco


def model_names(role: str | None = None) -> list[str]:
    """Registered model names, optionally only the teachers or only the students."""
    import distill.models  # noqa: F401  (registers every architecture)

    return [n for n in MODELS.names() if role is None or ROLES.get(n) == role]


@dataclass(frozen=True)
class TapInfo:
    """A named intermediate tensor: its channel count and stride relative to the input."""

    channels: int
    stride: int


class SegModel(nn.Module):
    """Base class of every model.

    Subclasses implement ``forward_taps(x) -> dict`` returning at least ``logits`` (B, C, H, W at
    the input resolution) and, when ``lane_slots > 0`` and the existence head is on, ``exist``
    (B, L) existence *logits*; plus the taps named in ``feature_info`` (``stem``, ``stage1``..,
    ``decoder``). ``forward(x)`` returns what is deployed: ``logits`` or ``(logits, exist)``.
    Softmax/sigmoid are added by the export wrapper, never here.
    """

    feature_info: dict[str, TapInfo]
    num_classes: int
    lane_slots: int
    has_exist: bool

    def forward_taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor):
        taps = self.forward_taps(x)
        if self.has_exist:
            return taps["logits"], taps["exist"]
        return taps["logits"]


def build_model(name: str, **kwargs) -> SegModel:
    """The one model factory: ``build_model("erfnet", num_classes=5, lane_slots=4)``."""
    import distill.models  # noqa: F401  (registers every architecture)

    return MODELS.get(name)(**kwargs)
