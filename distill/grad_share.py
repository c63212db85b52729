"""Start-up gradient shares: how hard each KD term pulls on the student next to the task loss.

A KD term's *share* is ||d term / d theta|| / ||d task / d theta||, theta = the student's
trainable parameters (KD adapters and heads excluded), task = the sum of the ``task/*`` terms.
A method's share uses the sum of its terms. Measured once on one batch at start-up, it shows a
term that would swamp the task loss (or vanish next to it) before a run is spent; ``weight: auto``
scales a method's weight so that its share equals a stated value (every method's terms are linear
in its ``weight``, so one measurement fixes it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

DEFAULT_SHARE = 0.5   # ``weight: auto`` without ``share``: the method pulls half as hard as the task loss


@dataclass
class GradShares:
    """Gradient norms of the task loss, of every KD term and of every method (summed terms)."""

    task_norm: float
    term_norms: dict[str, float]
    method_norms: dict[str, float]
    method_terms: dict[str, list[str]] = field(default_factory=dict)
    n_params: int = 0

    def share(self, norm: float) -> float:
        return norm / self.task_norm if self.task_norm > 0 else math.inf

    def term_share(self, key: str) -> float:
        return self.share(self.term_norms[key])

    def method_share(self, label: str) -> float:
        return self.share(self.method_norms[label])

    def to_log(self) -> dict:
        return {"task_grad_norm": self.task_norm, "grad_norm": dict(self.term_norms),
                "grad_share": {k: self.term_share(k) for k in self.term_norms},
                "method_grad_share": {k: self.method_share(k) for k in self.method_norms}}

    def table(self, weights: dict[str, float], auto: dict[str, dict] | None = None) -> str:
        """A small text table: one row per KD term, then one per method with its weight."""
        auto = auto or {}
        lines = [f"start-up gradient shares: |grad| on the student's {self.n_params} parameters, "
                 f"relative to the task loss's ({self.task_norm:.3g})",
                 f"  {'term':<28}{'|grad|':>11}{'share':>9}"]
        lines += [f"  {k:<28}{v:>11.3g}{self.term_share(k):>9.3g}" for k, v in self.term_norms.items()]
        lines.append(f"  {'method':<28}{'weight':>11}{'share':>9}")
        for label, norm in self.method_norms.items():
            row = f"  {label:<28}{weights[label]:>11.4g}{self.share(norm):>9.3g}"
            if label in auto:
                a = auto[label]
                row += f"   weight: auto -> {a['weight']:.4g} (was {a['weight_before']:.4g}) for share {a['share']:g}"
            lines.append(row)
        return "\n".join(lines)


def flat_grad(loss: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    """d loss / d params as one float32 vector (zeros where a parameter is not reached); graph kept."""
    if not loss.requires_grad:
        return torch.zeros(sum(p.numel() for p in params), device=params[0].device)
    grads = torch.autograd.grad(loss, list(params), retain_graph=True, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).float().reshape(-1) for g, p in zip(grads, params)])


def measure(task_terms: dict[str, torch.Tensor], method_terms: dict[str, dict[str, torch.Tensor]],
            params: Sequence[torch.Tensor],
            average: Callable[[torch.Tensor], torch.Tensor] | None = None) -> GradShares:
    """Gradient norms of the task loss and of every term in ``method_terms`` (label -> its terms).

    ``average`` maps the stacked (n, P) gradients to their mean over DDP ranks (what DDP applies)
    before the norms are taken; None for one process.
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("gradient shares: the student has no trainable parameters")
    keys = [k for terms in method_terms.values() for k in terms]
    rows = [flat_grad(sum(task_terms.values()), params)]
    rows += [flat_grad(terms[k], params) for terms in method_terms.values() for k in terms]
    grads = torch.stack(rows)
    if average is not None:
        grads = average(grads)
    by_key = dict(zip(keys, grads[1:]))
    method_norms = {label: float(torch.stack([by_key[k] for k in terms]).sum(0).norm()) if terms else 0.0
                    for label, terms in method_terms.items()}
    return GradShares(float(grads[0].norm()), {k: float(g.norm()) for k, g in by_key.items()}, method_norms,
                      {label: list(terms) for label, terms in method_terms.items()},
                      sum(p.numel() for p in params))


def auto_weight(label: str, weight: float, measured_share: float, share: float) -> float:
    """The weight that turns ``measured_share`` at ``weight`` into ``share``; errors when it cannot."""
    if not math.isfinite(measured_share):
        raise ValueError(f"weight: auto for {label}: the task loss has no gradient at start-up; set a weight")
    if measured_share <= 0 or weight == 0:
        raise ValueError(f"weight: auto for {label}: its terms have no gradient on the student at start-up "
                         f"(share {measured_share:g} at weight {weight:g}); set a weight")
    return weight * share / measured_share
