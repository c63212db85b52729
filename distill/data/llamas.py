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

Lanes used: only l1, l0, r0 and r1, in the masks and in the evaluator's ground truth, because
those are the four the LLAMAS benchmarks define and score. For the evaluator every other kept
lane is still built (:func:`llamas_label_rows`) and one that the dataset's spline creator cannot
build is a DataError naming the file and lane id, since the dataset's script builds all lanes and
stops on such a label.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from distill.data.reader import (BaseReader, check_root, exist_from, identity_geometry,
                                 rasterise_lanes, read_image, scaled_width)
from distill.data.sample import DataError, DataSpec, Sample

LLAMAS_W = 1276
LLAMAS_H = 717
EVAL_ROWS = (300, 716)
LANE_SLOTS = {"l1": 1, "l0": 2, "r0": 3, "r1": 4}
_IMAGE_DIRS = {"gray": ("grayscale_images", "_gray_rect.png"), "color": ("color_images", "_color_rect.png")}


class Marker(NamedTuple):
    """One marker of a cleaned label: pixel start (near end) and end, world z of its start and end."""
    x0: int
    y0: int
    x1: int
    y1: int
    z0: float | None
    z1: float | None = None


def _pixel(marker: dict, key: str, where: str) -> tuple[int, int]:
    # the dataset's read_json casts pixel coordinates with int(): truncation, not rounding
    try:
        p = marker[key]
        return int(float(p["x"])), int(float(p["y"]))
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{where}: marker without a numeric {key}.x/{key}.y") from None


def _world_z(marker: dict, key: str = "world_start") -> float | None:
    try:
        return float(marker[key]["z"])
    except (KeyError, TypeError, ValueError):
        return None


class CleanLane(NamedTuple):
    """A lane the dataset's cleaning keeps: its new id, its id in the file, its markers."""
    lane_id: str
    file_id: str
    markers: list[Marker]


def clean_llamas_label(path: Path, min_lane_height: int = 20) -> tuple[list[CleanLane], int]:
    """Read a label file and clean it as the dataset's ``read_json`` does.

    Returns the kept lanes in file order, renumbered outward from the ego lane per side, and the
    number of lanes with an empty marker list: those are dropped like the other lanes of fewer
    than two markers (the dataset's size filter stops on them with ``min()`` of nothing).
    """
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    lanes = content.get("lanes") if isinstance(content, dict) else None
    if not isinstance(lanes, list):
        raise DataError(f"{path}: missing 'lanes' list")
    kept: list[tuple[str, list[Marker]]] = []
    empty = 0
    for k, lane in enumerate(lanes):
        where = f"{path}: lane {k}"
        if not isinstance(lane, dict) or "lane_id" not in lane or not isinstance(lane.get("markers"), list):
            raise DataError(f"{where}: expected an object with 'lane_id' and a 'markers' list")
        lane_id = str(lane["lane_id"])
        if lane_id[:1] not in ("l", "r"):
            raise DataError(f"{where}: lane_id {lane_id!r} does not start with 'l' or 'r'")
        markers = [Marker(*_pixel(m, "pixel_start", where), *_pixel(m, "pixel_end", where), _world_z(m),
                          _world_z(m, "world_end"))
                   for m in lane["markers"]]
        empty += not markers
        if len(markers) < 2:
            continue
        starts = [m.y0 for m in markers]
        if max(starts) - min(starts) < min_lane_height:
            continue
        kept.append((lane_id, markers))
    # The dataset's renaming: ids sorted (duplicates included), numbered per side from 0; an id
    # that occurs twice ends up with its later number, and of two lanes with one new id the later
    # one in the file wins, as the original's dict updates do.
    new_id, count = {}, {"l": 0, "r": 0}
    for lane_id in sorted(i for i, _ in kept):
        new_id[lane_id] = f"{lane_id[0]}{count[lane_id[0]]}"
        count[lane_id[0]] += 1
    return [CleanLane(new_id[lane_id], lane_id, markers) for lane_id, markers in kept], empty


def read_llamas_lanes(path: Path, min_lane_height: int = 20) -> dict[str, list[Marker]]:
    """Read and clean a label file (:func:`clean_llamas_label`) -> renumbered lane id -> markers."""
    return {lane.lane_id: lane.markers for lane in clean_llamas_label(path, min_lane_height)[0]}


def parse_llamas_label(path: Path, min_lane_height: int = 20) -> dict[str, list[tuple[float, float, float, float]]]:
    """Read a label file -> renumbered lane id -> marker segments ``(x0, y0, x1, y1)`` (near end first)."""
    return {lane_id: [(m.x0, m.y0, m.x1, m.y1) for m in markers]
            for lane_id, markers in read_llamas_lanes(path, min_lane_height).items()}


def _round(v: float) -> int:
    return int(round(v))        # Python's round (half to even), as the dataset's ``ir`` helper


