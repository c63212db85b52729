"""ERFNet (Romera et al. 2017, "ERFNet: Efficient Residual Factorized ConvNet for Real-time Semantic
Segmentation"): ``erfnet``.

Encoder: downsampler blocks (3x3 stride-2 conv concatenated with a max-pool) and
non-bottleneck-1d blocks (3x1/1x3 factorised convs, the second pair dilated 2/4/8/16 at 1/8).
Decoder: two transposed-conv upsampler blocks with non-bottleneck-1d blocks and a 2x2 stride-2
transposed-conv classifier. All convolutions have biases and BN uses eps=1e-3, as in the paper's
code. Inputs must have H and W divisible by 8.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distill.models.base import SegModel, register_model
from distill.models.heads import ExistHead, light_encoder_taps, load_own_weights, resolve_exist


class Downsampler(nn.Module):
    """3x3 stride-2 conv with ``cout - cin`` filters, concatenated with a 2x2 max-pool, BN, ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        if cin >= cout:
            raise ValueError(f"ERFNet downsampler needs in channels < {cout}, got {cin}")
        self.conv = nn.Conv2d(cin, cout - cin, 3, 2, 1)
        self.pool = nn.MaxPool2d(2, 2)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(torch.cat([self.conv(x), self.pool(x)], dim=1)))


class NonBottleneck1d(nn.Module):
    """Residual block of two factorised 3x3 convs (3x1 then 1x3); the second pair is dilated."""

    def __init__(self, channels: int, dropout: float, dilation: int) -> None:
        super().__init__()
        d = dilation
        self.conv3x1_1 = nn.Conv2d(channels, channels, (3, 1), padding=(1, 0))
        self.conv1x3_1 = nn.Conv2d(channels, channels, (1, 3), padding=(0, 1))
        self.bn1 = nn.BatchNorm2d(channels, eps=1e-3)
        self.conv3x1_2 = nn.Conv2d(channels, channels, (3, 1), padding=(d, 0), dilation=(d, 1))
        self.conv1x3_2 = nn.Conv2d(channels, channels, (1, 3), padding=(0, d), dilation=(1, d))
        self.bn2 = nn.BatchNorm2d(channels, eps=1e-3)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv3x1_1(x))
        y = F.relu(self.bn1(self.conv1x3_1(y)))
        y = F.relu(self.conv3x1_2(y))
        y = self.dropout(self.bn2(self.conv1x3_2(y)))
        return F.relu(x + y)


class Upsampler(nn.Module):
    """3x3 stride-2 transposed conv + BN + ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(cin, cout, 3, 2, 1, output_padding=1)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _dilated_group(dropout: float) -> list[nn.Module]:
    return [NonBottleneck1d(128, dropout, d) for d in (2, 4, 8, 16)]


class ERFNet(SegModel):
    """ERFNet. Taps: ``stem`` (first downsampler, 16 ch, /2), ``stage1`` (64, /4), ``stage2`` (128, /8,
    after the first dilated group), ``stage3`` (128, /8, encoder output), ``decoder`` (16, /2, the
    output deconv's input). The existence head reads ``stage3`` through a projection (as in the
    CULane ERFNet of SAD)."""

    def __init__(self, num_classes: int, lane_slots: int = 0, exist_head: bool | None = None, in_channels: int = 3,
                 dropout: float = 0.3) -> None:
        super().__init__()
        self.num_classes, self.lane_slots = num_classes, lane_slots
        self.has_exist = resolve_exist(lane_slots, exist_head)
        self.initial = Downsampler(in_channels, 16)
        self.stage1 = nn.Sequential(Downsampler(16, 64), *[NonBottleneck1d(64, 0.03, 1) for _ in range(5)])
        self.stage2 = nn.Sequential(Downsampler(64, 128), *_dilated_group(dropout))
        self.stage3 = nn.Sequential(*_dilated_group(dropout))
        self.decoder = nn.Sequential(Upsampler(128, 64), NonBottleneck1d(64, 0, 1), NonBottleneck1d(64, 0, 1),
                                     Upsampler(64, 16), NonBottleneck1d(16, 0, 1), NonBottleneck1d(16, 0, 1))
        self.output_conv = nn.ConvTranspose2d(16, num_classes, 2, 2)
        self.exist = ExistHead(128, num_classes, lane_slots, project=True) if self.has_exist else None
        self.feature_info = light_encoder_taps(num_classes, lane_slots if self.has_exist else 0)

    def forward_taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = x.shape[-2:]
        if h % 8 or w % 8:
            raise ValueError(f"ERFNet needs input height and width divisible by 8, got {h}x{w}")
        stem = self.initial(x)
        s1 = self.stage1(stem)
        s2 = self.stage2(s1)
        s3 = self.stage3(s2)
        dec = self.decoder(s3)
        taps = {"stem": stem, "stage1": s1, "stage2": s2, "stage3": s3, "decoder": dec,
                "logits": self.output_conv(dec)}
        if self.exist is not None:
            taps["exist"] = self.exist(s3)
        return taps


@register_model("erfnet", "student")
def erfnet(num_classes: int, lane_slots: int = 0, exist_head: bool | None = None, in_channels: int = 3,
           pretrained: str | None = None, dropout: float = 0.3) -> ERFNet:
    """Student: ERFNet (~2.1 M parameters). ``pretrained``: a state dict saved from this architecture."""
    model = ERFNet(num_classes, lane_slots, exist_head, in_channels, dropout)
    if pretrained:
        load_own_weights(model, pretrained)
    return model
