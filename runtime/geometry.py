"""Geometry between an original frame and a model's input: a top crop, then a resize.

Training transforms record it, the export sidecar carries it, and post-processing uses it to put
lane points back in original image coordinates. Pure Python/NumPy so the runtime can use it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Geometry:
    """``orig`` frame (orig_h x orig_w) -> crop rows [crop_top, orig_h) -> resize to (in_h, in_w)."""

    orig_h: int
    orig_w: int
    in_h: int
    in_w: int
    crop_top: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.crop_top < self.orig_h:
            raise ValueError(f"crop_top {self.crop_top} outside a frame of height {self.orig_h}")
        if min(self.orig_h, self.orig_w, self.in_h, self.in_w) <= 0:
            raise ValueError(f"geometry sizes must be positive: {self}")

    @property
    def scale_x(self) -> float:
        """Input pixels per original pixel, horizontally."""
        return self.in_w / self.orig_w

    @property
    def scale_y(self) -> float:
        return self.in_h / (self.orig_h - self.crop_top)

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        """Map (N, 2) original (x, y) points to input coordinates (pixel-centre convention)."""
        xy = np.asarray(xy, dtype=np.float64)
        out = np.empty_like(xy)
        out[:, 0] = (xy[:, 0] + 0.5) * self.scale_x - 0.5
        out[:, 1] = (xy[:, 1] - self.crop_top + 0.5) * self.scale_y - 0.5
        return out

    def to_original(self, xy: np.ndarray) -> np.ndarray:
        """Map (N, 2) input (x, y) points back to original frame coordinates."""
        xy = np.asarray(xy, dtype=np.float64)
        out = np.empty_like(xy)
        out[:, 0] = (xy[:, 0] + 0.5) / self.scale_x - 0.5
        out[:, 1] = (xy[:, 1] + 0.5) / self.scale_y - 0.5 + self.crop_top
        return out

    def for_frame(self, h: int, w: int) -> "Geometry":
        """The same crop fraction applied to a frame of another size."""
        if (h, w) == (self.orig_h, self.orig_w):
            return self
        top = int(round(self.crop_top * h / self.orig_h))
        return Geometry(orig_h=h, orig_w=w, in_h=self.in_h, in_w=self.in_w, crop_top=top)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Geometry":
        return cls(**{k: int(d[k]) for k in ("orig_h", "orig_w", "in_h", "in_w", "crop_top")})
