"""The SAGAN-style discriminator of SKD's holistic loss (and CIRKD's adversarial baseline term).

Architecture as in SKD master ``networks/sagan_models.py`` / CIRKD ``utils/sagan.py`` (our own code):
raw logits (B, C, H, W) -> BatchNorm2d(C) (always in train mode: batch statistics) ->
SN-Conv4x4/s2/p1 C->64, LeakyReLU(0.1) -> SN-Conv 64->128, LReLU -> SN-Conv 128->256, LReLU ->
SelfAttention(256) -> [l4: SN-Conv 256->512, LReLU -> SelfAttention(512)] -> Conv4x4 (no padding,
no spectral norm) ->1. A 65x65 input gives a 1x1 output; larger inputs give a spatial map.

Spectral norm is the SAGAN variant, not ``torch.nn.utils.spectral_norm``: ONE power iteration on
EVERY forward (training or not, including the gradient-penalty call), u and v updated in place,
weight = w_bar / (u^T W v) with the gradient flowing through sigma. Like the authors' ``.data``
assignment, the in-place update does not bump autograd's version counter, so a backward that runs
after several forwards sees the latest u and v (this is what the reference code computes).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def l2_normalize(v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """SAGAN's ``v / (||v|| + eps)`` (note: eps is added to the norm, unlike ``F.normalize``)."""
    return v / (v.norm() + eps)


class SNConv2d(nn.Module):
    """Conv2d with SAGAN spectral normalisation (one power iteration per forward).

    Parameters ``weight_bar`` (the unnormalised weight) and ``bias``; buffers ``weight_u`` (out,)
    and ``weight_v`` (in*k*k,). ``power_iterations`` is 1 in every reference code base.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, power_iterations: int = 1) -> None:
        super().__init__()
        # Initialise exactly as wrapping an nn.Conv2d does (same RNG draws in the same order).
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)
        self.stride, self.padding, self.power_iterations = stride, padding, power_iterations
        self.weight_bar = nn.Parameter(conv.weight.detach().clone())
        self.bias = nn.Parameter(conv.bias.detach().clone())
        height = out_channels
        width = self.weight_bar[0].numel()
        self.register_buffer("weight_u", l2_normalize(torch.empty(height).normal_(0, 1)))
        self.register_buffer("weight_v", l2_normalize(torch.empty(width).normal_(0, 1)))
        self.num_updates = 0  # power iterations done since construction (for tests and debugging)

    @torch.no_grad()
    def _power_iteration(self) -> None:
        w = self.weight_bar.detach().reshape(self.weight_bar.shape[0], -1)
        for _ in range(self.power_iterations):
            # .data writes: in place, invisible to autograd's version counter (as the reference).
            self.weight_v.data.copy_(l2_normalize(torch.mv(w.t(), self.weight_u)))
            self.weight_u.data.copy_(l2_normalize(torch.mv(w, self.weight_v)))
        self.num_updates += 1

    def normalized_weight(self) -> torch.Tensor:
        w = self.weight_bar.reshape(self.weight_bar.shape[0], -1)
        sigma = self.weight_u.dot(w.mv(self.weight_v))
        return self.weight_bar / sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._power_iteration()
        return F.conv2d(x, self.normalized_weight(), self.bias, self.stride, self.padding)


class SelfAttention(nn.Module):
    """SAGAN self-attention: query/key 1x1 convs to C//8, value 1x1 to C, softmax over positions,
    ``gamma * attn_out + x`` with gamma initialised to 0 (inactive at start)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query_conv = nn.Conv2d(channels, channels // 8, 1)
        self.key_conv = nn.Conv2d(channels, channels // 8, 1)
        self.value_conv = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query_conv(x).reshape(b, -1, h * w).permute(0, 2, 1)   # B, N, C'
        k = self.key_conv(x).reshape(b, -1, h * w)                       # B, C', N
        attn = torch.softmax(torch.bmm(q, k), dim=-1)                    # B, N, N
        v = self.value_conv(x).reshape(b, -1, h * w)                     # B, C, N
        out = torch.bmm(v, attn.permute(0, 2, 1)).reshape(b, c, h, w)
        return self.gamma * out + x


class SAGANDiscriminator(nn.Module):
    """The SKD/CIRKD discriminator on raw logits; returns (B, 1, h', w') scores.

    ``with_l4``: the fourth SN-conv block and the 512-channel self-attention. SKD builds it when
    its D input is 65x65 (always, in its released scripts); CIRKD always builds it. Without it the
    final conv reads the 256-channel map after the first self-attention.
    """

    def __init__(self, in_channels: int, conv_dim: int = 64, with_l4: bool = True) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"discriminator needs >= 1 input channel, got {in_channels}")
        self.with_l4 = with_l4
        # Construction order follows the reference (l1..l4, last, attn1, attn2, BN) so that a
        # seeded build draws the same initial weights.
        self.l1 = nn.Sequential(SNConv2d(in_channels, conv_dim, 4, 2, 1), nn.LeakyReLU(0.1))
        self.l2 = nn.Sequential(SNConv2d(conv_dim, conv_dim * 2, 4, 2, 1), nn.LeakyReLU(0.1))
        self.l3 = nn.Sequential(SNConv2d(conv_dim * 2, conv_dim * 4, 4, 2, 1), nn.LeakyReLU(0.1))
        curr = conv_dim * 4
        if with_l4:
            self.l4 = nn.Sequential(SNConv2d(curr, curr * 2, 4, 2, 1), nn.LeakyReLU(0.1))
            curr *= 2
        self.last = nn.Conv2d(curr, 1, 4)
        self.attn1 = SelfAttention(conv_dim * 4)
        self.attn2 = SelfAttention(conv_dim * 8) if with_l4 else None
        self.preprocess = nn.BatchNorm2d(in_channels)

    @staticmethod
    def from_reference_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename a reference (SAGAN-wrapper) state dict to ours: ``l1.0.module.weight_u`` ->
        ``l1.0.weight_u``; ``last.0.*`` -> ``last.*``; the preprocessing BN (``preprocess_additional.*``) -> ``preprocess.*``."""
        out = {}
        for key, value in state.items():
            key = key.replace(".module.", ".").replace("last.0.", "last.")   # theirs: last = Sequential(conv)
            head, _, rest = key.partition(".")
            out[f"preprocess.{rest}" if head.startswith("preprocess") else key] = value
        return out

    def sn_convs(self) -> list[SNConv2d]:
        return [m for m in self.modules() if isinstance(m, SNConv2d)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        min_side = 64 if self.with_l4 else 32
        if x.shape[-2] < min_side or x.shape[-1] < min_side:
            raise ValueError(f"discriminator input {tuple(x.shape[-2:])} is too small: needs >= {min_side} "
                             f"per side (with_l4={self.with_l4}); raise logits_scale")
        out = self.l3(self.l2(self.l1(self.preprocess(x))))
        out = self.attn1(out)
        if self.with_l4:
            out = self.attn2(self.l4(out))
        return self.last(out)
