"""TuSimple lane reader: JSON-lines label files, 1280x720 frames.

Each label line: ``{"raw_file": "clips/.../20.jpg", "lanes": [[x per h_sample], ...],
"h_samples": [y, ...]}`` with ``x = -2`` where the lane is absent. Lanes are assigned to slots by
position (the lane's x at its lowest valid point relative to the image centre) and rasterised.
The per-sample ``h_samples`` and raw ``lanes`` are kept in meta for TuSimple's accuracy metric.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from distill.data.reader import (BaseReader, assign_slots_by_position, check_root, exist_from,
                                 identity_geometry, rasterise_lanes, read_image, scaled_width)
from distill.data.sample import DataError, DataSpec, Sample

TUSIMPLE_W = 1280
TUSIMPLE_H = 720

# The usual partition: 0313 + 0601 train, 0531 val, test_label.json test.
TUSIMPLE_SPLITS = {
    "train": ("label_data_0313.json", "label_data_0601.json"),
    "val": ("label_data_0531.json",),
    "trainval": ("label_data_0313.json", "label_data_0531.json", "label_data_0601.json"),
    "test": ("test_label.json",),
}


def parse_tusimple_line(line: str, where: str) -> dict:
    """Validate one JSON label line; ``where`` (``file:line``) goes into every error."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object")
    for key in ("raw_file", "lanes", "h_samples"):
        if key not in rec:
            raise DataError(f"{where}: missing key {key!r}")
    hs = rec["h_samples"]
    if not isinstance(hs, list) or not all(isinstance(v, (int, float)) for v in hs):
        raise DataError(f"{where}: h_samples must be a list of numbers")
    if not isinstance(rec["lanes"], list):
        raise DataError(f"{where}: lanes must be a list")
    for k, lane in enumerate(rec["lanes"]):
        if not isinstance(lane, list) or len(lane) != len(hs):
            raise DataError(f"{where}: lane {k} has {len(lane) if isinstance(lane, list) else '?'} "
                            f"values for {len(hs)} h_samples")
        if not all(isinstance(v, (int, float)) for v in lane):
            raise DataError(f"{where}: lane {k} holds a non-number")
    return rec


def tusimple_polylines(lanes: Sequence[Sequence[float]], h_samples: Sequence[float]) -> list[np.ndarray]:
    """Valid (x >= 0) points of each lane, bottom first; lanes with fewer than 2 points dropped."""
    ys = np.asarray(h_samples, np.float32)
    out = []
    for lane in lanes:
        xs = np.asarray(lane, np.float32)
        ok = xs >= 0
        if ok.sum() < 2:
            continue
        pts = np.stack([xs[ok], ys[ok]], 1)
        out.append(pts[np.argsort(-pts[:, 1], kind="stable")])
    return out


class TuSimple(BaseReader):
    """TuSimple lane dataset.

    ``split``: a name in ``TUSIMPLE_SPLITS`` or a list of label JSON files (relative to ``root``
    or absolute), combined in order. ``line_width`` is in pixels at 1280 px image width.
    """

    def __init__(self, root: str | Path, split: str | Sequence[str] = "train", *, line_width: float = 16.0,
                 slots: int = 4, skip_bad: bool = False) -> None:
        super().__init__(skip_bad)
        self.root = check_root(root)
        files = TUSIMPLE_SPLITS.get(split, (split,)) if isinstance(split, str) else tuple(split)
        self.label_files = [Path(f) if Path(f).is_absolute() else self.root / f for f in files]
        self.line_width = line_width
        self.slots = slots
        self.spec = DataSpec.lanes(slots)
        self._records: list[dict] = []
        for f in self.label_files:
            self._read_labels(f)
        if not self.names:
            raise DataError(f"{', '.join(map(str, self.label_files))}: no samples")

    def _read_labels(self, path: Path) -> None:
        if not path.is_file():
            raise DataError(f"{path}: label file not found")
        with open(path, "r") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    rec = parse_tusimple_line(line, where)
                    name = str(rec["raw_file"]).lstrip("/")
                    if not (self.root / name).is_file():
                        raise DataError(f"{where}: image {self.root / name} not found")
                except DataError as exc:
                    self._note_bad(where, exc)
                    continue
                self.names.append(name)
                self._records.append({"lanes": rec["lanes"], "h_samples": rec["h_samples"], "where": where})

    def _load(self, i: int) -> Sample:
        name, rec = self.names[i], self._records[i]
        image = read_image(self.root / name)
        h, w = image.shape[:2]
        lanes = assign_slots_by_position(tusimple_polylines(rec["lanes"], rec["h_samples"]), w, self.slots)
        mask = rasterise_lanes(lanes, h, w, scaled_width(self.line_width, w, TUSIMPLE_W))
        meta = {"name": name, "geometry": identity_geometry(image), "tags": [], "dataset": "tusimple",
                "h_samples": list(rec["h_samples"]), "raw_lanes": [list(l) for l in rec["lanes"]],
                "label_line": rec["where"]}
        return Sample(image, mask, lanes, exist_from(lanes, self.slots), meta)
