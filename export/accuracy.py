"""Task accuracy of an exported model, measured through the runtime that ships it.

Frames go through ``runtime.preprocess``, the backend, and ``runtime.postprocess`` exactly as on
the car; lanes are scored against the dataset's polylines with the CULane protocol, marking maps
with a confusion matrix. Comparing FP32 with FP16/INT8 this way gives the F1 / mIoU change that
quantisation costs, not just an output-tensor difference.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from distill.data.dataset import build_reader
from distill.eval.culane import culane_counts, lane_width_for, prf
from distill.eval.miou import ConfusionMatrix
from runtime.pipeline import load_model


def task_scores(model: str | Path, root: str | Path, split: str = "test", kind: str = "culane",
                max_images: int = 0, **reader_options: Any) -> dict[str, float]:
    """F1 / precision / recall (lanes) or mIoU (markings) of ``model`` on a dataset split."""
    loaded = load_model(model)
    reader = build_reader(kind, root, split, **reader_options)
    n = len(reader) if not max_images else min(max_images, len(reader))
    counts = np.zeros(3, np.int64)
    conf = None
    try:
        for i in range(n):
            raw = reader[i]
            h, w = raw.image.shape[:2]
            geometry = loaded.pre.geometry(h, w)
            outputs = loaded.backend.infer({loaded.pre.input_name: loaded.pre(raw.image)})
            result = loaded.decoder(outputs, geometry)
            if loaded.meta.task == "lanes":
                gt = [p for _, p in sorted(raw.lanes.items())]
                counts += culane_counts(list(result.lanes.values()), gt, width=lane_width_for(w),
                                        img_size=(h, w))[0.5]
            else:
                if conf is None:
                    conf = ConfusionMatrix(loaded.meta.num_classes)
                pred = np.zeros((h, w), np.uint8)      # cropped-away rows count as background
                pred[geometry.crop_top:] = cv2.resize(result.classes, (w, h - geometry.crop_top),
                                                      interpolation=cv2.INTER_NEAREST)
                conf.update(pred, raw.mask)
    finally:
        loaded.close()
    if conf is not None:
        return {"miou": float(conf.miou()), "images": n}
    scores = prf(*(int(v) for v in counts))
    return {"f1": scores["f1"], "precision": scores["precision"], "recall": scores["recall"], "images": n}
