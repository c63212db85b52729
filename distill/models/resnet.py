"""ResNet backbones (torchvision layout and key names) dilated to output stride 8, with a DeepLabV3
head (teachers: ``resnet101_deeplab``, ``resnet50_deeplab``, ``resnet34_deeplab``) or a light FCN
head (students: ``resnet18_fcn``, ``resnet34_fcn``).

Dilation follows torchvision's ``replace_stride_with_dilation=[False, True, True]``: layer3 and
layer4 keep stride 1; their first block uses the previous dilation, the others 2 (layer3) and 4
(layer4). ``pretrained`` loads a user-supplied torchvision ImageNet state dict into the backbone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from distill.models.base import TapInfo, register_model
from distill.models.heads import ASPP, SCNN, BackboneHeadModel, conv_bn_relu


def scaled(channels: int, width: float) -> int:
    """Channel count scaled by ``width`` (at least 8)."""
    return max(8, int(round(channels * width)))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet trunk without the classifier; ``forward`` returns the taps ``stem`` (after conv1/bn1/
    ReLU, stride 2) and ``stage1``..``stage4`` (layer1..layer4)."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int], in_channels: int = 3,
                 width: float = 1.0, dilate: Sequence[bool] = (False, True, True)) -> None:
        super().__init__()
        self.inplanes = scaled(64, width)
        self.dilation = 1
        self.conv1 = nn.Conv2d(in_channels, self.inplanes, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stem_channels = self.inplanes
        planes = [scaled(c, width) for c in (64, 128, 256, 512)]
        self.layer1 = self._make_layer(block, planes[0], layers[0])
        self.layer2 = self._make_layer(block, planes[1], layers[1], stride=2, dilate=dilate[0])
        self.layer3 = self._make_layer(block, planes[2], layers[2], stride=2, dilate=dilate[1])
        self.layer4 = self._make_layer(block, planes[3], layers[3], stride=2, dilate=dilate[2])
        strides, s = [], 4
        for i, d in enumerate((False,) + tuple(dilate)):
            if i > 0 and not d:
                s *= 2
            strides.append(s)
        self.stage_info = {"stem": TapInfo(stem_channels, 2)}
        for i, (p, st) in enumerate(zip(planes, strides), start=1):
            self.stage_info[f"stage{i}"] = TapInfo(p * block.expansion, st)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, previous_dilation, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))
        s1 = self.layer1(self.maxpool(stem))
        s2 = self.layer2(s1)
        s3 = self.layer3(s2)
        s4 = self.layer4(s3)
        return {"stem": stem, "stage1": s1, "stage2": s2, "stage3": s3, "stage4": s4}


def load_pretrained(module: nn.Module, path: str | Path, ignore_prefixes: Sequence[str] = ()) -> None:
    """Load a user-supplied state dict with torchvision key names into ``module`` (a backbone).

    Keys under ``ignore_prefixes`` (the ImageNet classifier) are skipped; a ``state_dict``/``model``
    wrapper and a DDP ``module.`` prefix are unwrapped. Any missing, unexpected or mis-shaped key
    is an error that lists them all, naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not any(k.startswith(p) for p in ignore_prefixes)}
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in own)
    misshaped = sorted(f"{k}: file {tuple(state[k].shape)} != model {tuple(own[k].shape)}"
                       for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape))
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if items:
            shown = ", ".join(items[:20]) + (f", ... ({len(items)} in all)" if len(items) > 20 else "")
            problems.append(f"{len(items)} {label} key(s): {shown}")
    if problems:
        raise ValueError(f"{path}: state dict does not fit the {type(module).__name__} backbone; "
                         + "; ".join(problems))
    module.load_state_dict(state, strict=False)  # only num_batches_tracked may be absent


def _build_resnet(block, layers: Sequence[int], in_channels: int, width: float, pretrained: str | None) -> ResNet:
    backbone = ResNet(block, layers, in_channels=in_channels, width=width)
    if pretrained:
        if width != 1.0:
            raise ValueError(f"pretrained weights need width=1.0 (ImageNet shapes), got width={width}")
        load_pretrained(backbone, pretrained, ignore_prefixes=("fc.",))
    return backbone


