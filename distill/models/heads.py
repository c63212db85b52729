"""Heads shared by the model families: ASPP, the lane-existence head, SCNN message passing, and
the "backbone + head" segmentation model the ResNet and MobileNetV2 variants are built from.

Tap conventions used by every model here (``feature_info``):
- spatial taps: ``TapInfo(channels, stride)`` with the stride relative to the input;
- ``logits``: ``TapInfo(num_classes, 1)`` (upsampled to the input size inside the model);
- ``exist``: ``TapInfo(lane_slots, 0)``; stride 0 marks a non-spatial (B, L) tensor.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distill.models.base import SegModel, TapInfo

#: Pooling grid of the existence head. At the standard 288x800 input a stride-8 map is 36x100 and
#: the embedded default 144x400 gives 18x50; both divide evenly, so the pool is a plain AvgPool.
EXIST_GRID: tuple[int, int] = (9, 25)


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1,
                 groups: int = 1) -> nn.Sequential:
    """Conv (no bias) + BN + ReLU with 'same' padding for odd kernels."""
    pad = dilation * (k // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def upsample_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize to ``size`` (align_corners=False, the project-wide convention)."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def grid_pool(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Average-pool a map to a fixed ``grid`` whatever the input size.

    When the grid divides the map (the standard sizes) this is a plain AvgPool whose kernel is read
    from the static shape at trace time, which every ONNX consumer supports; otherwise adaptive
    pooling keeps eager mode working at any size.
    """
    h, w = x.shape[-2:]
    gh, gw = grid
    if h % gh == 0 and w % gw == 0:
        return F.avg_pool2d(x, (h // gh, w // gw))
    return F.adaptive_avg_pool2d(x, grid)


class ExistHead(nn.Module):
    """Lane-existence head as in SCNN / ERFNet-CULane: softmax over classes, average pool to a fixed
    grid, flatten, FC, ReLU, FC(L). Returns existence *logits* (B, L).

    ``project=True`` first maps a feature to class scores (3x3 conv 32 + BN + ReLU + dropout + 1x1,
    the ERFNet/ENet-SAD branch); with ``project=False`` the input must already be class logits.
    The grid replaces SCNN's size-dependent pooling so the head is input-size independent.
    """

    def __init__(self, in_channels: int, num_classes: int, lane_slots: int, project: bool = False,
                 grid: tuple[int, int] = EXIST_GRID, hidden: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        if lane_slots <= 0:
            raise ValueError(f"ExistHead needs lane_slots > 0, got {lane_slots}")
        if not project and in_channels != num_classes:
            raise ValueError(f"ExistHead without projection takes class logits: in_channels={in_channels} "
                             f"!= num_classes={num_classes}")
        self.grid = tuple(grid)
        self.project = (nn.Sequential(conv_bn_relu(in_channels, 32), nn.Dropout2d(dropout),
                                      nn.Conv2d(32, num_classes, 1)) if project else None)
        self.fc1 = nn.Linear(num_classes * self.grid[0] * self.grid[1], hidden)
        self.fc2 = nn.Linear(hidden, lane_slots)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.project is not None:
            x = self.project(x)
        p = grid_pool(torch.softmax(x, dim=1), self.grid)
        return self.fc2(F.relu(self.fc1(p.flatten(1))))


class ASPP(nn.Module):
    """DeepLabV3 atrous spatial pyramid pooling: 1x1, three 3x3 atrous branches, image pooling,
    concatenated and projected (1x1 + BN + ReLU, then dropout).

    ``separable=True`` makes the atrous branches depthwise-separable (the light MobileNet head).
    Deviation from torchvision: the image-pooling branch has no BN (conv with bias + ReLU), so a
    training batch of one does not fail on a 1x1 BatchNorm.
    """

    def __init__(self, in_channels: int, out_channels: int = 256, rates: Sequence[int] = (12, 24, 36),
                 separable: bool = False, dropout: float = 0.5) -> None:
        super().__init__()
        branches: list[nn.Module] = [conv_bn_relu(in_channels, out_channels, 1)]
        for r in rates:
            if separable:
                branches.append(nn.Sequential(conv_bn_relu(in_channels, in_channels, 3, dilation=r, groups=in_channels),
                                              conv_bn_relu(in_channels, out_channels, 1)))
            else:
                branches.append(conv_bn_relu(in_channels, out_channels, 3, dilation=r))
        self.branches = nn.ModuleList(branches)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1),
                                  nn.ReLU(inplace=True))
        self.project = conv_bn_relu(out_channels * (len(rates) + 2), out_channels, 1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        outs = [b(x) for b in self.branches]
        outs.append(self.pool(x).expand(-1, -1, h, w))
        return self.dropout(self.project(torch.cat(outs, dim=1)))


class SCNN(nn.Module):
    """SCNN spatial message passing (Pan et al. 2018): slice by slice, downward, upward, rightward,
    leftward; each slice adds ReLU(conv(previous slice)). Kernel ``k`` along the slice.

    The loop length is the (static) feature height/width, so the ONNX graph is unrolled.
    """

    def __init__(self, channels: int, kernel: int = 9) -> None:
        super().__init__()
        pad = kernel // 2
        self.down = nn.Conv2d(channels, channels, (1, kernel), padding=(0, pad), bias=False)
        self.up = nn.Conv2d(channels, channels, (1, kernel), padding=(0, pad), bias=False)
        self.right = nn.Conv2d(channels, channels, (kernel, 1), padding=(pad, 0), bias=False)
        self.left = nn.Conv2d(channels, channels, (kernel, 1), padding=(pad, 0), bias=False)
        # SCNN's initialisation: small weights keep the long sums from blowing up at the start.
        std = math.sqrt(2.0 / (kernel * channels * 5))
        for conv in (self.down, self.up, self.right, self.left):
            nn.init.normal_(conv.weight, 0.0, std)

    @staticmethod
    def _pass(x: torch.Tensor, conv: nn.Conv2d, dim: int, reverse: bool) -> torch.Tensor:
        slices = list(torch.split(x, 1, dim=dim))
        order = list(range(len(slices)))[::-1] if reverse else list(range(len(slices)))
        out: list[torch.Tensor] = [slices[0]] * len(slices)
        prev = slices[order[0]]
        out[order[0]] = prev
        for i in order[1:]:
            prev = slices[i] + F.relu(conv(prev))
            out[i] = prev
        return torch.cat(out, dim=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._pass(x, self.down, 2, False)
        x = self._pass(x, self.up, 2, True)
        x = self._pass(x, self.right, 3, False)
        return self._pass(x, self.left, 3, True)


def load_own_weights(model: nn.Module, path: str) -> None:
    """Load a state dict saved from the same architecture (strict); a mismatch raises naming the file."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: state dict does not fit {type(model).__name__}: {exc}") from None


def resolve_exist(lane_slots: int, exist_head: bool | None) -> bool:
    """The existence head defaults to on iff the task has lane slots; asking for it without any is an error."""
    if exist_head is None:
        return lane_slots > 0
    if exist_head and lane_slots <= 0:
        raise ValueError("exist_head=True needs lane_slots > 0")
    return bool(exist_head)


class BackboneHeadModel(SegModel):
    """A dilated (output stride 8) backbone, a head producing the ``decoder`` feature, dropout and a
    1x1 classifier; logits are upsampled to the input size. The existence head reads the stride-8
    logits (before upsampling), as SCNN does.

    ``backbone(x)`` returns a dict of stage taps and declares them in ``backbone.stage_info``.
    The ``decoder`` tap is taken *before* dropout: it is what the classifier sees in eval mode, and
    distilling dropout-masked features would only add noise.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, head_channels: int, num_classes: int,
                 lane_slots: int, exist_head: bool | None, dropout: float = 0.1) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.lane_slots = lane_slots
        self.has_exist = resolve_exist(lane_slots, exist_head)
        self.backbone = backbone
        self.head = head
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(head_channels, num_classes, 1)
        self.exist = ExistHead(num_classes, num_classes, lane_slots) if self.has_exist else None
        self.head_stride = backbone.stage_info["stage4"].stride
        self.feature_info = dict(backbone.stage_info)
        self.feature_info["decoder"] = TapInfo(head_channels, self.head_stride)
        self.feature_info["logits"] = TapInfo(num_classes, 1)
        if self.has_exist:
            self.feature_info["exist"] = TapInfo(lane_slots, 0)

    def forward_taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        taps = self.backbone(x)
        taps["decoder"] = feat = self.head(taps["stage4"])
        low = self.classifier(self.dropout(feat))
        taps["logits"] = upsample_to(low, x.shape[-2:])
        if self.exist is not None:
            taps["exist"] = self.exist(low)
        return taps


def light_encoder_taps(num_classes: int, exist_slots: int = 0) -> dict[str, TapInfo]:
    """The taps ENet and ERFNet share: 16/64/128/128 channels at strides 2/4/8/8, a stride-2 decoder."""
    info = {"stem": TapInfo(16, 2), "stage1": TapInfo(64, 4), "stage2": TapInfo(128, 8),
            "stage3": TapInfo(128, 8), "decoder": TapInfo(16, 2), "logits": TapInfo(num_classes, 1)}
    if exist_slots:
        info["exist"] = TapInfo(exist_slots, 0)
    return info
