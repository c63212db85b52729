"""Cityscapes-format semantic segmentation reader (19 train classes, 255 ignore).

Layout::

    <root>/leftImg8bit/<split>/<city>/<x>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<x>_gtFine_labelIds.png

label ids map to train ids by the Cityscapes table (ids not in the 19 classes -> 255).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from distill.data.reader import BaseReader, check_root, check_same_size, identity_geometry, read_image, read_label
from distill.data.sample import IGNORE_INDEX, DataError, DataSpec, Sample

# (label id, train id, name) for the 19 evaluated classes; every other id is ignored.
CITYSCAPES_TRAIN: tuple[tuple[int, int, str], ...] = (
    (7, 0, "road"), (8, 1, "sidewalk"), (11, 2, "building"), (12, 3, "wall"), (13, 4, "fence"),
    (17, 5, "pole"), (19, 6, "traffic light"), (20, 7, "traffic sign"), (21, 8, "vegetation"),
    (22, 9, "terrain"), (23, 10, "sky"), (24, 11, "person"), (25, 12, "rider"), (26, 13, "car"),
    (27, 14, "truck"), (28, 15, "bus"), (31, 16, "train"), (32, 17, "motorcycle"), (33, 18, "bicycle"),
)
CITYSCAPES_CLASS_NAMES: tuple[str, ...] = tuple(n for _, _, n in CITYSCAPES_TRAIN)


def _lut() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    for label_id, train_id, _ in CITYSCAPES_TRAIN:
        lut[label_id] = train_id
    return lut


LABELID_TO_TRAINID = _lut()


def labelid_to_trainid(mask: np.ndarray) -> np.ndarray:
    """Map a Cityscapes labelIds mask to train ids (0..18, 255 ignore)."""
    return LABELID_TO_TRAINID[np.asarray(mask, np.uint8)]


class Cityscapes(BaseReader):
    """Cityscapes-format dataset; ``split`` is a folder under ``leftImg8bit`` (train/val/test)."""

    IMAGE_SUFFIX = "_leftImg8bit.png"
    LABEL_SUFFIX = "_gtFine_labelIds.png"

    def __init__(self, root: str | Path, split: str = "train", *, require_labels: bool = True,
                 skip_bad: bool = False) -> None:
        super().__init__(skip_bad)
        self.root = check_root(root)
        self.split = split
        self.require_labels = require_labels
        self.spec = DataSpec("marking", CITYSCAPES_CLASS_NAMES, 0)
        img_dir = self.root / "leftImg8bit" / split
        if not img_dir.is_dir():
            raise DataError(f"{img_dir}: image folder not found")
        self._labels: list[Path | None] = []
        for img in sorted(img_dir.glob(f"*/*{self.IMAGE_SUFFIX}")):
            rel = img.relative_to(self.root / "leftImg8bit")
            lab = self.root / "gtFine" / rel.parent / (img.name[:-len(self.IMAGE_SUFFIX)] + self.LABEL_SUFFIX)
            if not lab.is_file():
                if require_labels:
                    self._note_bad(str(img), DataError(f"{lab}: label for {img} not found"))
                    continue
                lab = None
            self.names.append(str(img.relative_to(self.root)))
            self._labels.append(lab)
        if not self.names:
            raise DataError(f"{img_dir}: no '*{self.IMAGE_SUFFIX}' images")

    def _load(self, i: int) -> Sample:
        name, lab = self.names[i], self._labels[i]
        image = read_image(self.root / name)
        mask = None
        if lab is not None:
            raw = read_label(lab)
            check_same_size(image, raw, self.root / name, lab)
            mask = labelid_to_trainid(raw)
        meta = {"name": name, "geometry": identity_geometry(image), "tags": [], "dataset": "cityscapes",
                "label_path": str(lab) if lab else None}
        return Sample(image, mask, {}, np.zeros(0, np.float32), meta)