def _extend_to_bottom(markers: list[Marker], where: str) -> list[Marker]:
    """Prepend a marker from the nearest real marker's start down to the image's bottom row.

    The nearest marker is the one with the smallest world z among those that are neither
    horizontal nor vertical in the image; it is continued in a straight line to row 716, or to
    the left (x = 0) or right (x = 1276) edge if it leaves the image sideways first. A nearest
    marker behind the camera (z < 0) leaves the lane as it is.
    """
    usable = [m for m in markers if m.y0 != m.y1 and m.x0 != m.x1]
    if not usable:
        raise DataError(f"{where}: no marker that is neither horizontal nor vertical to extend the lane from")
    if any(m.z0 is None for m in usable):
        raise DataError(f"{where}: marker without a numeric world_start.z")
    near = min(usable, key=lambda m: m.z0)              # first one on ties
    if near.z0 < 0:
        return markers
    if near.z1 is None:
        raise DataError(f"{where}: nearest marker without a numeric world_end.z")
    if near.z1 == near.z0:                              # the original divides by their difference
        raise DataError(f"{where}: nearest marker has world_start.z == world_end.z ({near.z0:g}), "
                        "so its world gradient is undefined")
    dx_dy = (near.x1 - near.x0) / (near.y1 - near.y0)
    dy_dx = (near.y1 - near.y0) / (near.x1 - near.x0)
    bottom_x = near.x0 + (LLAMAS_H - 1 - near.y0) * dx_dy
    if bottom_x < 0:
        x, y = 0.0, near.y0 - near.x0 * dy_dx
    elif bottom_x > LLAMAS_W:
        x, y = float(LLAMAS_W), near.y0 + (LLAMAS_W - near.x0) * dy_dx
    else:
        x, y = bottom_x, float(LLAMAS_H - 1)
    return [Marker(_round(x), _round(y), near.x0, near.y0, 1.0, near.z0), *markers]


def lane_row_xs(markers: list[Marker], where: str = "lane") -> list[float]:
    """One lane's markers -> 717 x values, one per image row, -1 where the lane is absent.

    Reproduces ``spline_creator.get_horizontal_values_for_four_lanes`` (the ground truth of the
    LLAMAS lane benchmarks): the lane is extended to the bottom of the image, every marker
    taller than 2 rows contributes its rounded pixel positions row by row (its start twice, as the
    original does), rows are averaged, and rows between the first and last covered row are filled
    by linear interpolation. Rows below -717 or from 717 on are errors; negative rows count from
    the bottom, as Python list indexing does in the original.
    """
    buckets: list[list[float]] = [[] for _ in range(LLAMAS_H)]

    def put(row: int, x: float) -> None:
        if not -LLAMAS_H <= row < LLAMAS_H:
            raise DataError(f"{where}: marker row {row} outside the {LLAMAS_H}-row image")
        buckets[row].append(x)

    for m in _extend_to_bottom(markers, where):
        put(m.y0, m.x0)
        height = m.y0 - m.y1
        if height > 2:                                  # one point per row (the original's step is 1.0)
            slope = (m.x1 - m.x0) / height
            for i in range(height + 1):
                put(m.y0 - i, _round(m.x0 + slope * i))
    xs = [sum(b) / float(len(b)) if b else -1 for b in buckets]
    known = [y for y, x in enumerate(xs) if x != -1]
    for a, b in zip(known[:-1], known[1:]):            # fill the gaps, one row after the other
        for y in range(a + 1, b):
            xs[y] = xs[y - 1] + (xs[b] - xs[y - 1]) / (b - y + 1)
    return xs


class LabelRows(NamedTuple):
    """Per-row ground truth of one label, and what the dataset's spline creator could not build."""
    rows: list[list[float]]         # l1, l0, r0, r1: 717 x values each, -1 = absent
    bad: list[tuple[str, str]]      # (lane id, DataError message) per lane the creator rejects
    empty_lanes: int                # lanes with an empty marker list (dropped)


def llamas_label_rows(path: Path, min_lane_height: int = 20) -> LabelRows:
    """Build every kept lane of a label as ``SplineCreator.create_all_points`` does; keep four.

    Only l1, l0, r0 and r1 are ground truth (the four lanes the LLAMAS benchmarks score). The
    others (l2, r3, ..) are built too, only to be checked: the dataset's script builds every lane
    of the label and stops at the first one it cannot build, whatever its id. A lane id that two
    lanes share holds the later one, as the original's dict does.
    """
    path = Path(path)
    lanes, empty = clean_llamas_label(path, min_lane_height)
    built: dict[str, list[float]] = {}
    bad: list[tuple[str, str]] = []
    for lane in lanes:
        renamed = "" if lane.file_id == lane.lane_id else f" (id {lane.file_id!r} in the file)"
        try:
            built[lane.lane_id] = lane_row_xs(lane.markers, f"{path}: lane {lane.lane_id}{renamed}")
        except DataError as exc:
            bad.append((lane.lane_id, str(exc)))
    rows = [built.get(i, [-1] * LLAMAS_H) for i in LANE_SLOTS]
    return LabelRows(rows, bad, empty)


def llamas_row_xs(path: Path, min_lane_height: int = 20) -> list[list[float]]:
    """Per-row x values of l1, l0, r0 and r1 (717 each, -1 = absent; an absent lane is all -1).

    Raises the DataError of the first lane, of any id, that the dataset's spline creator rejects.
    """
    res = llamas_label_rows(path, min_lane_height)
    if res.bad:
        raise DataError(res.bad[0][1])
    return res.rows


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
