"""ApolloScape lane-marking reader, and the ApolloScape lane-mark label table (one place only).

Labels come id-coded (single-channel ``*_bin.png``: 0 void, 200.. markings, 249 noise,
255 ignored) or colour-coded (RGB per the table); both map to train ids by lookup table. A
``classes`` file remaps to a compact subset (what the synthetic marking set writes)::

    <root>/<path>.jpg                      image (the list names it, CULane style)
    <root>/marking/<path>_bin.png          id label
    <root>/marking/classes.txt             one line per compact class: ``name apollo_id``

List lines: ``/<img>`` (label derived as above), ``/<img> /<seg> e1..eL`` (CULane style: the
image is used, the label derived), or an explicit ``<img><TAB or ,><label>`` pair (real
ApolloScape paths contain spaces, e.g. ``Camera 5``).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from distill.data.reader import (IMAGE_SUFFIXES, BaseReader, check_root, check_same_size,
                                 identity_geometry, read_image, resolve_list)
from distill.data.sample import IGNORE_INDEX, DataError, DataSpec, Sample


class ApolloLabel(NamedTuple):
    name: str
    id: int
    train_id: int
    category: str
    cat_id: int
    has_instances: bool
    ignore_in_eval: bool
    color: tuple[int, int, int]   # RGB


# The published lane-mark table (ApolloScape dataset-api, lane_segmentation/helpers).
APOLLO_LABELS: tuple[ApolloLabel, ...] = (
    ApolloLabel("void", 0, 0, "void", 0, False, False, (0, 0, 0)),
    ApolloLabel("s_w_d", 200, 1, "dividing", 1, False, False, (70, 130, 180)),
    ApolloLabel("s_y_d", 204, 2, "dividing", 1, False, False, (220, 20, 60)),
    ApolloLabel("ds_w_dn", 213, 3, "dividing", 1, False, True, (128, 0, 128)),
    ApolloLabel("ds_y_dn", 209, 4, "dividing", 1, False, False, (255, 0, 0)),
    ApolloLabel("sb_w_do", 206, 5, "dividing", 1, False, True, (0, 0, 60)),
    ApolloLabel("sb_y_do", 207, 6, "dividing", 1, False, True, (0, 60, 100)),
    ApolloLabel("b_w_g", 201, 7, "guiding", 2, False, False, (0, 0, 142)),
    ApolloLabel("b_y_g", 203, 8, "guiding", 2, False, False, (119, 11, 32)),
    ApolloLabel("db_w_g", 211, 9, "guiding", 2, False, True, (244, 35, 232)),
    ApolloLabel("db_y_g", 208, 10, "guiding", 2, False, True, (0, 0, 160)),
    ApolloLabel("db_w_s", 216, 11, "stopping", 3, False, True, (153, 153, 153)),
    ApolloLabel("s_w_s", 217, 12, "stopping", 3, False, False, (220, 220, 0)),
    ApolloLabel("ds_w_s", 215, 13, "stopping", 3, False, True, (250, 170, 30)),
    ApolloLabel("s_w_c", 218, 14, "chevron", 4, False, True, (102, 102, 156)),
    ApolloLabel("s_y_c", 219, 15, "chevron", 4, False, True, (128, 0, 0)),
    ApolloLabel("s_w_p", 210, 16, "parking", 5, False, False, (128, 64, 128)),
    ApolloLabel("s_n_p", 232, 17, "parking", 5, False, True, (238, 232, 170)),
    ApolloLabel("c_wy_z", 214, 18, "zebra", 6, False, False, (190, 153, 153)),
    ApolloLabel("a_w_u", 202, 19, "thru/turn", 7, False, True, (0, 0, 230)),
    ApolloLabel("a_w_t", 220, 20, "thru/turn", 7, False, False, (128, 128, 0)),
    ApolloLabel("a_w_tl", 221, 21, "thru/turn", 7, False, False, (128, 78, 160)),
    ApolloLabel("a_w_tr", 222, 22, "thru/turn", 7, False, False, (150, 100, 100)),
    ApolloLabel("a_w_tlr", 231, 23, "thru/turn", 7, False, True, (255, 165, 0)),
    ApolloLabel("a_w_l", 224, 24, "thru/turn", 7, False, False, (180, 165, 180)),
    ApolloLabel("a_w_r", 225, 25, "thru/turn", 7, False, False, (107, 142, 35)),
    ApolloLabel("a_w_lr", 226, 26, "thru/turn", 7, False, False, (201, 255, 229)),
    ApolloLabel("a_n_lu", 230, 27, "thru/turn", 7, False, True, (0, 191, 255)),
    ApolloLabel("a_w_tu", 228, 28, "thru/turn", 7, False, True, (51, 255, 51)),
    ApolloLabel("a_w_m", 229, 29, "thru/turn", 7, False, True, (250, 128, 114)),
    ApolloLabel("a_y_t", 233, 30, "thru/turn", 7, False, True, (127, 255, 0)),
    ApolloLabel("b_n_sr", 205, 31, "reduction", 8, False, False, (255, 128, 0)),
    ApolloLabel("d_wy_za", 212, 32, "attention", 9, False, True, (0, 255, 255)),
    ApolloLabel("r_wy_np", 227, 33, "no parking", 10, False, False, (178, 132, 190)),
    ApolloLabel("vom_wy_n", 223, 34, "others", 11, False, True, (128, 128, 64)),
    ApolloLabel("om_n_n", 250, 35, "others", 11, False, False, (102, 0, 204)),
    ApolloLabel("noise", 249, 255, "ignored", 255, False, True, (0, 153, 153)),
    ApolloLabel("ignored", 255, 255, "ignored", 255, False, True, (255, 255, 255)),
)
APOLLO_CLASS_NAMES: tuple[str, ...] = tuple(l.name for l in APOLLO_LABELS if l.train_id != IGNORE_INDEX)
APOLLO_BY_NAME = {l.name: l for l in APOLLO_LABELS}
APOLLO_BY_ID = {l.id: l for l in APOLLO_LABELS}


def _id_lut() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, np.uint8)   # ids outside the table are ignored
    for l in APOLLO_LABELS:
        lut[l.id] = l.train_id
    return lut


ID_TO_TRAINID = _id_lut()
_COLOR_KEYS = np.array([(r << 16) | (g << 8) | b for r, g, b in (l.color for l in APOLLO_LABELS)], np.int64)
_COLOR_ORDER = np.argsort(_COLOR_KEYS)
_COLOR_SORTED = _COLOR_KEYS[_COLOR_ORDER]
_COLOR_IDS = np.array([l.id for l in APOLLO_LABELS], np.uint8)[_COLOR_ORDER]


def id_to_trainid(mask: np.ndarray, lut: np.ndarray = ID_TO_TRAINID) -> np.ndarray:
    """Map an ApolloScape id mask (uint8) to train ids (unknown ids -> 255)."""
    return lut[np.asarray(mask, np.uint8)]


def color_to_id(rgb: np.ndarray) -> np.ndarray:
    """Map an (H, W, 3) RGB colour label to ApolloScape ids (unknown colours -> 255 'ignored')."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB label, got shape {rgb.shape}")
    key = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    pos = np.clip(np.searchsorted(_COLOR_SORTED, key), 0, len(_COLOR_SORTED) - 1)
    return np.where(_COLOR_SORTED[pos] == key, _COLOR_IDS[pos], np.uint8(255)).astype(np.uint8)


