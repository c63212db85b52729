"""Validation during training: CULane F1 for lane slots, mIoU for marking classes.

Lane models: probabilities -> lanes in original-frame coordinates with ``runtime.postprocess``
(the same code the runtime ships), scored against the reader's original polylines with the
CULane protocol (30 px lanes scaled to the frame width, IoU > 0.5). Marking models: a confusion
matrix at the model input size. Under DDP every rank scores a shard and the counts are summed.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from distill.data.sample import DataSpec
from distill.eval.culane import culane_counts, lane_width_for, prf
from distill.eval.miou import ConfusionMatrix
from distill.inputs import model_input
from runtime.postprocess import LaneDecodeConfig, decode_lanes


class _ValItems(Dataset):
    """Transformed validation frames plus their ORIGINAL lane polylines and geometry (one decode)."""

    def __init__(self, dataset: Any, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        raw = self.dataset.reader[self.indices[i]]
        gt_lanes = [np.array(p, np.float64) for _, p in sorted(raw.lanes.items())]
        s = self.dataset.transform(raw, np.random.default_rng(0))   # eval transforms draw nothing
        return {"image": torch.from_numpy(s.image), "mask": torch.from_numpy(s.mask.astype(np.int64)),
                "gt_lanes": gt_lanes, "geometry": s.meta["geometry"]}


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"image": torch.stack([it["image"] for it in items]),
            "mask": torch.stack([it["mask"] for it in items]),
            "gt_lanes": [it["gt_lanes"] for it in items],
            "geometry": [it["geometry"] for it in items]}


class Validator:
    """Scores a model on the validation split; ``key`` names the metric that picks ``best.pt``."""

    def __init__(self, dataset: Any, spec: DataSpec, device: torch.device, max_images: int = 0,
                 dist_info: Any = None, batch_size: int = 8, num_workers: int = 0,
                 decode: LaneDecodeConfig | None = None) -> None:
        self.dataset, self.spec, self.device = dataset, spec, device
        n = len(dataset) if not max_images else min(max_images, len(dataset))
        rank, world = (dist_info.rank, dist_info.world) if dist_info is not None else (0, 1)
        self.world = world
        self.indices = list(range(n))[rank::world]
        self.batch_size, self.num_workers = batch_size, num_workers
        self.decode = decode or LaneDecodeConfig(row_step=10, num_rows=None)
        self.key = "f1" if spec.task == "lanes" else "miou"

    @torch.no_grad()
    def run(self, model: torch.nn.Module, autocast: Callable[[], Any] = contextlib.nullcontext,
            label_teacher: bool = False) -> dict[str, float]:
        was_training = model.training
        model.eval()
        # its own generator: a loader draws its workers' base seed from the global RNG otherwise,
        # and validating would change the training run that follows
        loader = DataLoader(_ValItems(self.dataset, self.indices), batch_size=self.batch_size,
                            num_workers=self.num_workers, collate_fn=_collate, generator=torch.Generator())
        counts = np.zeros(3, np.int64)
        exist_hits = np.zeros(2, np.int64)
        conf = ConfusionMatrix(self.spec.num_classes, self.spec.ignore_index)
        for batch in loader:
            x = model_input(batch, self.spec.num_classes, self.spec.ignore_index, label_teacher, self.device)
            with autocast():
                taps = model.forward_taps(x)
            logits = taps["logits"].float()
            pred = logits.argmax(1)
            conf.update(pred.cpu().numpy(), batch["mask"].numpy())
            if self.spec.task != "lanes":
                continue
            probs = torch.softmax(logits, 1).cpu().numpy()
            exist = torch.sigmoid(taps["exist"].float()).cpu().numpy() if "exist" in taps else None
            for b in range(len(probs)):
                geometry = batch["geometry"][b]
                lanes = decode_lanes(probs[b], exist[b] if exist is not None else None, geometry, self.decode)
                tp, fp, fn = culane_counts(list(lanes.values()), batch["gt_lanes"][b],
                                           width=lane_width_for(geometry.orig_w),
                                           img_size=(geometry.orig_h, geometry.orig_w))[0.5]
                counts += (tp, fp, fn)
                if exist is not None:
                    gt_exist = batch_exist_from_mask(batch["mask"][b].numpy(), self.spec.lane_slots)
                    exist_hits += ((exist[b] > 0.5) == gt_exist).sum(), len(gt_exist)
        if self.world > 1 and dist.is_initialized():
            counts = _all_sum(counts, self.device)
            exist_hits = _all_sum(exist_hits, self.device)
            conf.mat = _all_sum(conf.mat, self.device)
        model.train(was_training)
        out: dict[str, float] = {"miou": float(conf.miou())}
        if self.spec.task == "lanes":
            scores = prf(*(int(v) for v in counts))
            out = {k: scores[k] for k in ("f1", "precision", "recall")} | out
            if exist_hits[1]:
                out["exist_acc"] = float(exist_hits[0] / exist_hits[1])
        return out


def batch_exist_from_mask(mask: np.ndarray, slots: int) -> np.ndarray:
    present = np.bincount(mask[mask != 255].ravel(), minlength=slots + 1)[1:slots + 1]
    return present > 0


def _all_sum(arr: np.ndarray, device: torch.device) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return t.cpu().numpy().astype(arr.dtype)


def evaluate_checkpoint(checkpoint: str, kind: str, root: str, split: str, max_images: int = 0,
                        batch_size: int = 8, device: str = "cpu", **options: Any) -> dict[str, float]:
    """Score a checkpoint on a split at the input size and crop it was trained with."""
    from distill.checkpoint import model_from_checkpoint, spec_from_checkpoint
    from distill.data.dataset import build_dataset

    model, ckpt = model_from_checkpoint(checkpoint, map_location=device)
    dataset = build_dataset(kind, root, split, tuple(ckpt["input_size"]), ckpt.get("crop_top", 0),
                            train=False, **options)
    spec = spec_from_checkpoint(ckpt)
    if spec.num_classes != dataset.spec.num_classes:
        raise ValueError(f"{checkpoint} predicts {spec.num_classes} classes; {root} has {dataset.spec.num_classes}")
    validator = Validator(dataset, dataset.spec, torch.device(device), max_images, batch_size=batch_size)
    return validator.run(model.to(device), label_teacher=bool(ckpt.get("label_teacher")))
