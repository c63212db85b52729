"""What every dataset reader shares: image and label I/O, list files, lane slots, masks, BaseReader."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from distill.data.sample import DataError, DataSpec, Sample
from runtime.geometry import Geometry
from runtime.imagefile import decode_file

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def read_image(path: str | Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Decode an image file; raise ``DataError`` naming it when missing, truncated or undecodable.

    The default flag gives (H, W, 3) BGR uint8, also for grayscale files (channels replicated).
    The truncation check is the runtime's (``runtime.imagefile``), so sources and readers agree.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    img, why = decode_file(path, flags)
    if img is None:
        raise DataError(f"{path}: {why}")
    return img


def read_label(path: str | Path) -> np.ndarray:
    """Read a single-channel uint8 label PNG (3 identical channels are accepted)."""
    path = Path(path)
    lab = read_image(path, cv2.IMREAD_UNCHANGED)
    if lab.dtype != np.uint8:
        raise DataError(f"{path}: label must be 8-bit, got {lab.dtype}")
    if lab.ndim == 3:
        if lab.shape[2] == 4:
            lab = lab[:, :, :3]
        if not (np.array_equal(lab[:, :, 0], lab[:, :, 1]) and np.array_equal(lab[:, :, 0], lab[:, :, 2])):
            raise DataError(f"{path}: expected a single-channel id label, got colour channels")
        lab = lab[:, :, 0]
    return np.ascontiguousarray(lab)


def check_same_size(image: np.ndarray, label: np.ndarray, image_path: Path, label_path: Path) -> None:
    if image.shape[:2] != label.shape[:2]:
        raise DataError(f"{label_path}: label is {label.shape[1]}x{label.shape[0]} but its image "
                        f"{image_path} is {image.shape[1]}x{image.shape[0]} (w x h)")


def resolve_list(root: Path, split: str, known: dict[str, Sequence[str]]) -> Path:
    """A split name (``train``, ``val``, ``test``, ``test1_crowd``) or a list-file path -> the file."""
    candidates: list[Path] = []
    if split in known:
        candidates = [root / c for c in known[split]]
    else:
        p = Path(split)
        candidates = [p] if p.is_absolute() else [root / p, root / "list" / f"{split}.txt",
                                                  root / "list" / "test_split" / f"{split}.txt", p]
    for c in candidates:
        if c.is_file():
            return c
    raise DataError(f"{root}: no list file for split {split!r} (looked for "
                    f"{', '.join(str(c) for c in candidates)})")


def check_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset root not found")
    return root


# ---------------------------------------------------------------------------------------------
# Lanes: slots and masks
# ---------------------------------------------------------------------------------------------

def bottom_first(lane: np.ndarray) -> np.ndarray:
    """Order a lane's points bottom (largest y) to top, as ``Sample.lanes`` requires."""
    lane = np.asarray(lane, dtype=np.float32).reshape(-1, 2)
    return lane[np.argsort(-lane[:, 1], kind="stable")]


def assign_slots_by_position(lanes: Sequence[np.ndarray], width: int, slots: int = 4) -> dict[int, np.ndarray]:
    """Slots from each lane's x at its lowest point relative to the image centre.

    Left lanes, nearest the centre first, take slots ``L/2, L/2-1, .., 1``; right lanes take
    ``L/2+1, .., L``. Lanes beyond ``L/2`` on a side are dropped (CULane keeps four).
    """
    centre = width / 2.0
    half = slots // 2
    left, right = [], []
    for lane in lanes:
        if len(lane) == 0:
            continue
        lane = bottom_first(lane)
        x = float(lane[0, 0])
        (left if x < centre else right).append((x, lane))
    left.sort(key=lambda t: -t[0])
    right.sort(key=lambda t: t[0])
    out: dict[int, np.ndarray] = {}
    for k, (_, lane) in enumerate(left[:half]):
        out[half - k] = lane
    for k, (_, lane) in enumerate(right[:slots - half]):
        out[half + 1 + k] = lane
    return out


def assign_slots_by_flags(lanes: Sequence[np.ndarray], exist: np.ndarray) -> dict[int, np.ndarray] | None:
    """The lanes, left to right, take the flagged slots in order; None when the counts differ."""
    lanes = [bottom_first(lane) for lane in lanes if len(lane)]
    flagged = [i + 1 for i, e in enumerate(exist) if e > 0.5]
    if len(flagged) != len(lanes):
        return None
    lanes.sort(key=lambda lane: float(lane[0, 0]))
    return dict(zip(flagged, lanes))


