"""What every KD method is: an ``nn.Module`` from (student taps, teacher taps, batch) to named terms."""
from __future__ import annotations

import torch
from torch import nn

from distill.data.sample import DataSpec
from distill.models.base import TapInfo
from distill.registry import Registry

METHODS: Registry = Registry("KD method")


class KDMethod(nn.Module):
    """Base class. A subclass:

    - takes ``(s_info, t_info, spec, weight=..., **hyper_parameters)`` in ``__init__``; ``s_info`` /
      ``t_info`` are the models' ``feature_info`` (plus ``logits``/``exist``), so adapters are built
      here and a channel mismatch fails at build time; ``t_info`` is None for teacher-free methods;
    - lists the taps it reads in ``self.s_taps_needed`` / ``self.t_taps_needed``;
    - returns ``{"kd/<name>": weighted_loss, ...}`` from ``forward(s_taps, t_taps, batch)``.
      ``batch`` holds ``image`` (B,3,H,W), ``mask`` (B,H,W) long with 255 = ignore, ``exist`` (B,L).
    Teacher taps arrive detached. ``self.step`` / ``self.total_steps`` are set by the Trainer
    before every step (for warm-ups). Methods with their own optimiser (the GAN discriminator)
    override ``after_student_step``.

    Every method also takes ``start`` (handled by ``build_method``): the fraction of the run before
    which it is off -- not computed, no terms, no discriminator step (0 = from the first step).
    Its float ``self.weight`` must scale every term it returns (the Trainer's ``weight: auto``
    rescales it). ``needs_feature_size = True`` makes the Trainer pass ``feature_size``, the (h, w)
    of the student's ``s_tap`` at the training input size, unless the config gives one.
    ``needs_batch_size = True`` makes it pass ``batch_size`` (images per device per step) and
    ``world_size`` (devices), from which such a method scales the defaults that depend on them
    (the rule is in its docstring); built without them, the method keeps the authors' values.
    """

    uses_teacher: bool = True
    needs_feature_size: bool = False
    needs_batch_size: bool = False
    s_taps_needed: tuple[str, ...] = ()
    t_taps_needed: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.step = 0
        self.total_steps = 1
        self.start = 0.0

    @property
    def active(self) -> bool:
        """Whether the run has reached ``start`` (a fraction of ``total_steps``)."""
        return self.step >= self.start * self.total_steps

    def bind_taps(self, s_info: dict[str, TapInfo] | None, t_info: dict[str, TapInfo] | None,
                  s_tap: str, t_tap: str, name: str) -> tuple[TapInfo, TapInfo]:
        """Check one student and one teacher tap exist, remember them, return their ``TapInfo``."""
        from distill.methods._common import tap_info

        s_i, t_i = tap_info(s_info, s_tap, "student", name), tap_info(t_info, t_tap, "teacher", name)
        self.s_tap, self.t_tap = s_tap, t_tap
        self.s_taps_needed, self.t_taps_needed = (s_tap,), (t_tap,)
        return s_i, t_i

    def feature_pair(self, s_taps: dict[str, torch.Tensor],
                     t_taps: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The bound student tap and the (detached) teacher tap resized to the student's size."""
        from distill.methods._common import match_spatial

        s = s_taps[self.s_tap]
        return s, match_spatial(t_taps[self.t_tap].detach(), s)

    def set_progress(self, step: int, total_steps: int) -> None:
        self.step, self.total_steps = step, max(1, total_steps)

    def after_student_step(self, s_taps: dict[str, torch.Tensor], t_taps: dict[str, torch.Tensor],
                           batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Hook for methods that update their own parameters after the student's step."""
        return {}

    def extra_state_dict(self) -> dict:
        """Optimiser state etc. that must survive a resume (the module's own state_dict is saved too)."""
        return {}

    def load_extra_state_dict(self, state: dict) -> None:
        pass


def check_taps(method: KDMethod, s_info: dict[str, TapInfo], t_info: dict[str, TapInfo] | None) -> None:
    """Raise at build time when a method asks for a tap a model does not declare."""
    for side, needed, info in (("student", method.s_taps_needed, s_info), ("teacher", method.t_taps_needed, t_info)):
        if not needed:
            continue
        if info is None:
            raise ValueError(f"{type(method).__name__} needs a teacher but none is configured")
        missing = [t for t in needed if t not in info]
        if missing:
            raise ValueError(f"{type(method).__name__}: {side} has no tap(s) {missing}; available: {sorted(info)}")


def build_method(name: str, s_info: dict[str, TapInfo], t_info: dict[str, TapInfo] | None,
                 spec: DataSpec, **kwargs) -> KDMethod:
    """Build a registered method; unknown kwargs fail loudly through the constructor."""
    import distill.methods  # noqa: F401  (registers every method)

    start = float(kwargs.pop("start", 0.0))
    if not 0.0 <= start < 1.0:
        raise ValueError(f"KD method {name!r}: start is a fraction of the run in [0, 1), got {start}")
    cls = METHODS.get(name)
    try:
        method = cls(s_info, t_info, spec, **kwargs)
    except TypeError as exc:
        raise TypeError(f"KD method {name!r}: {exc}") from None
    check_taps(method, s_info, t_info)
    method.start = start
    return method
