"""ENet (Paszke et al. 2016, "ENet: A Deep Neural Network Architecture for Real-Time Semantic
Segmentation"): ``enet``.

Initial block (3x3 stride-2 conv concatenated with a max-pool of the input), bottleneck stages
1-3 (regular, dilated 2/4/8/16 and asymmetric 5x1+1x5 convolutions, PReLU, spatial dropout 0.01
then 0.1), decoder stages 4-5 and a 2x2 stride-2 transposed "fullconv" classifier.

``decoder="unpool"`` (default) upsamples the shortcut with max-unpooling at the indices of the
matching encoder max-pool, as the paper does. ``decoder="interp"`` replaces it with bilinear x2
interpolation: the export-friendly variant (MaxUnpool needs the newer ONNX exporter and breaks
ONNX Runtime's FP16 converter and shape inference). Inputs must have H and W divisible by 8.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distill.models.base import SegModel, register_model
from distill.models.heads import ExistHead, light_encoder_taps, load_own_weights, resolve_exist


def _bn_prelu(c: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(c), nn.PReLU(c)]


class InitialBlock(nn.Module):
    """3x3 stride-2 conv with ``out - in_channels`` filters, concatenated with a 2x2 max-pool of the input."""

    def __init__(self, in_channels: int, out_channels: int = 16) -> None:
        super().__init__()
        if in_channels >= out_channels:
            raise ValueError(f"ENet initial block needs in_channels < {out_channels}, got {in_channels}")
        self.conv = nn.Conv2d(in_channels, out_channels - in_channels, 3, 2, 1, bias=False)
        self.pool = nn.MaxPool2d(2, 2)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(torch.cat([self.conv(x), self.pool(x)], dim=1)))


class Bottleneck(nn.Module):
    """Regular / dilated / asymmetric bottleneck: 1x1 reduce, main conv, 1x1 expand, spatial dropout,
    residual add, PReLU. ``kind``: "regular", "dilated" or "asymmetric"."""

    def __init__(self, channels: int, kind: str = "regular", dilation: int = 1, dropout: float = 0.1,
                 ratio: int = 4) -> None:
        super().__init__()
        mid = channels // ratio
        if kind == "asymmetric":
            main: list[nn.Module] = [nn.Conv2d(mid, mid, (5, 1), padding=(2, 0), bias=False),
                                     nn.Conv2d(mid, mid, (1, 5), padding=(0, 2), bias=False)]
        elif kind in ("regular", "dilated"):
            main = [nn.Conv2d(mid, mid, 3, padding=dilation, dilation=dilation, bias=False)]
        else:
            raise ValueError(f"unknown ENet bottleneck kind {kind!r}")
        self.branch = nn.Sequential(nn.Conv2d(channels, mid, 1, bias=False), *_bn_prelu(mid),
                                    *main, *_bn_prelu(mid),
                                    nn.Conv2d(mid, channels, 1, bias=False), nn.BatchNorm2d(channels),
                                    nn.Dropout2d(dropout))
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.branch(x))


class DownBottleneck(nn.Module):
    """Downsampling bottleneck: the branch starts with a 2x2 stride-2 conv; the shortcut is a max-pool
    (its indices feed the matching unpooling) zero-padded to the output channels."""

    def __init__(self, cin: int, cout: int, dropout: float, ratio: int = 4) -> None:
        super().__init__()
        mid = cin // ratio
        self.extra = cout - cin
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.branch = nn.Sequential(nn.Conv2d(cin, mid, 2, 2, bias=False), *_bn_prelu(mid),
                                    nn.Conv2d(mid, mid, 3, padding=1, bias=False), *_bn_prelu(mid),
                                    nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
                                    nn.Dropout2d(dropout))
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shortcut, indices = self.pool(x)
        shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra))  # zero channels appended
        return self.act(shortcut + self.branch(x)), indices


class UpBottleneck(nn.Module):
    """Upsampling bottleneck: shortcut 1x1 conv + BN then max-unpooling (``unpool``) or bilinear x2
    (``interp``); branch 1x1, 3x3 stride-2 transposed conv, 1x1."""

    def __init__(self, cin: int, cout: int, decoder: str, dropout: float = 0.1, ratio: int = 4) -> None:
        super().__init__()
        mid = cin // ratio
        self.decoder = decoder
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.unpool = nn.MaxUnpool2d(2, 2)
        self.branch = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), *_bn_prelu(mid),
                                    nn.ConvTranspose2d(mid, mid, 3, 2, 1, output_padding=1, bias=False),
                                    *_bn_prelu(mid),
                                    nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
                                    nn.Dropout2d(dropout))
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None) -> torch.Tensor:
        s = self.shortcut(x)
        if self.decoder == "unpool":
            s = self.unpool(s, indices, output_size=[2 * x.shape[-2], 2 * x.shape[-1]])
        else:
            s = F.interpolate(s, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.act(s + self.branch(x))


def _stage23(dropout: float) -> nn.Sequential:
    """The 8 bottlenecks shared by stages 2 and 3 (after stage 2's downsampling)."""
    return nn.Sequential(Bottleneck(128, "regular", dropout=dropout),
                         Bottleneck(128, "dilated", 2, dropout),
                         Bottleneck(128, "asymmetric", dropout=dropout),
                         Bottleneck(128, "dilated", 4, dropout),
                         Bottleneck(128, "regular", dropout=dropout),
                         Bottleneck(128, "dilated", 8, dropout),
                         Bottleneck(128, "asymmetric", dropout=dropout),
                         Bottleneck(128, "dilated", 16, dropout))


class ENet(SegModel):
    """ENet. Taps: ``stem`` (initial block, 16 ch, /2), ``stage1`` (64, /4), ``stage2`` and ``stage3``
    (128, /8), ``decoder`` (stage 5 output, 16 ch, /2, the fullconv classifier's input).
    The existence head reads ``stage3`` through a small projection (as ENet-SAD)."""

    def __init__(self, num_classes: int, lane_slots: int = 0, exist_head: bool | None = None, in_channels: int = 3,
                 decoder: str = "unpool") -> None:
        super().__init__()
        if decoder not in ("unpool", "interp"):
            raise ValueError(f"ENet decoder must be 'unpool' or 'interp', got {decoder!r}")
        self.num_classes, self.lane_slots = num_classes, lane_slots
        self.has_exist = resolve_exist(lane_slots, exist_head)
        self.decoder = decoder
        self.initial = InitialBlock(in_channels, 16)
        self.down1 = DownBottleneck(16, 64, dropout=0.01)
        self.stage1 = nn.Sequential(*[Bottleneck(64, dropout=0.01) for _ in range(4)])
        self.down2 = DownBottleneck(64, 128, dropout=0.1)
        self.stage2 = _stage23(0.1)
        self.stage3 = _stage23(0.1)
        self.up4 = UpBottleneck(128, 64, decoder)
        self.stage4 = nn.Sequential(Bottleneck(64), Bottleneck(64))
        self.up5 = UpBottleneck(64, 16, decoder)
        self.stage5 = Bottleneck(16)
        self.fullconv = nn.ConvTranspose2d(16, num_classes, 2, 2)
        self.exist = ExistHead(128, num_classes, lane_slots, project=True) if self.has_exist else None
        self.feature_info = light_encoder_taps(num_classes, lane_slots if self.has_exist else 0)

    def forward_taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = x.shape[-2:]
        if h % 8 or w % 8:
            raise ValueError(f"ENet needs input height and width divisible by 8, got {h}x{w}")
        stem = self.initial(x)
        y, idx1 = self.down1(stem)
        s1 = self.stage1(y)
        y, idx2 = self.down2(s1)
        s2 = self.stage2(y)
        s3 = self.stage3(s2)
        y = self.stage4(self.up4(s3, idx2 if self.decoder == "unpool" else None))
        dec = self.stage5(self.up5(y, idx1 if self.decoder == "unpool" else None))
        taps = {"stem": stem, "stage1": s1, "stage2": s2, "stage3": s3, "decoder": dec,
                "logits": self.fullconv(dec)}
        if self.exist is not None:
            taps["exist"] = self.exist(s3)
        return taps


@register_model("enet", "student")
def enet(num_classes: int, lane_slots: int = 0, exist_head: bool | None = None, in_channels: int = 3,
         pretrained: str | None = None, decoder: str = "unpool") -> ENet:
    """Student: ENet; ``decoder="interp"`` is the export-friendly variant. ``pretrained``: a state
    dict previously saved from this architecture (no public ImageNet weights exist for ENet)."""
    model = ENet(num_classes, lane_slots, exist_head, in_channels, decoder)
    if pretrained:
        load_own_weights(model, pretrained)
    return model

