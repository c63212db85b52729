"""Small helpers shared by several test files."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

GOLDEN = Path(__file__).resolve().parent / "golden"


def load_golden(name: str) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays of ``tests/golden/<name>.npz`` and its ``.json`` sidecar (see golden/README.md)."""
    with np.load(GOLDEN / f"{name}.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return arrays, json.loads((GOLDEN / f"{name}.json").read_text())


def read_video(path: str | Path) -> list[np.ndarray]:
    """Every frame OpenCV decodes from ``path``."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames
