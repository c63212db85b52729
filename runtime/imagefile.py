"""Decoding image files so that a damaged one is reported, not silently half-decoded.

OpenCV decodes a JPEG or PNG that was cut short without complaint (the missing rows come out
grey). Both the dataset readers (``distill.data.reader``) and the runtime's image sources use
:func:`looks_truncated` on the encoded bytes, so the two agree on what counts as corrupt.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def looks_truncated(data: np.ndarray | bytes) -> str | None:
    """Why the encoded bytes look cut short, or None. OpenCV decodes a truncated JPEG silently."""
    head, tail = bytes(data[:8]), bytes(data[-64:])
    if head[:2] == b"\xff\xd8" and b"\xff\xd9" not in tail:
        return "truncated JPEG (no end-of-image marker)"
    if head == b"\x89PNG\r\n\x1a\n" and b"IEND" not in tail:
        return "truncated PNG (no IEND chunk)"
    return None


def decode_file(path: str | Path, flags: int = cv2.IMREAD_COLOR) -> tuple[np.ndarray | None, str]:
    """(image, "") or (None, why): missing, empty, truncated or undecodable."""
    path = Path(path)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except FileNotFoundError:
        return None, "file not found"
    except OSError as exc:
        return None, f"cannot read ({exc.strerror or exc})"
    if data.size == 0:
        return None, "empty file"
    why = looks_truncated(data)
    if why:
        return None, why
    img = cv2.imdecode(data, flags)
    if img is None:
        return None, "cannot decode image"
    return img, ""
