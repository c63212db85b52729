"""SKD holistic (adversarial) distillation.

Liu et al., "Structured Knowledge Distillation for Semantic Segmentation", CVPR 2019 / TPAMI 2020.
A SAGAN-style discriminator D (``_sagan.SAGANDiscriminator``) scores raw logits (B, C, h, w):
the teacher's are "real", the student's "fake"; the student is trained to fool D.

Variants (KD_METHODS.md §5.3, §13):
- ``"wgan-gp"`` (default, SKD master): G loss ``-mean D(s)`` x 0.1; D loss
  ``0.1 * (-mean D(t) + mean D(s)) + 0.1 * 10 * GP``, GP = mean_b (||grad_x D(x_hat)||_2 - 1)^2 with
  ``x_hat = a*t + (1-a)*s``, a ~ U(0,1) per sample, the norm over all C*h*w. D optimiser SGD(4e-4,
  momentum 0.9, wd 5e-4) with poly(0.9) decay over the run; D update order D(t), D(s), D(x_hat).
- ``"hinge"`` (CIRKD's baseline term): G loss ``-mean D(s)`` x 0.001; D loss
  ``0.1 * (mean relu(1 - D(t)) + mean relu(1 + D(s)))``, no GP; D optimiser Adam(4e-4, (0.9, 0.99)),
  constant lr; D update order D(s), D(t).
  (IFVD/CWD: wgan-gp with ``weight=0.001, d_optimizer="adam", d_order="st"`` and poly decay.)

Call order matters (D's BN uses batch statistics and every D forward does a power iteration): in
the student step ``forward`` calls D(s) once; ``after_student_step`` (which the Trainer must call
once per iteration AFTER the student's optimiser step) calls D on the detached teacher and student
logits in ``d_order`` ("ts": teacher first, SKD's ``discriminator_backward``; "st": student first,
IFVD / TorchDistiller / CIRKD), then D(x_hat) for the GP. The D learning rate follows
``d_lr_schedule`` ("poly" over the run by default for wgan-gp, as SKD and IFVD adjust it every
step; "constant" for hinge, as CIRKD). The poly factor uses the Trainer's 0-based step; SKD's
loop counts from 1, a one-step offset in the decay.

Trainer notes: D is deliberately NOT a registered submodule, so it stays out of the student's
optimiser and out of DDP; ``.to()``/``.cuda()`` still move it. D's weights, u/v vectors, BN stats and
optimiser state travel in ``extra_state_dict()``. Under DDP, D's gradients are averaged across ranks
in ``after_student_step`` so the replicas stay identical. D's input BN normalises each rank's own batch
(CIRKD converts it to SyncBatchNorm on GPUs; not done here).

Deviation: lanekd logits are at input resolution (the authors distil 1/8-resolution logits);
``logits_scale`` (e.g. 0.125) bilinearly resizes both before D. D needs >= 64 px per side with l4.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch.nn import functional as F

from distill.data.sample import DataSpec
from distill.methods._common import check_choice
from distill.methods._sagan import SAGANDiscriminator
from distill.methods.base import METHODS, KDMethod
from distill.models.base import TapInfo

VARIANTS = ("wgan-gp", "hinge")
_DEFAULT_WEIGHT = {"wgan-gp": 0.1, "hinge": 0.001}
_DEFAULT_OPTIMIZER = {"wgan-gp": "sgd", "hinge": "adam"}
_DEFAULT_ORDER = {"wgan-gp": "ts", "hinge": "st"}
_DEFAULT_SCHEDULE = {"wgan-gp": "poly", "hinge": "constant"}
ORDERS = ("ts", "st")
SCHEDULES = ("poly", "constant")


def generator_loss(d_out_s: torch.Tensor) -> torch.Tensor:
    """The student's adversarial loss (both variants): ``-mean D(s)``, unweighted."""
    return -d_out_s.mean()


def discriminator_loss(d_out_s: torch.Tensor, d_out_t: torch.Tensor, variant: str = "wgan-gp") -> torch.Tensor:
    """D's loss without GP and weight: wgan ``-mean D(t) + mean D(s)``; hinge
    ``mean relu(1 - D(t)) + mean relu(1 + D(s))``."""
    if variant == "wgan-gp":
        return -d_out_t.mean() + d_out_s.mean()
    if variant == "hinge":
        return F.relu(1.0 - d_out_t).mean() + F.relu(1.0 + d_out_s).mean()
    raise ValueError(f"unknown adversarial variant {variant!r}; choose from {VARIANTS}")


