"""MobileNetV2 (Sandler et al. 2018) with torchvision key names (``features.N...``), dilated to
output stride 8, with a light DeepLabV3 head: ``mobilenetv2_deeplab``.

The trunk stops at ``features.17`` (320 channels), as DeepLabV3-MobileNetV2 does; torchvision's
``features.18`` (1x1 conv to 1280) and ``classifier`` are skipped when loading ImageNet weights.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from distill.models.base import TapInfo, register_model
from distill.models.heads import ASPP, BackboneHeadModel
from distill.models.resnet import load_pretrained

# (expand ratio t, output channels c, repeats n, first stride s): the paper's Table 2.
SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

# Tap name -> index of the last ``features`` block of that stage.
TAP_BLOCKS: dict[str, int] = {"stem": 0, "stage1": 3, "stage2": 6, "stage3": 13, "stage4": 17}


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's channel rounding (never below 90 % of ``v``)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def conv_bn_relu6(cin: int, cout: int, k: int, stride: int = 1, dilation: int = 1, groups: int = 1) -> nn.Sequential:
    """torchvision's Conv2dNormActivation layout: keys ``.0`` (conv) and ``.1`` (BN)."""
    pad = dilation * (k // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """Expand (1x1) - depthwise (3x3, possibly dilated) - project (1x1, linear), residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, dilation: int = 1) -> None:
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_relu6(cin, hidden, 1))
        layers += [conv_bn_relu6(hidden, hidden, 3, stride, dilation, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """``features.0``..``features.17`` with strides replaced by dilation beyond ``output_stride``."""

    def __init__(self, in_channels: int = 3, width: float = 1.0, output_stride: int = 8) -> None:
        super().__init__()
        cin = make_divisible(32 * width)
        blocks: list[nn.Module] = [conv_bn_relu6(in_channels, cin, 3, stride=2)]
        stride, dilation = 2, 1
        strides = [stride]
        for t, c, n, s in SETTINGS:
            cout = make_divisible(c * width)
            for i in range(n):
                block_stride = s if i == 0 else 1
                block_dilation = dilation
                if block_stride > 1 and stride >= output_stride:
                    # Past the output stride: keep resolution, grow the dilation from the next block on.
                    dilation *= block_stride
                    block_stride = 1
                stride *= block_stride
                blocks.append(InvertedResidual(cin, cout, block_stride, t, block_dilation))
                strides.append(stride)
                cin = cout
        self.features = nn.Sequential(*blocks)
        self.stage_info = {name: TapInfo(self._out_channels(idx), strides[idx]) for name, idx in TAP_BLOCKS.items()}

    def _out_channels(self, idx: int) -> int:
        block = self.features[idx]
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
        return convs[-1].out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        taps: dict[str, torch.Tensor] = {}
        wanted = {idx: name for name, idx in TAP_BLOCKS.items()}
        for idx, block in enumerate(self.features):
            x = block(x)
            if idx in wanted:
                taps[wanted[idx]] = x
        return taps


@register_model("mobilenetv2_deeplab", "student")
def mobilenetv2_deeplab(num_classes: int, lane_slots: int = 0, exist_head: bool | None = None, in_channels: int = 3,
                        pretrained: str | None = None, width: float = 1.0, head_channels: int = 128,
                        rates: Sequence[int] = (12, 24, 36)) -> BackboneHeadModel:
    """Student: MobileNetV2 OS8 + ASPP-lite (128 channels, depthwise-separable atrous branches).

    ``decoder`` is the ASPP projection (1x1 + BN + ReLU), before the dropout that precedes the classifier.
    """
    backbone = MobileNetV2(in_channels=in_channels, width=width)
    if pretrained:
        if width != 1.0:
            raise ValueError(f"pretrained weights need width=1.0 (ImageNet shapes), got width={width}")
        load_pretrained(backbone, pretrained, ignore_prefixes=("features.18.", "classifier."))
    head = ASPP(backbone.stage_info["stage4"].channels, head_channels, rates, separable=True, dropout=0.0)
    return BackboneHeadModel(backbone, head, head_channels, num_classes, lane_slots, exist_head, dropout=0.1)
