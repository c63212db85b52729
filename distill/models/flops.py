"""Parameter and FLOP counting. FLOPs are 2·MAC of convolutions (incl. transposed), linear layers
and matrix products, as ``torch.utils.flop_counter.FlopCounterMode`` counts them; BN, activations,
pooling and interpolation are not counted (the convention of the papers we compare against)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, input_size: tuple[int, int] = (288, 800), in_channels: int = 3,
                batch: int = 1) -> int:
    """FLOPs (2·MAC) of one eval-mode forward at ``input_size`` (h, w), batch ``batch``.

    The forward runs on the model's device; build the model under ``torch.device("meta")`` to count
    big teachers without computing anything (every op our models use has a meta kernel).
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros(batch, in_channels, *input_size, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
