"""Small helpers shared by several test files."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


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
