"""One Trainer for teachers, student baselines, label teachers and distillation.

A plain loop: data, forward, task loss + KD terms, backward (AMP-aware), optimiser, log,
validate, checkpoint. Distributed when launched by ``torchrun`` (``WORLD_SIZE > 1``): the student
and every KD method sit in one module wrapped once by DDP; the teacher stays outside, frozen.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler

from distill import grad_share
from distill.checkpoint import (CheckpointError, load_checkpoint, load_weights, model_from_checkpoint,
                                save_checkpoint, spec_from_checkpoint, spec_to_dict)
from distill.config import save_config, to_dict
from distill.data.sample import DataSpec
from distill.grad_share import GradShares
from distill.inputs import model_input
from distill.methods.base import METHODS, KDMethod, build_method
from distill.models.base import SegModel, TapInfo, build_model
from distill.train_config import TrainConfig
from distill.validate import Validator


class NonFiniteLoss(RuntimeError):
    """A NaN or Inf loss: the run stops and the last good checkpoint is kept."""


# ----------------------------------------------------------------------------- distributed

@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device_kind: str) -> DistInfo:
    """Join the process group when launched by torchrun (``WORLD_SIZE > 1``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


class EpochSampler(Sampler[int]):
    """A seeded per-epoch permutation, sharded across ranks, that can start mid-epoch.

    Rank r takes every world-th index of the permutation, so the union of the ranks' k-th batches
    is exactly the k-th batch of a single process with the global batch size. ``start`` skips the
    samples already consumed in the epoch, which makes a resumed run see the same data order.
    It yields keys ``epoch * n + index`` so that persistent DataLoader workers know the epoch
    (see ``EpochKeyed``) without being restarted every epoch.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 shuffle: bool = True) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world, self.shuffle = rank, world, shuffle
        self.epoch = 0
        self.start_batch = 0

    def batches_per_epoch(self) -> int:
        return (self.n // self.world) // self.batch_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        mine = order[self.rank::self.world]
        usable = self.batches_per_epoch() * self.batch_size
        base = self.epoch * self.n
        return iter([base + i for i in mine[self.start_batch * self.batch_size:usable]])

    def __len__(self) -> int:
        return (self.batches_per_epoch() - self.start_batch) * self.batch_size


class EpochKeyed(torch.utils.data.Dataset):
    """Key ``epoch * n + i`` -> item ``i`` with that epoch's augmentations (from ``EpochSampler``)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset, self.n = dataset, len(dataset)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: int) -> dict[str, Any]:
        epoch, index = divmod(int(key), self.n)
        return self.dataset.item(index, epoch)


# ----------------------------------------------------------------------------- the model under training

class Distiller(nn.Module):
    """Student + KD methods in one module (wrapped once by DDP). Returns the named loss terms."""

    def __init__(self, student: SegModel, methods: list[KDMethod], spec: DataSpec, cfg: TrainConfig) -> None:
        super().__init__()
        self.student = student
        self.methods = nn.ModuleList(methods)
        self.spec = spec
        weights = list(cfg.loss.class_weights)
        if not weights and spec.task == "lanes":
            weights = [cfg.loss.bg_weight] + [1.0] * (spec.num_classes - 1)
        if weights and len(weights) != spec.num_classes:
            raise ValueError(f"loss.class_weights has {len(weights)} entries for {spec.num_classes} classes")
        self.register_buffer("class_weights", torch.tensor(weights) if weights else torch.ones(spec.num_classes),
                             persistent=False)
        self.exist_weight = cfg.loss.exist_weight

    def forward(self, x: torch.Tensor, batch: dict[str, torch.Tensor],
                t_taps: dict[str, torch.Tensor] | None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        task, per_method, s_taps = self.terms_by_source(x, batch, t_taps)
        for terms in per_method:
            task.update(terms)
        return task, s_taps

    def terms_by_source(self, x: torch.Tensor, batch: dict[str, torch.Tensor], t_taps: dict[str, torch.Tensor] | None
                        ) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """The task terms, each method's terms ({} while it is off) and the student taps."""
        s_taps = self.student.forward_taps(x)
        task = task_losses(s_taps, batch, self.class_weights, self.exist_weight, self.spec.ignore_index)
        per_method = [method(s_taps, t_taps if method.uses_teacher else None, batch) if method.active else {}
                      for method in self.methods]
        return task, per_method, s_taps


def task_losses(s_taps: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], class_weights: torch.Tensor,
                exist_weight: float, ignore_index: int = 255) -> dict[str, torch.Tensor]:
    """Weighted CE (ignore 255) on the logits, plus existence BCE where the model has the head."""
    logits = s_taps["logits"].float()
    terms = {"task/ce": F.cross_entropy(logits, batch["mask"], weight=class_weights.to(logits.device),
                                        ignore_index=ignore_index)}
    if "exist" in s_taps and batch.get("exist") is not None and batch["exist"].numel():
        terms["task/exist"] = exist_weight * F.binary_cross_entropy_with_logits(s_taps["exist"].float(), batch["exist"])
    return terms


def taps_info(model: SegModel) -> dict[str, TapInfo]:
    return dict(model.feature_info)


@torch.no_grad()
def tap_sizes(model: SegModel, in_channels: int, input_size: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """(h, w) of every 4-D tap for one (1, in_channels, *input_size) input, in eval mode (no RNG draws)."""
    was_training = model.training
    model.eval()
    try:
        taps = model.forward_taps(torch.zeros(1, in_channels, *input_size))
    finally:
        model.train(was_training)
    return {k: (int(v.shape[-2]), int(v.shape[-1])) for k, v in taps.items() if v.dim() == 4}


# ----------------------------------------------------------------------------- helpers

def teacher_input_size(cfg: TrainConfig) -> tuple[int, int] | None:
    """The teacher's own (h, w) when ``teacher.input_size`` names one other than the student's, else None."""
    t = cfg.teacher
    if t is None or not t.input_size:
        return None
    if len(t.input_size) != 2 or any(int(v) <= 0 for v in t.input_size):
        raise ValueError(f"teacher.input_size must be [height, width], got {list(t.input_size)}")
    size = (int(t.input_size[0]), int(t.input_size[1]))
    if size == tuple(int(v) for v in cfg.data.input_size):
        return None
    if cfg.label_teacher:
        raise ValueError("teacher.input_size: a label teacher reads the label map at the data's input size")
    return size


def pick_device(kind: str) -> torch.device:
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA GPU")
    return torch.device(kind)


def poly_lr(base: float, step: int, total: int, power: float, warmup: int) -> float:
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    return base * (1.0 - min(step, total) / max(total, 1)) ** power


def rng_state() -> dict[str, Any]:
    """Every RNG's state, in types that ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


# ----------------------------------------------------------------------------- the Trainer

class Trainer:
    """Build everything from a ``TrainConfig``; ``run()`` trains and returns the final metrics."""

    def __init__(self, cfg: TrainConfig, quiet: bool = False) -> None:
        self.cfg = cfg
        self.quiet = quiet
        self.device = pick_device(cfg.device)
        self.dist = init_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            torch.cuda.set_device(self.dist.local_rank)
            self.device = torch.device("cuda", self.dist.local_rank)
        if cfg.amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"amp must be none, bf16 or fp16, not {cfg.amp!r}")
        if cfg.amp == "fp16" and self.device.type != "cuda":
            raise ValueError("amp fp16 needs CUDA; use amp: bf16 on CPU")
        if cfg.steps <= 0:
            raise ValueError("steps must be positive")
        # a copy: the resolved config (weight: auto, filled-in feature sizes) is written back into it
        cfg = self.cfg = dataclasses.replace(cfg, methods=[dict(e) for e in cfg.methods])
        seed_everything(cfg.seed + self.dist.rank, cfg.deterministic)
        self.out = Path(cfg.out)

        from distill.data.dataset import build_dataset, collate  # imported late: heavy readers

        d = cfg.data
        self.teacher_size = teacher_input_size(cfg)
        self.train_set = build_dataset(d.kind, d.root, d.train_split, tuple(d.input_size), d.crop_top,
                                       train=True, teacher_size=self.teacher_size, **d.options)
        self.val_set = build_dataset(d.kind, d.root, d.val_split, tuple(d.input_size), d.crop_top,
                                     train=False, **d.options)
        self.spec: DataSpec = self.train_set.spec
        if len(self.val_set) == 0:
            raise ValueError(f"{d.root}: the {d.val_split!r} split is empty")
        # the frame geometry travels in checkpoints so export can write it into model.json
        self.geometry = self.val_set.sample(0).meta["geometry"]
        if len(self.train_set) < d.batch_size * self.dist.world:
            raise ValueError(f"{d.root}: {len(self.train_set)} training images, fewer than one global batch "
                             f"({d.batch_size} x {self.dist.world})")
        self.sampler = EpochSampler(len(self.train_set), d.batch_size, cfg.seed, self.dist.rank, self.dist.world)
        self.loader = DataLoader(EpochKeyed(self.train_set), batch_size=d.batch_size, sampler=self.sampler,
                                 num_workers=d.num_workers, collate_fn=collate, drop_last=True,
                                 persistent_workers=d.num_workers > 0, pin_memory=self.device.type == "cuda",
                                 generator=torch.Generator().manual_seed(cfg.seed))

        # models
        kwargs = dict(cfg.model.kwargs)
        kwargs.setdefault("num_classes", self.spec.num_classes)
        kwargs.setdefault("lane_slots", self.spec.lane_slots)
        if cfg.label_teacher:
            kwargs["in_channels"] = self.spec.num_classes
        self.model_kwargs = kwargs
        student = build_model(cfg.model.name, **kwargs)
        self.teacher: SegModel | None = None
        if cfg.teacher is not None and cfg.teacher.checkpoint:
            teacher, t_ckpt = model_from_checkpoint(cfg.teacher.checkpoint, map_location="cpu")
            t_spec = spec_from_checkpoint(t_ckpt)
            if t_spec.num_classes != self.spec.num_classes:
                raise ValueError(f"teacher {cfg.teacher.checkpoint} predicts {t_spec.num_classes} classes, "
                                 f"the data has {self.spec.num_classes}")
            teacher.requires_grad_(False)
            self.teacher = teacher.to(self.device).eval()
        t_info = taps_info(self.teacher) if self.teacher is not None else None
        methods = self.build_methods(student, t_info, kwargs.get("in_channels", 3))
        if any(m.uses_teacher for m in methods) and self.teacher is None:
            raise ValueError("a KD method needs a teacher: set teacher.checkpoint")
        self.distiller = Distiller(student, methods, self.spec, cfg).to(self.device)
        if cfg.channels_last:
            self.distiller.to(memory_format=torch.channels_last)
            if self.teacher is not None:
                self.teacher.to(memory_format=torch.channels_last)
        if self.dist.enabled and self.device.type == "cuda":
            self.distiller = nn.SyncBatchNorm.convert_sync_batchnorm(self.distiller)  # type: ignore[assignment]
        self.module: nn.Module = self.distiller
        if self.dist.enabled:
            self.module = nn.parallel.DistributedDataParallel(
                self.distiller, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(methods))
        self.forward_fn = torch.compile(self.module) if cfg.compile else self.module

        params = [p for p in self.distiller.parameters() if p.requires_grad]
        o = cfg.optim
        if o.name == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum,
                                                                    weight_decay=o.weight_decay)
        elif o.name == "adamw":
            self.optimizer = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
        else:
            raise ValueError(f"optim.name must be sgd or adamw, not {o.name!r}")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        self.validator = Validator(self.val_set, self.spec, self.device, cfg.data.max_val_images, self.dist)
        self.step = 0
        self.best: float | None = None
        self.history: list[dict[str, Any]] = []

    def build_methods(self, student: SegModel, t_info: dict[str, TapInfo] | None, in_channels: int) -> list[KDMethod]:
        """Build ``cfg.methods``; ``weight: auto`` entries start at the method's default weight and
        are rescaled by the start-up step; sizes a method needs (``needs_feature_size``) are measured
        and the batch size passed to those that scale their defaults by it (``needs_batch_size``)."""
        self.auto_shares: dict[int, float] = {}
        self.auto_resolved = False
        methods, sizes = [], None
        for i, entry in enumerate(self.cfg.methods):
            entry = dict(entry)
            if "name" not in entry:
                raise ValueError(f"method entry {entry} has no 'name'")
            name = entry.pop("name")
            share = entry.pop("share", None)
            if entry.get("weight") == "auto":
                entry.pop("weight")
                share = grad_share.DEFAULT_SHARE if share is None else share
                if isinstance(share, bool) or not isinstance(share, (int, float)) or not share > 0:
                    raise ValueError(f"KD method {name!r}: share must be a number > 0, got {share!r}")
                self.auto_shares[i] = float(share)
            elif share is not None:
                raise ValueError(f"KD method {name!r}: 'share' is only read with weight: auto")
            cls = METHODS.get(name)
            if getattr(cls, "needs_feature_size", False) and "feature_size" not in entry:
                sizes = sizes or tap_sizes(student, in_channels, tuple(self.cfg.data.input_size))
                tap = entry.get("s_tap", inspect.signature(cls).parameters["s_tap"].default)
                if tap in sizes:   # an unknown tap fails in the constructor, naming the valid ones
                    entry["feature_size"] = self.cfg.methods[i]["feature_size"] = list(sizes[tap])
            if getattr(cls, "needs_batch_size", False) and "batch_size" not in entry:
                entry["batch_size"] = self.cfg.data.batch_size
                entry["world_size"] = self.dist.world
            method = build_method(name, taps_info(student), t_info, self.spec, **entry)
            if i in self.auto_shares and not isinstance(getattr(method, "weight", None), float):
                raise ValueError(f"KD method {name!r} has no single float weight; weight: auto needs one")
            methods.append(method)
        names = [e["name"] for e in self.cfg.methods]
        self.method_labels = [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]
        return methods

    # ---------------------------------------------------------------- state

    @property
    def student(self) -> SegModel:
        return self.distiller.student

    def autocast(self):
        if self.cfg.amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def state(self, metrics: dict[str, float]) -> dict[str, Any]:
        d = self.cfg.data
        return {
            "model_name": self.cfg.model.name,
            "model_kwargs": self.model_kwargs,
            "spec": spec_to_dict(self.spec),
            "input_size": list(d.input_size),
            "crop_top": self.geometry.crop_top,
            "orig_size": [self.geometry.orig_h, self.geometry.orig_w],
            "label_teacher": self.cfg.label_teacher,
            "state_dict": self.student.state_dict(),
            "methods": self.distiller.methods.state_dict(),
            "methods_extra": [m.extra_state_dict() for m in self.distiller.methods],
            "method_weights": [getattr(m, "weight", None) for m in self.distiller.methods],
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "best": self.best,
            "rng": rng_state(),
            "metrics": metrics,
            "config": to_dict(self.cfg),
        }

    def save(self, name: str, metrics: dict[str, float]) -> Path | None:
        if not self.dist.main:
            return None
        return save_checkpoint(self.out / name, self.state(metrics))

    def maybe_resume(self) -> None:
        r = self.cfg.resume
        if r == "never":
            return
        path = self.out / "last.pt" if r == "auto" else Path(r)
        if r == "auto" and not path.is_file():
            return
        ckpt = load_checkpoint(path)
        if ckpt.get("model_name") != self.cfg.model.name:
            raise CheckpointError(f"{path} holds a {ckpt.get('model_name')!r} model, the config asks for "
                                  f"{self.cfg.model.name!r}; use a new out folder or resume: never")
        load_weights(self.student, ckpt["state_dict"], source=str(path))
        self.distiller.methods.load_state_dict(ckpt.get("methods", {}))
        for m, extra in zip(self.distiller.methods, ckpt.get("methods_extra", [])):
            m.load_extra_state_dict(extra)
        saved_weights = ckpt.get("method_weights", [])
        for i in self.auto_shares:   # weight: auto was resolved when the run started
            if i >= len(saved_weights) or saved_weights[i] is None:
                raise CheckpointError(f"{path} holds no resolved weight for method {self.method_labels[i]!r} "
                                      f"(weight: auto); use a new out folder or resume: never")
            self.set_method_weight(i, float(saved_weights[i]))
        self.auto_resolved = True
        if self.auto_shares and self.dist.main:
            save_config(self.cfg, self.out)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        self.best = ckpt.get("best")
        set_rng_state(ckpt["rng"])
        log_path = self.out / "log.jsonl"
        if log_path.is_file():  # drop log lines written after the checkpoint we resume from
            rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
            self.history = [r for r in rows if r.get("step", 0) <= self.step]
            if self.dist.main:
                log_path.write_text("".join(json.dumps(r) + "\n" for r in self.history))
        self.say(f"resumed from {path} at step {self.step}")

    # ---------------------------------------------------------------- loop

    def say(self, msg: str) -> None:
        if self.dist.main and not self.quiet:
            print(msg, file=sys.stderr, flush=True)

    def log(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.out / "log.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")

    def batches(self) -> Iterator[dict[str, torch.Tensor]]:
        per_epoch = self.sampler.batches_per_epoch()
        epoch, start = divmod(self.step, per_epoch)
        while True:
            self.sampler.set_epoch(epoch, start)   # its keys carry the epoch to the workers
            yield from self.loader
            epoch, start = epoch + 1, 0

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        cfg = self.cfg
        lr = poly_lr(cfg.optim.lr, self.step, cfg.steps, cfg.optim.poly_power, cfg.optim.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        for m in self.distiller.methods:
            m.set_progress(self.step, cfg.steps)
        batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        x = model_input(batch, self.spec.num_classes, self.spec.ignore_index, cfg.label_teacher)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t_taps = None
        if self.teacher is not None:
            with torch.no_grad(), self.autocast():
                t_taps = {k: v.detach() for k, v in self.teacher_taps(x, batch).items()}
        self.distiller.train()
        with self.autocast():
            terms, s_taps = self.forward_fn(x, batch, t_taps)
            loss = sum(terms.values())
        values = {k: float(v.detach()) for k, v in terms.items()}
        values["loss"] = float(loss.detach())
        if not math.isfinite(values["loss"]):
            bad = [k for k, v in values.items() if not math.isfinite(v)]
            raise NonFiniteLoss(f"non-finite loss at step {self.step} in {bad}; stopping. "
                                f"The last good checkpoint is kept in {self.out}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.distiller.parameters(), cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        s_det = {k: v.detach() for k, v in s_taps.items()}
        for m in self.distiller.methods:
            if m.active:
                values.update(m.after_student_step(s_det, t_taps or {}, batch))
        values["lr"] = lr
        return values

    def teacher_taps(self, x: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The teacher's taps on the batch: on ``teacher_image`` when the teacher reads its own input
        size, its ``logits`` then resized (bilinear) to the student's input size."""
        assert self.teacher is not None
        if self.teacher_size is None:
            return self.teacher.forward_taps(x)
        xt = batch["teacher_image"]
        if self.cfg.channels_last:
            xt = xt.contiguous(memory_format=torch.channels_last)
        taps = dict(self.teacher.forward_taps(xt))
        taps["logits"] = F.interpolate(taps["logits"], size=tuple(x.shape[-2:]), mode="bilinear",
                                       align_corners=False)
        return taps

    def validate(self) -> dict[str, float]:
        return self.validator.run(self.student, self.autocast, label_teacher=self.cfg.label_teacher)

    def run(self, stop_at: int | None = None) -> dict[str, float]:
        """Train to ``cfg.steps`` (or stop early at ``stop_at`` as an interrupt would)."""
        from tqdm import tqdm

        cfg = self.cfg
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out)
        self.maybe_resume()
        if self.step == 0:
            self.dry_run()
        metrics: dict[str, float] = {}
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {cfg.model.name}", unit="step",
                   disable=not self.dist.main or self.quiet, dynamic_ncols=True)
        data = self.batches()
        window: list[dict[str, float]] = []
        t0 = time.perf_counter()
        try:
            while self.step < cfg.steps:
                if stop_at is not None and self.step >= stop_at:
                    raise KeyboardInterrupt
                values = self.train_step(next(data))
                self.step += 1
                window.append(values)
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    avg = {k: float(np.mean([w[k] for w in window if k in w])) for k in window[-1]}
                    avg["sec_per_step"] = (time.perf_counter() - t0) / len(window)
                    self.log({"step": self.step, **avg})
                    bar.set_postfix(loss=f"{avg['loss']:.4f}")
                    window, t0 = [], time.perf_counter()
                last = self.step == cfg.steps
                if (cfg.val_every and self.step % cfg.val_every == 0) or last:
                    metrics = self.validate()
                    self.log({"step": self.step, **{f"val/{k}": v for k, v in metrics.items()}})
                    key = self.validator.key
                    if self.best is None or metrics[key] > self.best:
                        self.best = metrics[key]
                        self.save("best.pt", metrics)
                    self.say(f"step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
                if (cfg.ckpt_every and self.step % cfg.ckpt_every == 0) or last:
                    self.save("last.pt", metrics)
        except KeyboardInterrupt:
            bar.close()
            path = self.save("last.pt", metrics)
            self.say(f"interrupted at step {self.step}; checkpoint saved to {path}; "
                     f"run the same command again to resume")
            raise
        finally:
            bar.close()
            if self.dist.main and self.history:
                from distill.plots import plot_curves
                plot_curves(self.history, self.out / "curves.png")
        return metrics

    def startup_batch(self) -> dict[str, torch.Tensor]:
        """The first training batch of this rank, read without touching the loader or any RNG."""
        from distill.data.dataset import collate

        keyed = EpochKeyed(self.train_set)
        keys = list(EpochSampler(len(self.train_set), self.cfg.data.batch_size, self.cfg.seed, self.dist.rank,
                                 self.dist.world))[:self.cfg.data.batch_size]
        batch = collate([keyed[k] for k in keys])
        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}

    def dry_run(self) -> GradShares | None:
        """One training-mode step without the update, on the first training batch, with every method
        on (as late in the run as it goes): fail at start-up, not hours in. With KD methods it also
        measures each term's gradient share against the task loss, resolves ``weight: auto``, and
        prints and logs the report. Weights, buffers (memory banks, BN statistics), hidden method
        state (the GAN discriminator) and every RNG are as before afterwards."""
        batch = self.startup_batch()
        x = model_input(batch, self.spec.num_classes, self.spec.ignore_index, self.cfg.label_teacher)
        state = {k: v.clone() for k, v in self.distiller.state_dict().items()}
        extra = [copy.deepcopy(m.extra_state_dict()) for m in self.distiller.methods]
        rng = rng_state()
        generators = [(g, g.get_state()) for m in self.distiller.methods
                      if isinstance(g := getattr(m, "generator", None), torch.Generator)]
        for m in self.distiller.methods:       # as late in the run as it goes: every method and warm-up on
            m.set_progress(self.cfg.steps - 1, self.cfg.steps)
        shares = None
        try:
            with torch.set_grad_enabled(bool(self.distiller.methods)):
                try:
                    with self.autocast():
                        with torch.no_grad():
                            t_taps = self.teacher_taps(x, batch) if self.teacher is not None else None
                        self.distiller.train()
                        task, per_method, _ = self.distiller.terms_by_source(x, batch, t_taps)
                except Exception as exc:
                    raise RuntimeError(f"start-up check failed (one dry step on the first batch): "
                                       f"{type(exc).__name__}: {exc}") from exc
                terms = {k: v for d in (task, *per_method) for k, v in d.items()}
                bad = [k for k, v in terms.items() if not torch.isfinite(v).all()]
                if bad:
                    raise RuntimeError(f"start-up check: non-finite loss terms {bad} on the first batch")
                if self.distiller.methods:
                    shares = self.report_grad_shares(task, per_method)
        finally:
            self.distiller.load_state_dict(state)
            for m, e in zip(self.distiller.methods, extra):
                m.load_extra_state_dict(e)
            set_rng_state(rng)
            for g, g_state in generators:
                g.set_state(g_state)
        return shares

    def measure_grad_shares(self, task: dict[str, torch.Tensor], per_method: list[dict[str, torch.Tensor]]
                            ) -> GradShares:
        """Gradient norms on the student's parameters, averaged over DDP ranks as DDP averages gradients."""
        average = None
        if self.dist.enabled:
            def average(grads: torch.Tensor) -> torch.Tensor:
                dist.all_reduce(grads)
                return grads / self.dist.world
        return grad_share.measure(task, dict(zip(self.method_labels, per_method)), self.student.parameters(),
                                   average)

    def report_grad_shares(self, task: dict[str, torch.Tensor], per_method: list[dict[str, torch.Tensor]]
                           ) -> GradShares:
        """Measure, resolve ``weight: auto`` (recording it in the config), print and log the shares."""
        shares = self.measure_grad_shares(task, per_method)
        auto: dict[str, dict[str, float]] = {}
        for i, share in self.auto_shares.items() if not self.auto_resolved else ():
            label, method = self.method_labels[i], self.distiller.methods[i]
            before = method.weight
            self.set_method_weight(i, grad_share.auto_weight(label, before, shares.method_share(label), share))
            auto[label] = {"share": share, "measured_share": shares.method_share(label),
                           "weight_before": before, "weight": method.weight}
        self.auto_resolved = True   # once per run: a second report measures, it does not rescale
        weights = {label: float(getattr(m, "weight", float("nan")))
                   for label, m in zip(self.method_labels, self.distiller.methods)}
        self.say(shares.table({k: auto[k]["weight_before"] if k in auto else w for k, w in weights.items()}, auto))
        self.log({"step": 0, "startup": {**shares.to_log(), "weights": weights, "auto": auto}})
        if auto and self.dist.main:
            save_config(self.cfg, self.out)
        return shares

    def set_method_weight(self, index: int, weight: float) -> None:
        """Set a method's weight and record it in the resolved config (as a number, without ``share``)."""
        self.distiller.methods[index].weight = float(weight)
        self.cfg.methods[index]["weight"] = float(weight)
        self.cfg.methods[index].pop("share", None)

    def close(self) -> None:
        if self.dist.enabled and dist.is_initialized():
            dist.destroy_process_group()


def train(cfg: TrainConfig, quiet: bool = False) -> dict[str, float]:
    """Train (or distill) as ``cfg`` says and return the final validation metrics."""
    trainer = Trainer(cfg, quiet=quiet)
    try:
        return trainer.run()
    finally:
        trainer.close()
