"""CULane reader.

CULane layout (also what the synthetic lane generator writes)::

    <root>/list/train_gt.txt          /<img> /<seg png> e1 e2 e3 e4
    <root>/list/test.txt              /<img>
    <root>/list/test_split/test*_*.txt
    <root>/<img>.jpg, <root>/<img>.lines.txt (one lane per line: x1 y1 x2 y2 ...)
    <root>/laneseg_label_w16/<img>.png (0 = background, 1..4 = lane slot)

Where the segmentation label is missing it is rasterised from the ``.lines.txt`` lanes, which
are assigned to slots from the list's existence flags or, without flags, by position.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from distill.data.reader import (IMAGE_SUFFIXES, BaseReader, assign_slots_by_flags, assign_slots_by_mask,
                                 assign_slots_by_position, check_root, check_same_size, exist_from,
                                 identity_geometry, rasterise_lanes, read_image, read_label, resolve_list,
                                 scaled_width)
from distill.data.sample import IGNORE_INDEX, DataError, DataSpec, Sample
from runtime.lane_io import LaneFileError, read_culane_lines

CULANE_W = 1640
CULANE_H = 590

# The official test split: file stem -> category name (the stem without its ``testN_`` prefix).
CULANE_SPLITS = {"train": ("list/train_gt.txt", "list/train.txt"),
                 "val": ("list/val_gt.txt", "list/val.txt"),
                 "trainval": ("list/train_gt.txt",),
                 "test": ("list/test.txt",)}


# ---------------------------------------------------------------------------------------------
# CULane
# ---------------------------------------------------------------------------------------------

def _split_category(path: Path) -> str | None:
    """``test1_crowd.txt`` -> ``crowd``."""
    stem = path.stem
    if stem.startswith("test") and "_" in stem:
        return stem.split("_", 1)[1]
    return None


class CULane(BaseReader):
    """CULane-format lane dataset (the embedded synthetic lane set uses the same layout).

    ``split``: ``train``/``val``/``test``, a test category file stem (``test1_crowd``) or a list
    file path (relative to ``root`` or absolute). ``line_width`` is the rasterised lane width in
    pixels at 1640 px image width (scaled to other widths). ``require_labels=False`` allows
    unlabelled images (``mask`` None) when neither a seg label nor a ``.lines.txt`` exists.
    """

    def __init__(self, root: str | Path, split: str = "train", *, line_width: float = 16.0,
                 slots: int = 4, seg_dir: str = "laneseg_label_w16", require_labels: bool = True,
                 skip_bad: bool = False) -> None:
        super().__init__(skip_bad)
        self.root = check_root(root)
        self.list_file = resolve_list(self.root, split, CULANE_SPLITS)
        self.line_width = line_width
        self.slots = slots
        self.seg_dir = seg_dir
        self.require_labels = require_labels
        self.spec = DataSpec.lanes(slots)
        self._seg: list[str | None] = []
        self._flags: list[np.ndarray | None] = []
        self._parse_list()
        self._tags = self._read_tags()

    def _parse_list(self) -> None:
        with open(self.list_file, "r") as fh:
            for lineno, line in enumerate(fh, 1):
                toks = line.split()
                if not toks:
                    continue
                try:
                    name, seg, flags = self._parse_line(toks, lineno)
                    if not (self.root / name).is_file():
                        raise DataError(f"{self.list_file}:{lineno}: image {self.root / name} not found")
                except DataError as exc:
                    self._note_bad(f"{self.list_file}:{lineno}", exc)
                    continue
                self.names.append(name)
                self._seg.append(seg)
                self._flags.append(flags)
        if not self.names:
            raise DataError(f"{self.list_file}: no samples listed")

    def _parse_line(self, toks: list[str], lineno: int) -> tuple[str, str | None, np.ndarray | None]:
        where = f"{self.list_file}:{lineno}"
        name = toks[0].lstrip("/")
        if not name.lower().endswith(IMAGE_SUFFIXES):
            raise DataError(f"{where}: {toks[0]!r} is not an image path")
        if len(toks) == 1:
            return name, None, None
        seg = toks[1].lstrip("/")
        if len(toks) == 2:
            return name, seg, None
        if len(toks) != 2 + self.slots:
            raise DataError(f"{where}: expected '/img /seg' and {self.slots} existence flags, got {len(toks)} fields")
        if any(t not in ("0", "1") for t in toks[2:]):
            raise DataError(f"{where}: existence flags must be 0 or 1, got {' '.join(toks[2:])}")
        return name, seg, np.array([float(t) for t in toks[2:]], np.float32)

    def _read_tags(self) -> dict[str, list[str]]:
        """Scene categories from ``list/test_split/`` when this reader is on a test split."""
        own = _split_category(self.list_file)
        if own is not None and self.list_file.parent.name == "test_split":
            return {n: [own] for n in self.names}
        if self.list_file.name != "test.txt":
            return {}
        tags: dict[str, list[str]] = {}
        split_dir = self.root / "list" / "test_split"
        for f in sorted(split_dir.glob("test*_*.txt")) if split_dir.is_dir() else []:
            cat = _split_category(f)
            for line in f.read_text().split("\n"):
                if line.strip():
                    tags.setdefault(line.split()[0].lstrip("/"), []).append(cat)
        return tags

    def _load(self, i: int) -> Sample:
        name = self.names[i]
        img_path = self.root / name
        image = read_image(img_path)
        h, w = image.shape[:2]
        lines_path = img_path.with_suffix(".lines.txt")
        seg_rel = self._seg[i]
        seg_path = self.root / seg_rel if seg_rel else self.root / self.seg_dir / Path(name).with_suffix(".png")
        flags = self._flags[i]

        raw: list[np.ndarray] | None = None
        if lines_path.is_file():
            try:
                raw = read_culane_lines(lines_path)
            except LaneFileError as exc:
                raise DataError(str(exc)) from None
        mask: np.ndarray | None = None
        if seg_path.is_file():
            mask = read_label(seg_path)
            check_same_size(image, mask, img_path, seg_path)
            if mask.max(initial=0) > self.slots and not np.all((mask <= self.slots) | (mask == IGNORE_INDEX)):
                raise DataError(f"{seg_path}: lane label values must be 0..{self.slots} (or 255)")
        elif seg_rel is not None:
            if raw is None:
                raise DataError(f"{seg_path}: seg label listed in {self.list_file} not found (no {lines_path.name} either)")

        if raw is None and mask is None:
            if self.require_labels:
                raise DataError(f"{img_path}: no label ({lines_path.name} or {seg_path}) found")
            return Sample(image, None, {}, np.zeros(self.slots, np.float32), self._meta(name, image, None, None))

        lanes: dict[int, np.ndarray] = {}
        if raw:
            got = None
            if mask is not None:
                got = assign_slots_by_mask(raw, mask, self.slots)
            if got is None and flags is not None:
                got = assign_slots_by_flags(raw, flags)
            lanes = got if got is not None else assign_slots_by_position(raw, w, self.slots)
        if mask is None:
            mask = rasterise_lanes(lanes, h, w, scaled_width(self.line_width, w, CULANE_W))
        if flags is not None:
            exist = flags.copy()
        elif raw is not None:
            exist = exist_from(lanes, self.slots)
        else:
            exist = np.array([float(np.any(mask == s)) for s in range(1, self.slots + 1)], np.float32)
        meta = self._meta(name, image, lines_path if raw is not None else None,
                          seg_path if seg_path.is_file() else None)
        return Sample(image, mask, lanes, exist, meta)

    def _meta(self, name: str, image: np.ndarray, lines: Path | None, seg: Path | None) -> dict:
        return {"name": name, "geometry": identity_geometry(image), "tags": list(self._tags.get(name, [])),
                "lines_path": str(lines) if lines else None, "label_path": str(seg) if seg else None,
                "dataset": "culane"}
