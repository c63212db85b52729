"""Sample transforms (numpy / OpenCV): crop, resize, flip, rotation, photometric jitter, normalise.

Every transform is ``t(sample, rng) -> Sample`` with ``rng`` a ``numpy.random.Generator`` owned by
the caller (the Dataset seeds one per worker), and keeps ``meta["geometry"]`` a
``runtime.geometry.Geometry`` from the ORIGINAL frame to the current image. Only the top crop and
the resize change the geometry; flip and rotation are training augmentations recorded as
``meta["flipped"]`` / ``meta["rotation_deg"]``. Lane points follow the image exactly (same
pixel-centre convention as ``Geometry``), so points that lay on the mask still do after any chain.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import cv2
import numpy as np

from distill.data.sample import IGNORE_INDEX, Sample
from runtime.geometry import Geometry
from runtime.metadata import IMAGENET_MEAN, IMAGENET_STD

Transform = Callable[[Sample, np.random.Generator], Sample]
_INTERP = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "cubic": cv2.INTER_CUBIC}


def geometry_of(sample: Sample) -> Geometry:
    """The sample's geometry; identity on its image when a reader set none."""
    g = sample.meta.get("geometry")
    if g is not None:
        return g
    h, w = sample.image.shape[:2]
    return Geometry(h, w, h, w, 0)


def _keep_rows(lanes: dict[int, np.ndarray], exist: np.ndarray, h: int) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Drop points outside the image rows; a lane left with no point no longer exists."""
    out, exist = {}, exist.copy()
    for slot, pts in lanes.items():
        keep = pts[(pts[:, 1] >= -0.5) & (pts[:, 1] <= h - 0.5)]
        if len(keep):
            out[slot] = keep.astype(np.float32)
        elif slot - 1 < len(exist):
            exist[slot - 1] = 0.0
    return out, exist


def _remap(sample: Sample, old: Geometry, new: Geometry) -> tuple[dict[int, np.ndarray], np.ndarray]:
    lanes = {s: new.to_input(old.to_original(p)).astype(np.float32) for s, p in sample.lanes.items()}
    return _keep_rows(lanes, sample.exist, new.in_h)


class TopCrop:
    """Remove the top rows (the sky). ``crop_top``: rows of the original frame, or a fraction < 1."""

    def __init__(self, crop_top: int | float) -> None:
        if crop_top < 0:
            raise ValueError(f"crop_top must be >= 0, got {crop_top}")
        self.crop_top = crop_top

    def rows(self, orig_h: int) -> int:
        if isinstance(self.crop_top, float) and self.crop_top < 1:
            return int(round(self.crop_top * orig_h))
        return int(self.crop_top)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        old = geometry_of(sample)
        if old.in_h != old.orig_h - old.crop_top or old.in_w != old.orig_w:
            raise ValueError("TopCrop must come before Resize (the geometry is crop, then resize)")
        rows = self.rows(old.orig_h)
        if rows == 0:
            return sample
        if old.crop_top + rows >= old.orig_h:
            raise ValueError(f"crop of {rows} rows leaves nothing of a {old.in_h}-row image")
        new = Geometry(old.orig_h, old.orig_w, old.in_h - rows, old.in_w, old.crop_top + rows)
        lanes, exist = _remap(sample, old, new)
        mask = None if sample.mask is None else np.ascontiguousarray(sample.mask[rows:])
        return replace(sample, image=np.ascontiguousarray(sample.image[rows:]), mask=mask,
                       lanes=lanes, exist=exist, meta={**sample.meta, "geometry": new})


class Resize:
    """Resize to (h, w): images bilinear (or area/cubic), masks nearest with pixel centres aligned."""

    def __init__(self, height: int, width: int, interp: str = "linear") -> None:
        if interp not in _INTERP:
            raise ValueError(f"interp must be one of {sorted(_INTERP)}, got {interp!r}")
        self.size = (int(height), int(width))
        self.interp = interp

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        h, w = self.size
        old = geometry_of(sample)
        if sample.image.shape[:2] == (h, w):
            return sample if "geometry" in sample.meta else replace(sample, meta={**sample.meta, "geometry": old})
        new = Geometry(old.orig_h, old.orig_w, h, w, old.crop_top)
        image = cv2.resize(sample.image, (w, h), interpolation=_INTERP[self.interp])
        # INTER_NEAREST_EXACT samples at pixel centres, matching Geometry's convention
        mask = None if sample.mask is None else cv2.resize(sample.mask, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
        lanes, exist = _remap(sample, old, new)
        return replace(sample, image=image, mask=mask, lanes=lanes, exist=exist, meta={**sample.meta, "geometry": new})


def flip_slot_lut(slots: int) -> np.ndarray:
    """Mask value LUT for a horizontal flip: slot i <-> L + 1 - i, everything else unchanged."""
    lut = np.arange(256, dtype=np.uint8)
    for i in range(1, slots + 1):
        lut[i] = slots + 1 - i
    return lut


class HorizontalFlip:
    """Mirror with probability ``p``. Lane tasks swap slots (i <-> L+1-i) and reverse ``exist``.

    ``mask_lut`` overrides the mask value mapping (e.g. to swap left/right arrow classes).
    """

    def __init__(self, p: float = 0.5, mask_lut: np.ndarray | None = None) -> None:
        self.p = p
        self.mask_lut = mask_lut

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if self.p < 1 and rng.random() >= self.p:
            return sample
        w = sample.image.shape[1]
        slots = len(sample.exist)
        image = cv2.flip(sample.image, 1)
        mask = None
        if sample.mask is not None:
            mask = cv2.flip(sample.mask, 1)
            lut = self.mask_lut if self.mask_lut is not None else (flip_slot_lut(slots) if slots else None)
            if lut is not None:
                mask = lut[mask]
        lanes = {}
        for s, p in sample.lanes.items():
            q = p.copy()
            q[:, 0] = (w - 1) - q[:, 0]
            lanes[slots + 1 - s if slots else s] = q
        exist = sample.exist[::-1].copy()
        meta = {**sample.meta, "flipped": not sample.meta.get("flipped", False)}
        return replace(sample, image=image, mask=mask, lanes=lanes, exist=exist, meta=meta)


class RandomRotation:
    """Rotate about the image centre by U(-max_deg, max_deg) with probability ``p``.

    Image bilinear (black border), mask nearest (border = ignore), lane points by the same matrix.
    """

    def __init__(self, max_deg: float = 3.0, p: float = 0.5) -> None:
        self.max_deg = float(max_deg)
        self.p = p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if self.max_deg <= 0 or (self.p < 1 and rng.random() >= self.p):
            return sample
        angle = float(rng.uniform(-self.max_deg, self.max_deg))
        return self.rotate(sample, angle)

    @staticmethod
    def rotate(sample: Sample, angle: float) -> Sample:
        h, w = sample.image.shape[:2]
        m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
        image = cv2.warpAffine(sample.image, m, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        mask = None
        if sample.mask is not None:
            mask = cv2.warpAffine(sample.mask, m, (w, h), flags=cv2.INTER_NEAREST,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=IGNORE_INDEX)
        lanes = {s: (p @ m[:, :2].T + m[:, 2]).astype(np.float32) for s, p in sample.lanes.items()}
        lanes, exist = _keep_rows(lanes, sample.exist, h)
        meta = {**sample.meta, "rotation_deg": sample.meta.get("rotation_deg", 0.0) + angle}
        return replace(sample, image=image, mask=mask, lanes=lanes, exist=exist, meta=meta)


class PhotometricJitter:
    """Random brightness, contrast, saturation (factors in 1 +- x) and hue shift (fraction of a turn)."""

    def __init__(self, brightness: float = 0.3, contrast: float = 0.3, saturation: float = 0.3,
                 hue: float = 0.03, p: float = 0.8) -> None:
        self.brightness, self.contrast, self.saturation, self.hue, self.p = brightness, contrast, saturation, hue, p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if self.p < 1 and rng.random() >= self.p:
            return sample
        b = rng.uniform(1 - self.brightness, 1 + self.brightness)
        c = rng.uniform(1 - self.contrast, 1 + self.contrast)
        s = rng.uniform(1 - self.saturation, 1 + self.saturation)
        # brightness b, contrast c about the mean luma m, saturation s about the pixel's luma g:
        # out = b*c*(s*img + (1-s)*g) + b*m*(1-c), one saturating uint8 pass in OpenCV
        img = sample.image
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        m = float(cv2.mean(gray)[0])
        out = cv2.addWeighted(img, b * c * s, cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), b * c * (1 - s),
                              b * m * (1 - c))
        if self.hue > 0:
            shift = int(round(rng.uniform(-self.hue, self.hue) * 180))
            if shift:
                hsv = cv2.cvtColor(out, cv2.COLOR_BGR2HSV)
                hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 180).astype(np.uint8)
                out = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        return replace(sample, image=out)


def normalize_image(image_bgr: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """(H, W, 3) BGR uint8 -> (3, H, W) float32 RGB, ``(rgb - mean) / std`` on the 0..255 scale."""
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image_bgr.shape}")
    h, w = image_bgr.shape[:2]
    out = np.empty((3, h, w), np.float32)
    bgr = cv2.split(np.ascontiguousarray(image_bgr))
    for c in range(3):                      # output channel c (RGB) is BGR plane 2 - c
        np.multiply(bgr[2 - c], np.float32(1.0 / std[c]), out=out[c], dtype=np.float32)
        out[c] -= np.float32(mean[c] / std[c])
    return out


class Normalize:
    """Last step: the image becomes the model input, float32 (3, H, W) RGB normalised."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        return replace(sample, image=normalize_image(sample.image, self.mean, self.std),
                       meta={**sample.meta, "layout": "CHW-RGB-normalized"})


