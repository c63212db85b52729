"""Frame -> model input, as the sidecar says: top crop, resize, then (unless fused) BGR->RGB,
``(x - mean) / std`` and HWC->CHW.

Cost matters (it runs on every frame on the host): the crop is a view, the resize writes into a
reused buffer, the channel split is one uint8 pass and the normalisation is one fused
multiply-add per channel (``cv2.addWeighted`` with a float32 destination) written straight into
the NCHW output buffer. Output buffers are reused in turn (``buffers``); ``copy=True`` returns a
fresh array instead.
"""
from __future__ import annotations

import cv2
import numpy as np

from runtime.geometry import Geometry
from runtime.metadata import MetadataError, ModelMeta

# Training resizes with bilinear interpolation; the runtime must do the same.
INTERPOLATION = cv2.INTER_LINEAR


def input_layout(meta: ModelMeta) -> tuple[str, tuple[int, int, int]]:
    """The model input as the sidecar declares it: (layout, (C, H, W) or (H, W, C)), checked.

    Raises ``MetadataError`` when the declared input shape, layout and geometry disagree.
    """
    if not meta.inputs:
        raise MetadataError(f"sidecar of {meta.model!r} declares no input")
    spec = meta.inputs[0]
    g = meta.geometry
    layout = meta.layout.upper()
    if layout not in ("NCHW", "NHWC"):
        raise MetadataError(f"sidecar layout {meta.layout!r} is neither NCHW nor NHWC")
    want = (3, g.in_h, g.in_w) if layout == "NCHW" else (g.in_h, g.in_w, 3)
    dims = list(spec.shape)
    if len(dims) != 4:
        raise MetadataError(f"sidecar input {spec.name!r} has shape {dims}; expected 4 dims ({layout})")
    for got, exp in zip(dims[1:], want):
        if isinstance(got, int) and got != exp:
            raise MetadataError(f"sidecar input {spec.name!r} shape {dims} does not match its "
                                f"{layout} geometry {g.in_h}x{g.in_w} (expected [N, {', '.join(map(str, want))}])")
    if meta.fused_preprocess != (layout == "NHWC"):
        raise MetadataError(f"sidecar says fused_preprocess={meta.fused_preprocess} but layout={layout}")
    return layout, want


class Preprocessor:
    """``__call__(frame_bgr) -> input`` for one model: (1,3,H,W) float32 or (1,H,W,3) uint8.

    ``buffers`` output buffers are used in turn, so an input stays valid for ``buffers - 1``
    further calls (the threaded pipeline sizes it to what its queues can hold).
    """

    def __init__(self, meta: ModelMeta, buffers: int = 1) -> None:
        self.meta = meta
        self.layout, _ = input_layout(meta)
        self.input_name = meta.inputs[0].name
        g = meta.geometry
        self.size = (g.in_w, g.in_h)            # cv2 order
        self.fused = self.layout == "NHWC"
        shape, dtype = ((1, g.in_h, g.in_w, 3), np.uint8) if self.fused else ((1, 3, g.in_h, g.in_w), np.float32)
        self._ring = [np.empty(shape, dtype) for _ in range(max(1, buffers))]
        self._next = 0
        if not self.fused:
            self._resized = np.empty((g.in_h, g.in_w, 3), np.uint8)
            self._planes = [np.empty((g.in_h, g.in_w), np.uint8) for _ in range(3)]
            # output channel c reads BGR plane src[c]; y = x * scale + bias
            rgb = meta.color.upper() == "RGB"
            self._src = (2, 1, 0) if rgb else (0, 1, 2)
            self._scale = [1.0 / float(s) for s in meta.std]
            self._bias = [-float(m) / float(s) for m, s in zip(meta.mean, meta.std)]
        self._geometries: dict[tuple[int, int], Geometry] = {}

    def geometry(self, h: int, w: int) -> Geometry:
        """The crop/resize geometry for a frame of this size (cached per size)."""
        g = self._geometries.get((h, w))
        if g is None:
            g = self._geometries[(h, w)] = self.meta.geometry.for_frame(h, w)
        return g

    def __call__(self, frame: np.ndarray, copy: bool = False) -> np.ndarray:
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected a BGR uint8 (H, W, 3) frame, got {frame.dtype} {frame.shape}")
        g = self.geometry(*frame.shape[:2])
        out = self._ring[self._next]
        self._next = (self._next + 1) % len(self._ring)
        cropped = frame[g.crop_top:] if g.crop_top else frame
        cv2.resize(cropped, self.size, dst=out[0] if self.fused else self._resized, interpolation=INTERPOLATION)
        if not self.fused:
            cv2.split(self._resized, self._planes)
            for c in range(3):
                plane = self._planes[self._src[c]]
                cv2.addWeighted(plane, self._scale[c], plane, 0.0, self._bias[c], dst=out[0, c], dtype=cv2.CV_32F)
        return out.copy() if copy else out


def preprocess_reference(frame: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """The same transform written plainly in NumPy: the test oracle and the benchmark baseline."""
    g = meta.geometry.for_frame(*frame.shape[:2])
    img = cv2.resize(frame[g.crop_top:], (g.in_w, g.in_h), interpolation=INTERPOLATION)
    if meta.layout.upper() == "NHWC":
        return img[None]
    if meta.color.upper() == "RGB":
        img = img[:, :, ::-1]
    x = (img.astype(np.float32) - np.asarray(meta.mean, np.float32)) / np.asarray(meta.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])