def color_to_trainid(rgb: np.ndarray, lut: np.ndarray = ID_TO_TRAINID) -> np.ndarray:
    """Map an (H, W, 3) RGB colour label to train ids (unknown colours -> 255)."""
    return lut[color_to_id(rgb)]


def read_classes_file(path: str | Path) -> tuple[tuple[str, ...], np.ndarray]:
    """A compact class list -> (class names, ApolloScape id -> class LUT).

    Lines are ``name apollo_id`` (class = line order) or ``class_id name apollo_id`` (what the
    synthetic writer emits; class ids must be 0..n-1). Void (id 0) is class 0: listed as class 0,
    or prepended as ``background`` when absent. Ids not listed, noise and ignored map to 255.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: classes file not found")
    entries: list[tuple[int | None, str, int]] = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        toks = line.split()
        if len(toks) == 2:
            toks = ["", *toks]
        ok = len(toks) == 3 and re.fullmatch(r"\d*", toks[0]) and re.fullmatch(r"\d+", toks[2]) \
            and int(toks[2]) <= 255
        if not ok:
            raise DataError(f"{path}:{lineno}: expected 'name apollo_id' or 'class_id name apollo_id' "
                            f"(apollo id 0..255), got {line!r}")
        cid = int(toks[0]) if toks[0] else None
        if entries and (cid is None) != (entries[0][0] is None):
            raise DataError(f"{path}:{lineno}: mixes lines with and without a class id")
        aid = int(toks[2])
        if any(aid == a for _, _, a in entries):
            raise DataError(f"{path}:{lineno}: apollo id {aid} listed twice")
        entries.append((cid, toks[1], aid))
    if not entries:
        raise DataError(f"{path}: no classes listed")
    if entries[0][0] is not None:
        entries.sort(key=lambda e: e[0])
        if [e[0] for e in entries] != list(range(len(entries))):
            raise DataError(f"{path}: class ids must be 0..{len(entries) - 1}, each once")
    if any(aid == 0 for _, _, aid in entries[1:]):
        raise DataError(f"{path}: void (apollo id 0) must be class 0")
    if entries[0][2] != 0:
        if entries[0][0] is not None:
            raise DataError(f"{path}: class 0 must be void (apollo id 0)")
        entries.insert(0, (None, "background", 0))
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    for k, (_, _, aid) in enumerate(entries):
        lut[aid] = k
    return tuple(n for _, n, _ in entries), lut


def _is_image_path(tok: str) -> bool:
    return tok.lower().endswith(IMAGE_SUFFIXES)


class ApolloScapeMarking(BaseReader):
    """Road-marking segmentation from ApolloScape-coded labels.

    ``split``: a name (``train`` -> ``list/train_gt.txt`` or ``list/train.txt``, ...) or a list
    file path. ``label_mode``: ``"auto"`` (single channel = ids, colour = RGB table), ``"id"`` or
    ``"color"``. ``classes_file`` (default ``<label_dir>/classes.txt`` when present) selects a
    compact class subset; without one the 36 train ids of the published table are used.
    """

    SPLITS = {"train": ("list/train_gt.txt", "list/train.txt"), "val": ("list/val_gt.txt", "list/val.txt"),
              "test": ("list/test.txt",)}

    def __init__(self, root: str | Path, split: str = "train", *, label_dir: str = "marking",
                 label_suffix: str = "_bin.png", classes_file: str | Path | None = None,
                 label_mode: str = "auto", skip_bad: bool = False) -> None:
        super().__init__(skip_bad)
        if label_mode not in ("auto", "id", "color"):
            raise ValueError(f"label_mode must be auto, id or color, got {label_mode!r}")
        self.root = check_root(root)
        self.list_file = resolve_list(self.root, split, self.SPLITS)
        self.label_dir = label_dir
        self.label_suffix = label_suffix
        self.label_mode = label_mode
        if classes_file is None and (self.root / label_dir / "classes.txt").is_file():
            classes_file = self.root / label_dir / "classes.txt"
        if classes_file is not None:
            cf = Path(classes_file)
            names, self.lut = read_classes_file(cf if cf.is_absolute() else self.root / cf)
        else:
            names, self.lut = APOLLO_CLASS_NAMES, ID_TO_TRAINID
        self.classes_file = classes_file
        self.spec = DataSpec("marking", tuple(names), 0)
        self._labels: list[Path] = []
        self._parse_list()

    def _parse_list(self) -> None:
        with open(self.list_file, "r") as fh:
            for lineno, raw in enumerate(fh, 1):
                line = raw.rstrip("\n\r")
                if not line.strip():
                    continue
                where = f"{self.list_file}:{lineno}"
                try:
                    name, label = self._parse_line(line, where)
                    if not (self.root / name).is_file():
                        raise DataError(f"{where}: image {self.root / name} not found")
                except DataError as exc:
                    self._note_bad(where, exc)
                    continue
                self.names.append(name)
                self._labels.append(label)
        if not self.names:
            raise DataError(f"{self.list_file}: no samples listed")

    def _parse_line(self, line: str, where: str) -> tuple[str, Path]:
        sep = "\t" if "\t" in line else ("," if "," in line else None)
        if sep:
            parts = [p.strip() for p in line.split(sep) if p.strip()]
            if len(parts) != 2:
                raise DataError(f"{where}: expected 'image{sep!r}label', got {len(parts)} fields")
            img, lab = (p.lstrip("/") for p in parts)
            return img, self.root / lab
        toks = line.split()
        if len(toks) >= 2 and _is_image_path(toks[0]) and _is_image_path(toks[1]) and \
                all(t in ("0", "1") for t in toks[2:]):
            img = toks[0].lstrip("/")          # CULane-style line: the marking label is derived
        else:
            img = line.strip().lstrip("/")     # one path, possibly with spaces
        if not _is_image_path(img):
            raise DataError(f"{where}: {img!r} is not an image path")
        stem = str(Path(img).with_suffix(""))
        return img, self.root / self.label_dir / (stem + self.label_suffix)

    def decode_label(self, label: np.ndarray, path: Path) -> np.ndarray:
        """Raw label (as read, BGR if colour) -> class ids under this reader's class set."""
        colour = label.ndim == 3 and not (np.array_equal(label[..., 0], label[..., 1])
                                          and np.array_equal(label[..., 0], label[..., 2]))
        if self.label_mode == "id" or (self.label_mode == "auto" and not colour):
            ids = label[..., 0] if label.ndim == 3 else label
        else:
            if label.ndim != 3:
                raise DataError(f"{path}: colour label expected, got a single channel")
            ids = color_to_id(cv2.cvtColor(label[..., :3], cv2.COLOR_BGR2RGB))
        return id_to_trainid(ids, self.lut)

    def _load(self, i: int) -> Sample:
        name, lab_path = self.names[i], self._labels[i]
        image = read_image(self.root / name)
        raw = read_image(lab_path, cv2.IMREAD_UNCHANGED)
        if raw.dtype != np.uint8:
            raise DataError(f"{lab_path}: label must be 8-bit, got {raw.dtype}")
        check_same_size(image, raw, self.root / name, lab_path)
        mask = self.decode_label(raw, lab_path)
        meta = {"name": name, "geometry": identity_geometry(image), "tags": [], "dataset": "apollo",
                "label_path": str(lab_path)}
        return Sample(image, np.ascontiguousarray(mask), {}, np.zeros(0, np.float32), meta)