class Compose:
    """Apply transforms in order with one shared generator."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        rng = rng if rng is not None else np.random.default_rng()
        if "geometry" not in sample.meta:
            sample = replace(sample, meta={**sample.meta, "geometry": geometry_of(sample)})
        for t in self.transforms:
            sample = t(sample, rng)
        return sample

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(type(t).__name__ for t in self.transforms) + "])"


def eval_transforms(input_size: tuple[int, int], crop_top: int | float = 0, *, interp: str = "linear",
                    normalize: bool = True) -> Compose:
    """Deterministic: top crop, resize to ``input_size`` (h, w), normalise."""
    ts: list[Transform] = [TopCrop(crop_top), Resize(*input_size, interp=interp)]
    if normalize:
        ts.append(Normalize())
    return Compose(ts)


def train_transforms(input_size: tuple[int, int], crop_top: int | float = 0, *, flip: float = 0.5,
                     rotate_deg: float = 3.0, rotate_p: float = 0.5, jitter: bool = True,
                     interp: str = "linear", normalize: bool = True) -> Compose:
    """Top crop and resize (the deployed geometry), then flip, rotation, jitter; then normalise.

    Augmentations run after the resize so they cost input-size, not frame-size, work.
    """
    ts: list[Transform] = [TopCrop(crop_top), Resize(*input_size, interp=interp)]
    if flip > 0:
        ts.append(HorizontalFlip(flip))
    if rotate_deg > 0:
        ts.append(RandomRotation(rotate_deg, rotate_p))
    if jitter:
        ts.append(PhotometricJitter())
    if normalize:
        ts.append(Normalize())
    return Compose(ts)
