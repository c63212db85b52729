"""LLAMAS lane reader (Unsupervised Labeled Lane Markers), 1276x717 frames.

Layout::

    <root>/labels/<split>/<drive>/<stem>.json
    <root>/grayscale_images/<split>/<drive>/<stem>_gray_rect.png   (image_type="gray")
    <root>/color_images/<split>/<drive>/<stem>_color_rect.png      (image_type="color")

A label holds ``lanes``: ``[{"lane_id": "l0", "markers": [{"pixel_start": {x, y},
"pixel_end": {x, y}, "world_start": {..}, "world_end": {..}}, ..]}, ..]``; ``pixel_start`` is the
marker's near (lower) end. As the dataset's own scripts do, lanes spanning under
``min_lane_height`` rows or with fewer than two markers are dropped and the remaining ids are
renumbered outward from the ego lane (``l0, l1, ..`` / ``r0, r1, ..``). Slots: l1 -> 1,
l0 -> 2, r0 -> 3, r1 -> 4. Each lane becomes a polyline through its markers, gaps between dashes
interpolated linearly. The benchmark evaluates rows 300..716 (kept in ``meta["eval_rows"]``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from distill.data.culane import (BaseReader, check_root, exist_from, identity_geometry,
                                 rasterise_lanes, read_image, scaled_width)
from distill.data.sample import DataError, DataSpec, Sample

LLAMAS_W = 1276
LLAMAS_H = 717
EVAL_ROWS = (300, 716)
LANE_SLOTS = {"l1": 1, "l0": 2, "r0": 3, "r1": 4}
_IMAGE_DIRS = {"gray": ("grayscale_images", "_gray_rect.png"), "color": ("color_images", "_color_rect.png")}


def _pixel(marker: dict, key: str, where: str) -> tuple[float, float]:
    try:
        p = marker[key]
        return float(p["x"]), float(p["y"])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{where}: marker without a numeric {key}.x/{key}.y") from None


def parse_llamas_label(path: Path, min_lane_height: int = 20) -> dict[str, list[tuple[float, float, float, float]]]:
    """Read a label file -> renumbered lane id -> marker segments ``(x0, y0, x1, y1)`` (near end first)."""
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    lanes = content.get("lanes") if isinstance(content, dict) else None
    if not isinstance(lanes, list):
        raise DataError(f"{path}: missing 'lanes' list")
    kept: dict[str, list[tuple[float, float, float, float]]] = {}
    for k, lane in enumerate(lanes):
        where = f"{path}: lane {k}"
        if not isinstance(lane, dict) or "lane_id" not in lane or not isinstance(lane.get("markers"), list):
            raise DataError(f"{where}: expected an object with 'lane_id' and a 'markers' list")
        lane_id = str(lane["lane_id"])
        if lane_id[:1] not in ("l", "r"):
            raise DataError(f"{where}: lane_id {lane_id!r} does not start with 'l' or 'r'")
        segs = [_pixel(m, "pixel_start", where) + _pixel(m, "pixel_end", where) for m in lane["markers"]]
        if len(segs) < 2:
            continue
        starts = [s[1] for s in segs]
        if max(starts) - min(starts) < min_lane_height:
            continue
        kept[lane_id] = segs
    renamed: dict[str, list] = {}
    for side in ("l", "r"):
        ids = sorted(i for i in kept if i[0] == side)
        for n, lane_id in enumerate(ids):
            renamed[f"{side}{n}"] = kept[lane_id]
    return renamed


def markers_to_polyline(segs: list[tuple[float, float, float, float]], row_step: int = 2) -> np.ndarray:
    """Marker segments -> (N, 2) points, one per ``row_step`` rows, bottom first.

    x is averaged where markers overlap a row and interpolated across the gaps between dashes.
    """
    rows: dict[int, list[float]] = {}
    for x0, y0, x1, y1 in segs:
        lo, hi = sorted((y0, y1))
        ys = np.arange(int(np.ceil(lo)), int(np.floor(hi)) + 1)
        if y1 == y0:
            xs = np.full(len(ys), (x0 + x1) / 2.0)
        else:
            xs = x0 + (ys - y0) * (x1 - x0) / (y1 - y0)
        for y, x in zip(ys.tolist(), xs.tolist()):
            rows.setdefault(y, []).append(x)
    if not rows:
        return np.zeros((0, 2), np.float32)
    ys = np.array(sorted(rows), np.float64)
    xs = np.array([np.mean(rows[int(y)]) for y in ys])
    top, bottom = int(ys[0]), int(ys[-1])
    out_y = np.arange(bottom, top - 1, -row_step, dtype=np.float64)
    if out_y[-1] != top:
        out_y = np.append(out_y, top)
    out_x = np.interp(out_y, ys, xs)
    return np.stack([out_x, out_y], 1).astype(np.float32)


class LLAMAS(BaseReader):
    """LLAMAS lanes; ``line_width`` is in pixels at 1276 px image width."""

    def __init__(self, root: str | Path, split: str = "train", *, image_type: str = "gray",
                 line_width: float = 16.0, min_lane_height: int = 20, row_step: int = 2,
                 skip_bad: bool = False) -> None:
        super().__init__(skip_bad)
        if image_type not in _IMAGE_DIRS:
            raise ValueError(f"image_type must be one of {sorted(_IMAGE_DIRS)}, got {image_type!r}")
        self.root = check_root(root)
        self.split = split
        self.image_dir, self.image_suffix = _IMAGE_DIRS[image_type]
        self.line_width = line_width
        self.min_lane_height = min_lane_height
        self.row_step = row_step
        self.slots = 4
        self.spec = DataSpec.lanes(4)
        label_dir = self.root / "labels" / split
        if not label_dir.is_dir():
            raise DataError(f"{label_dir}: label folder not found")
        self._labels: list[Path] = []
        for lab in sorted(label_dir.glob("*/*.json")):
            rel = lab.relative_to(self.root / "labels")
            name = str(Path(self.image_dir) / rel.parent / (lab.stem + self.image_suffix))
            if not (self.root / name).is_file():
                self._note_bad(str(lab), DataError(f"{lab}: its image {self.root / name} not found"))
                continue
            self.names.append(name)
            self._labels.append(lab)
        if not self.names:
            raise DataError(f"{label_dir}: no labelled images")

    def _load(self, i: int) -> Sample:
        name, lab = self.names[i], self._labels[i]
        image = read_image(self.root / name)   # grayscale PNGs come back as 3 identical channels
        h, w = image.shape[:2]
        lanes: dict[int, np.ndarray] = {}
        for lane_id, segs in parse_llamas_label(lab, self.min_lane_height).items():
            if lane_id in LANE_SLOTS:
                pts = markers_to_polyline(segs, self.row_step)
                if len(pts):
                    lanes[LANE_SLOTS[lane_id]] = pts
        mask = rasterise_lanes(lanes, h, w, scaled_width(self.line_width, w, LLAMAS_W))
        meta = {"name": name, "geometry": identity_geometry(image), "tags": [], "dataset": "llamas",
                "label_path": str(lab), "eval_rows": EVAL_ROWS}
        return Sample(image, mask, lanes, exist_from(lanes, 4), meta)