def gradient_penalty(discriminator: torch.nn.Module, s_logits: torch.Tensor, t_logits: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP term, unweighted: mean_b (||d D(x_hat) / d x_hat||_2 - 1)^2.

    ``alpha`` is drawn as ``torch.rand(B, 1, 1, 1)`` on the CPU (from ``generator`` when given) and
    moved to the logits' device, as the reference draws it. One D forward (one power iteration).
    """
    real, fake = t_logits.detach(), s_logits.detach()
    alpha = torch.rand(real.shape[0], 1, 1, 1, generator=generator).to(real.device, real.dtype).expand_as(real)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    out = discriminator(x_hat)
    grad = torch.autograd.grad(outputs=out, inputs=x_hat, grad_outputs=torch.ones_like(out),
                               retain_graph=True, create_graph=True, only_inputs=True)[0]
    grad = grad.reshape(grad.shape[0], -1)
    return torch.mean((torch.sqrt(torch.sum(grad ** 2, dim=1)) - 1) ** 2)


def discriminator_step_loss(discriminator: torch.nn.Module, s_logits: torch.Tensor, t_logits: torch.Tensor,
                            variant: str = "wgan-gp", d_weight: float = 0.1, lambda_gp: float = 10.0,
                            generator: torch.Generator | None = None, order: str | None = None) -> torch.Tensor:
    """The weighted D loss of one D update. ``order`` "ts" calls D(t) then D(s) (SKD), "st" D(s)
    then D(t) (IFVD, CIRKD); None picks the variant's reference ("ts" for wgan-gp, "st" for hinge).
    The GP's D(x_hat) comes last."""
    order = order or _DEFAULT_ORDER.get(variant, "st")
    check_choice(order, ORDERS, "order", "discriminator_step_loss")
    if order == "ts":
        d_t = discriminator(t_logits.detach())
        d_s = discriminator(s_logits.detach())
    else:
        d_s = discriminator(s_logits.detach())
        d_t = discriminator(t_logits.detach())
    loss = d_weight * discriminator_loss(d_s, d_t, variant)
    if variant == "wgan-gp":
        loss = loss + d_weight * (lambda_gp * gradient_penalty(discriminator, s_logits, t_logits, generator))
    return loss


def scale_logits(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Bilinearly resize a (B, C, H, W) map by ``scale`` (1.0: unchanged)."""
    if scale == 1.0:
        return x
    size = (max(1, round(x.shape[-2] * scale)), max(1, round(x.shape[-1] * scale)))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@METHODS.register("skd_holistic")
class SKDHolistic(KDMethod):
    """Holistic (GAN) distillation on logits; term ``kd/skd_holistic`` (student), and
    ``kd/skd_holistic_d`` reported by ``after_student_step``. See the module docstring."""

    def __init__(self, s_info: dict[str, TapInfo], t_info: dict[str, TapInfo] | None, spec: DataSpec,
                 weight: float | None = None, variant: str = "wgan-gp", d_weight: float = 0.1,
                 lambda_gp: float = 10.0, d_optimizer: str | None = None, d_lr: float = 4e-4,
                 d_momentum: float = 0.9, d_weight_decay: float = 5e-4, d_betas: tuple[float, float] = (0.9, 0.99),
                 d_poly_power: float = 0.9, d_l4: bool = True, d_conv_dim: int = 64, logits_scale: float = 1.0,
                 d_order: str | None = None, d_lr_schedule: str | None = None,
                 s_tap: str = "logits", t_tap: str = "logits", generator: torch.Generator | None = None) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"skd_holistic: unknown variant {variant!r}; choose from {VARIANTS}")
        if t_info is None:
            raise ValueError("skd_holistic needs a teacher")
        s_i, t_i = self.bind_taps(s_info, t_info, s_tap, t_tap, "skd_holistic")
        cs, ct = s_i.channels, t_i.channels
        if cs != ct:
            raise ValueError(f"skd_holistic: D scores student and teacher {s_tap}/{t_tap} alike, "
                             f"so their channels must match ({cs} vs {ct})")
        if logits_scale <= 0:
            raise ValueError(f"skd_holistic: logits_scale must be > 0, got {logits_scale}")
        self.variant = variant
        self.weight = _DEFAULT_WEIGHT[variant] if weight is None else float(weight)
        self.d_weight, self.lambda_gp = float(d_weight), float(lambda_gp)
        self.logits_scale = float(logits_scale)
        self.d_poly_power = float(d_poly_power)
        self.d_order = d_order or _DEFAULT_ORDER[variant]
        self.d_lr_schedule = d_lr_schedule or _DEFAULT_SCHEDULE[variant]
        check_choice(self.d_order, ORDERS, "d_order", "skd_holistic")
        check_choice(self.d_lr_schedule, SCHEDULES, "d_lr_schedule", "skd_holistic")
        self.generator = generator  # the GP's alpha RNG (None = global); also settable later

        disc = SAGANDiscriminator(cs, conv_dim=d_conv_dim, with_l4=d_l4)
        kind = d_optimizer or _DEFAULT_OPTIMIZER[variant]
        params = [p for p in disc.parameters() if p.requires_grad]
        if kind == "sgd":
            opt = torch.optim.SGD(params, lr=d_lr, momentum=d_momentum, weight_decay=d_weight_decay)
        elif kind == "adam":
            opt = torch.optim.Adam(params, lr=d_lr, betas=tuple(d_betas))
        else:
            raise ValueError(f"skd_holistic: d_optimizer must be 'sgd' or 'adam', got {kind!r}")
        self.d_optimizer_kind, self.d_lr = kind, float(d_lr)
        # Held outside nn.Module registration on purpose (see module docstring).
        self.__dict__["_disc"] = disc
        self.__dict__["_d_opt"] = opt

    @property
    def discriminator(self) -> SAGANDiscriminator:
        return self.__dict__["_disc"]

    @property
    def d_optimizer(self) -> torch.optim.Optimizer:
        return self.__dict__["_d_opt"]

    def _apply(self, fn, recurse: bool = True):  # keep the hidden D on the method's device/dtype
        super()._apply(fn, recurse)
        self.discriminator._apply(fn)
        return self

    def forward(self, s_taps: dict[str, torch.Tensor], t_taps: dict[str, torch.Tensor],
                batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        s = scale_logits(s_taps[self.s_tap], self.logits_scale)
        return {"kd/skd_holistic": self.weight * generator_loss(self.discriminator(s))}

    def d_lr_now(self) -> float:
        """The D learning rate for the current step: poly decay over the run, or constant."""
        if self.d_lr_schedule == "constant":
            return self.d_lr
        return self.d_lr * (1 - min(self.step, self.total_steps) / self.total_steps) ** self.d_poly_power

    def after_student_step(self, s_taps: dict[str, torch.Tensor], t_taps: dict[str, torch.Tensor],
                           batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One D update on detached logits, in D's dtype (float32 under AMP) outside autocast."""
        device_type = s_taps[self.s_tap].device.type
        d_dtype = next(self.discriminator.parameters()).dtype
        with torch.autocast(device_type=device_type, enabled=False):
            s = scale_logits(s_taps[self.s_tap].detach().to(d_dtype), self.logits_scale)
            t = scale_logits(t_taps[self.t_tap].detach().to(d_dtype), self.logits_scale)
            opt = self.d_optimizer
            for group in opt.param_groups:
                group["lr"] = self.d_lr_now()
            opt.zero_grad(set_to_none=True)
            loss = discriminator_step_loss(self.discriminator, s, t, self.variant, self.d_weight,
                                           self.lambda_gp, self.generator, self.d_order)
            loss.backward()
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                world = dist.get_world_size()
                for p in self.discriminator.parameters():
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad.div_(world)
            opt.step()
        return {"kd/skd_holistic_d": float(loss.detach())}

    def extra_state_dict(self) -> dict:
        return {"discriminator": self.discriminator.state_dict(), "d_optimizer": self.d_optimizer.state_dict()}

    def load_extra_state_dict(self, state: dict) -> None:
        if "discriminator" in state:
            self.discriminator.load_state_dict(state["discriminator"])
        if "d_optimizer" in state:
            self.d_optimizer.load_state_dict(state["d_optimizer"])