class DeepLabHead(nn.Module):
    """ASPP, then 3x3 conv + BN + ReLU, optionally SCNN message passing; returns the ``decoder`` feature."""

    def __init__(self, in_channels: int, channels: int, rates: Sequence[int], scnn: bool) -> None:
        super().__init__()
        self.aspp = ASPP(in_channels, channels, rates)
        self.conv = conv_bn_relu(channels, channels, 3)
        self.scnn = SCNN(channels) if scnn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.aspp(x))
        return self.scnn(x) if self.scnn is not None else x


def _deeplab(block, layers, num_classes: int, lane_slots: int, exist_head: bool | None, in_channels: int,
             pretrained: str | None, width: float, scnn: bool, rates: Sequence[int]) -> BackboneHeadModel:
    backbone = _build_resnet(block, layers, in_channels, width, pretrained)
    ch = scaled(256, width)
    head = DeepLabHead(backbone.stage_info["stage4"].channels, ch, rates, scnn)
    return BackboneHeadModel(backbone, head, ch, num_classes, lane_slots, exist_head, dropout=0.1)


def _fcn(block, layers, num_classes: int, lane_slots: int, exist_head: bool | None, in_channels: int,
         pretrained: str | None, width: float, head_channels: int) -> BackboneHeadModel:
    backbone = _build_resnet(block, layers, in_channels, width, pretrained)
    ch = scaled(head_channels, width)
    head = conv_bn_relu(backbone.stage_info["stage4"].channels, ch, 3)
    return BackboneHeadModel(backbone, head, ch, num_classes, lane_slots, exist_head, dropout=0.1)


@register_model("resnet101_deeplab", "teacher")
def resnet101_deeplab(num_classes: int, lane_slots: int = 0, exist_head: bool | None = None, in_channels: int = 3,
                      pretrained: str | None = None, width: float = 1.0, scnn: bool = False,
                      rates: Sequence[int] = (12, 24, 36)) -> BackboneHeadModel:
    """Teacher: ResNet-101 OS8 + DeepLabV3 ASPP (rates 12/24/36) + 3x3 conv 256, optional SCNN."""
    return _deeplab(Bottleneck, (3, 4, 23, 3), num_classes, lane_slots, exist_head, in_channels, pretrained,
                    width, scnn, rates)


@register_model("resnet50_deeplab", "teacher")
def resnet50_deeplab(num_classes: int, lane_slots: int = 0, exist_head: bool | None = None, in_channels: int = 3,
                     pretrained: str | None = None, width: float = 1.0, scnn: bool = False,
                     rates: Sequence[int] = (12, 24, 36)) -> BackboneHeadModel:
    """Teacher: ResNet-50 OS8 + DeepLabV3 head, optional SCNN."""
    return _deeplab(Bottleneck, (3, 4, 6, 3), num_classes, lane_slots, exist_head, in_channels, pretrained,
                    width, scnn, rates)


@register_model("resnet34_deeplab", "teacher")
def resnet34_deeplab(num_classes: int, lane_slots: int = 0, exist_head: bool | None = None, in_channels: int = 3,
                     pretrained: str | None = None, width: float = 1.0, scnn: bool = False,
                     rates: Sequence[int] = (12, 24, 36)) -> BackboneHeadModel:
    """CPU-sized teacher: ResNet-34 (basic blocks) OS8 + DeepLabV3 head, optional SCNN."""
    return _deeplab(BasicBlock, (3, 4, 6, 3), num_classes, lane_slots, exist_head, in_channels, pretrained,
                    width, scnn, rates)


@register_model("resnet18_fcn", "student")
def resnet18_fcn(num_classes: int, lane_slots: int = 0, exist_head: bool | None = None, in_channels: int = 3,
                 pretrained: str | None = None, width: float = 1.0, head_channels: int = 128) -> BackboneHeadModel:
    """Student: ResNet-18 OS8 + FCN head (3x3 conv 128 + BN + ReLU + dropout + 1x1)."""
    return _fcn(BasicBlock, (2, 2, 2, 2), num_classes, lane_slots, exist_head, in_channels, pretrained, width,
                head_channels)


@register_model("resnet34_fcn", "student")
def resnet34_fcn(num_classes: int, lane_slots: int = 0, exist_head: bool | None = None, in_channels: int = 3,
                 pretrained: str | None = None, width: float = 1.0, head_channels: int = 128) -> BackboneHeadModel:
    """Student: ResNet-34 OS8 + FCN head."""
    return _fcn(BasicBlock, (3, 4, 6, 3), num_classes, lane_slots, exist_head, in_channels, pretrained, width,
                head_channels)
