"""``Sample``: the one record every dataset reader and the synthetic generator produce."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

IGNORE_INDEX = 255


@dataclass
class Sample:
    """One labelled frame.

    image: (H, W, 3) uint8, BGR (OpenCV's order; the model sees RGB after normalisation).
    mask:  (H, W) uint8 class map: for lanes 0 = background and 1..L = lane slot (left to right
           around the ego lane); for markings the train id; 255 = ignore. None when unlabelled.
    lanes: slot (1..L) -> (N, 2) float32 (x, y) points in this image's coordinates, rows ordered
           bottom to top. Empty for marking datasets.
    exist: (L,) float32, 1.0 where the slot holds a lane.
    meta:  ``name`` (path relative to the dataset root), ``geometry`` (runtime.geometry.Geometry
           from the original frame to this image once transforms ran), ``tags`` (scene
           categories), and anything reader-specific.
    """

    image: np.ndarray
    mask: np.ndarray | None
    lanes: dict[int, np.ndarray] = field(default_factory=dict)
    exist: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSpec:
    """What a dataset's labels mean: the task, class names and lane slot count."""

    task: str                   # "lanes" or "marking"
    class_names: tuple[str, ...]
    lane_slots: int = 0
    ignore_index: int = IGNORE_INDEX

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @staticmethod
    def lanes(slots: int = 4) -> "DataSpec":
        return DataSpec("lanes", ("background",) + tuple(f"lane{i}" for i in range(1, slots + 1)), slots)


class DataError(ValueError):
    """Bad input on disk: the message names the file (and line where there is one)."""
