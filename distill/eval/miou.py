"""Confusion matrix and IoU for semantic segmentation (road markings), ignore label 255.

Convention: IoU_c = TP / (TP + FP + FN); a class whose union is 0 (absent from both GT and
prediction over everything seen) has IoU NaN and is left out of the mean (``nanmean``), the usual
convention of mmseg / Cityscapes-style evaluators.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

IGNORE_INDEX = 255


class ConfusionMatrix:
    """Accumulates a (C, C) matrix: rows = ground truth, columns = prediction."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.mat = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one (or a batch of) prediction/GT class maps of the same shape."""
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
        valid = gt != self.ignore_index
        g = gt[valid].astype(np.int64)
        p = pred[valid].astype(np.int64)
        c = self.num_classes
        bad = (g < 0) | (g >= c)
        if bad.any():
            raise ValueError(f"ground truth holds class {int(g[bad][0])} outside 0..{c - 1} "
                             f"(and not the ignore label {self.ignore_index})")
        badp = (p < 0) | (p >= c)
        if badp.any():
            raise ValueError(f"prediction holds class {int(p[badp][0])} outside 0..{c - 1}")
        self.mat += np.bincount(g * c + p, minlength=c * c).reshape(c, c)

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN where the class has no GT and no prediction."""
        tp = np.diag(self.mat).astype(np.float64)
        union = self.mat.sum(0) + self.mat.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def miou(self) -> float:
        """Mean IoU over classes with a non-empty union (nanmean); NaN if nothing was seen."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan")

    def pixel_accuracy(self) -> float:
        tot = self.mat.sum()
        return float(np.trace(self.mat) / tot) if tot else float("nan")

    def table(self, class_names: Sequence[str] | None = None) -> str:
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names for {self.num_classes} classes")
        iou = self.iou()
        w = max(8, max(len(n) for n in names) + 2)
        lines = [f"{'class':<{w}}{'IoU':>8}", "-" * (w + 8)]
        for n, v in zip(names, iou):
            lines.append(f"{n:<{w}}{'n/a' if np.isnan(v) else f'{100 * v:.2f}':>8}")
        lines.append(f"{'mIoU':<{w}}{100 * self.miou():>8.2f}")
        return "\n".join(lines)


def evaluate_miou_dirs(gt_dir: str | Path, pred_dir: str | Path, num_classes: int,
                       ignore_index: int = IGNORE_INDEX, class_names: Sequence[str] | None = None,
                       per_image: bool = False) -> dict:
    """mIoU of PNG class maps: every ``*.png`` under ``gt_dir`` against the same path in ``pred_dir``.

    A missing or differently sized prediction is an error naming the file.
    """
    import cv2

    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"ground-truth folder not found: {gt_dir}")
    files = sorted(gt_dir.rglob("*.png"))
    if not files:
        raise FileNotFoundError(f"no .png class maps under {gt_dir}")
    cm = ConfusionMatrix(num_classes, ignore_index)
    rows = []
    for f in files:
        rel = f.relative_to(gt_dir)
        pf = pred_dir / rel
        if not pf.is_file():
            raise FileNotFoundError(f"no prediction {pf} for ground truth {f}")
        gt = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        pred = cv2.imread(str(pf), cv2.IMREAD_UNCHANGED)
        for arr, path in ((gt, f), (pred, pf)):
            if arr is None or arr.ndim != 2:
                raise ValueError(f"{path}: not a single-channel class-map PNG")
        if gt.shape != pred.shape:
            raise ValueError(f"{pf}: size {pred.shape} differs from ground truth {f} {gt.shape}")
        try:
            if per_image:
                one = ConfusionMatrix(num_classes, ignore_index)
                one.update(pred, gt)
                cm.mat += one.mat
                rows.append({"name": str(rel), "miou": one.miou()})
            else:
                cm.update(pred, gt)
        except ValueError as exc:
            raise ValueError(f"{pf}: {exc}") from None
    names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    res = {"images": len(files), "miou": cm.miou(), "pixel_accuracy": cm.pixel_accuracy(),
           "iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, cm.iou())},
           "convention": "nanmean over classes with a non-empty union"}
    if per_image:
        res["per_image"] = rows
    return res
