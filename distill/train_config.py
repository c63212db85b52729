"""The training config: one dataclass tree for teachers, baselines, label teachers and distillation."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DataConfig:
    kind: str = "culane"                    # culane | tusimple | llamas | apollo | cityscapes | synthetic_marking
    root: str = "runs/data/synthetic"
    train_split: str = "train"
    val_split: str = "val"
    input_size: tuple[int, int] = (144, 400)  # (h, w) of the model input
    crop_top: int = 0                        # rows cut from the top of the original frame
    batch_size: int = 8
    num_workers: int = 2
    max_val_images: int = 0                  # 0 = the whole validation split
    options: dict[str, Any] = field(default_factory=dict)  # reader-specific keyword arguments


@dataclass
class ModelConfig:
    name: str = "erfnet"
    kwargs: dict[str, Any] = field(default_factory=dict)   # e.g. {width: 0.5, decoder: interp}


@dataclass
class TeacherConfig:
    checkpoint: str = ""                     # a lanekd checkpoint; the architecture is read from it
    # (h, w) the teacher reads; empty = the student's data.input_size. A larger size shows the teacher
    # the same augmented frame at its own training resolution; its logits are resized (bilinear) to
    # the student's, and each method resizes the teacher taps it reads to the student tap's size.
    input_size: list[int] = field(default_factory=list)


@dataclass
class OptimConfig:
    name: str = "sgd"                        # sgd | adamw
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9                  # lr = base * (1 - step/steps) ** power
    warmup_steps: int = 0
    grad_clip: float = 0.0                   # max global grad norm; 0 = off


@dataclass
class LossConfig:
    bg_weight: float = 0.4                   # CE weight of the background class for lane slots (SCNN)
    class_weights: list[float] = field(default_factory=list)  # overrides bg_weight when given
    exist_weight: float = 0.1                # lane-existence BCE weight


@dataclass
class TrainConfig:
    out: str = "runs/train"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig | None = None
    # [{name: kd, weight: 1.0, T: 1}, ...]. ``weight: auto`` (optional ``share``, default 0.5) sets the
    # weight at start-up so the method's gradient on the student is ``share`` x the task loss's
    # (distill/grad_share.py); the resolved weight goes to log.jsonl, config.yaml and checkpoints.
    methods: list[dict[str, Any]] = field(default_factory=list)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    steps: int = 1000
    val_every: int = 250                     # 0 = only at the end
    ckpt_every: int = 250
    log_every: int = 10
    device: str = "auto"                     # auto | cpu | cuda
    amp: str = "none"                        # none | bf16 | fp16
    channels_last: bool = False
    compile: bool = False
    seed: int = 0
    deterministic: bool = False
    label_teacher: bool = False              # train a label auto-encoder (LGAD's teacher)
    resume: str = "auto"                     # auto (resume from out/last.pt if present) | never | <path>
