"""Run by tests/test_train.py under torchrun (or alone): train a BN-free, dropout-free tiny net.

A model without batch statistics or dropout makes a 2-process DDP run comparable with a single
process on the same global batch (CPU gloo has no SyncBatchNorm).
"""
from __future__ import annotations

import os
import sys

import torch
from torch import nn

from distill.config import load_config
from distill.models.base import MODELS, SegModel, TapInfo
from distill.train import Trainer
from distill.train_config import TrainConfig


class TinyFCN(SegModel):
    def __init__(self, num_classes: int, lane_slots: int = 0, exist_head: bool | None = None,
                 in_channels: int = 3) -> None:
        super().__init__()
        self.num_classes, self.lane_slots, self.has_exist = num_classes, lane_slots, False
        self.body = nn.Sequential(nn.Conv2d(in_channels, 8, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, num_classes, 1)
        self.feature_info = {"decoder": TapInfo(8, 2), "logits": TapInfo(num_classes, 1)}

    def forward_taps(self, x):
        f = self.body(x)
        logits = nn.functional.interpolate(self.head(f), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return {"decoder": f, "logits": logits}


if "tiny_fcn_test" not in MODELS:
    MODELS.register("tiny_fcn_test")(TinyFCN)


def main(config: str, *overrides: str) -> None:
    torch.set_num_threads(1)
    cfg = load_config(TrainConfig, config, list(overrides))
    trainer = Trainer(cfg, quiet=True)
    trainer.run()
    rank = trainer.dist.rank
    torch.save(trainer.student.state_dict(), os.path.join(cfg.out, f"rank{rank}.pt"))
    trainer.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