def assign_slots_by_mask(lanes: Sequence[np.ndarray], mask: np.ndarray, slots: int) -> dict[int, np.ndarray] | None:
    """Each lane takes the slot most of its points fall on in ``mask``; None when ambiguous."""
    h, w = mask.shape
    out: dict[int, np.ndarray] = {}
    for lane in lanes:
        lane = bottom_first(lane)
        xy = np.rint(lane).astype(np.int64)
        ok = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
        vals = mask[xy[ok, 1], xy[ok, 0]]
        vals = vals[(vals >= 1) & (vals <= slots)]
        if vals.size == 0:
            return None
        slot = Counter(vals.tolist()).most_common(1)[0][0]
        if slot in out:
            return None
        out[int(slot)] = lane
    return out


def rasterise_lanes(lanes: dict[int, np.ndarray], height: int, width: int, thickness: int) -> np.ndarray:
    """Draw each slot's polyline with its slot id into an (H, W) uint8 mask (0 = background)."""
    mask = np.zeros((height, width), np.uint8)
    shift = 4  # sub-pixel precision for cv2.polylines
    for slot in sorted(lanes):
        pts = np.asarray(lanes[slot], np.float64)
        if len(pts) == 0:
            continue
        ipts = np.rint(pts * (1 << shift)).astype(np.int32).reshape(-1, 1, 2)
        if len(pts) == 1:
            cv2.circle(mask, tuple(ipts[0, 0]), max(1, thickness // 2), int(slot), -1, cv2.LINE_8, shift)
        else:
            cv2.polylines(mask, [ipts], False, int(slot), max(1, int(thickness)), cv2.LINE_8, shift)
    return mask


def scaled_width(line_width: float, image_width: int, ref_width: int) -> int:
    """A line width given at the dataset's reference width, scaled to this image's width."""
    return max(1, int(round(line_width * image_width / ref_width)))


def exist_from(lanes: dict[int, np.ndarray], slots: int) -> np.ndarray:
    e = np.zeros(slots, np.float32)
    for s in lanes:
        e[s - 1] = 1.0
    return e


# ---------------------------------------------------------------------------------------------
# Base reader: indexing and the skip_bad policy
# ---------------------------------------------------------------------------------------------

class BaseReader:
    """Indexing shared by all readers.

    Subclasses fill ``names`` and implement ``_load(i)``. With ``skip_bad=False`` (default) any
    bad item raises ``DataError``. With ``skip_bad=True`` a bad item is recorded in
    ``bad`` (name -> reason) and the next readable item is returned instead; ``skipped`` counts
    them (per process: DataLoader workers keep their own count).
    """

    spec: DataSpec
    root: Path

    def __init__(self, skip_bad: bool = False) -> None:
        self.skip_bad = skip_bad
        self.names: list[str] = []
        self.bad: dict[str, str] = {}

    @property
    def skipped(self) -> int:
        return len(self.bad)

    def _note_bad(self, key: str, err: Exception) -> None:
        if not self.skip_bad:
            raise err
        self.bad[key] = str(err)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> Sample:
        n = len(self.names)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {n} samples")
        if not self.skip_bad:
            return self._load_text_checked(i)
        for k in range(n):
            j = (i + k) % n
            if self.names[j] in self.bad:
                continue
            try:
                return self._load_text_checked(j)
            except DataError as exc:
                self.bad[self.names[j]] = str(exc)
        raise DataError(f"{self.root}: no readable sample left ({self.skipped} skipped)")

    def _load_text_checked(self, i: int) -> Sample:
        """``_load``, with a label file that is not text turned into a ``DataError`` naming the sample."""
        try:
            return self._load(i)
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.root / self.names[i]}: a label file of this sample is not UTF-8 text "
                            f"({exc.reason} at byte {exc.start})") from None

    def _load(self, i: int) -> Sample:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, n={len(self)}, skipped={self.skipped})"


def identity_geometry(image: np.ndarray) -> Geometry:
    h, w = image.shape[:2]
    return Geometry(orig_h=h, orig_w=w, in_h=h, in_w=w, crop_top=0)
