"""Where results go: an annotated video (mp4v), a per-frame lane JSONL, a summary JSON, a window.

Every sink checks its path when created, so an unwritable output fails before any frame is
processed, and every sink's ``close()`` leaves a valid file with what was written so far.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping

import cv2
import numpy as np

from runtime.lane_writers import VideoLaneWriter, finite_json
from runtime.partial import staged


class SinkError(RuntimeError):
    """An output that cannot be written."""


def check_writable(path: str | Path) -> Path:
    """Create the parent folder if needed and make sure ``path`` can be written; else SinkError."""
    path = Path(path)
    if path.is_dir():
        raise SinkError(f"{path}: is a folder, expected a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkError(f"{path}: cannot create its folder ({exc.strerror})") from None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise SinkError(f"{path}: not writable (permission denied)")
    return path


class VideoSink:
    """mp4v video at a fixed size; frames of another size are resized to it."""

    def __init__(self, path: str | Path, size_hw: tuple[int, int], fps: float = 30.0, fourcc: str = "mp4v") -> None:
        self.path = check_writable(path)
        self.h, self.w = int(size_hw[0]), int(size_hw[1])
        self.fps = fps if fps and fps > 0 else 30.0
        self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc), self.fps, (self.w, self.h))
        if not self.writer.isOpened():
            raise SinkError(f"{self.path}: OpenCV cannot open a {fourcc} video writer here")
        self.count = 0

    def write(self, frame: np.ndarray) -> None:
        if frame.shape[:2] != (self.h, self.w):
            frame = cv2.resize(frame, (self.w, self.h), interpolation=cv2.INTER_AREA)
        self.writer.write(frame)
        self.count += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()      # writes the container index: the file is playable after this
            self.writer = None


class LaneLogSink:
    """Per-frame lanes in original-frame coordinates, one JSON line per frame."""

    def __init__(self, path: str | Path) -> None:
        self.path = check_writable(path)
        self.writer = VideoLaneWriter(self.path)

    @property
    def count(self) -> int:
        return self.writer.count

    def write(self, frame_index: int, timestamp: float, lanes: Mapping[int, np.ndarray],
              exist: np.ndarray | None) -> None:
        self.writer.write(frame_index, timestamp, lanes, exist)

    def close(self) -> None:
        self.writer.close()


def write_json(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON, atomically (temp file then rename); NaN/inf are refused
    (``NonFiniteError`` naming the field) since JSON has no such numbers."""
    path = check_writable(path)
    text = finite_json(data, str(path), indent=2, default=_jsonable) + "\n"
    with staged(path) as tmp:          # removed on any error; a killed run's is removed next time
        tmp.write_text(text)
        tmp.replace(path)
    return path


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def has_display() -> bool:
    """Whether OpenCV can open a window here (a display exists and OpenCV has a GUI backend)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        cv2.namedWindow("lanekd-probe", cv2.WINDOW_AUTOSIZE)
        cv2.destroyWindow("lanekd-probe")
    except cv2.error:
        return False
    return True


class WindowSink:
    """Shows frames in a window; ``write`` returns False when the user pressed q or Esc."""

    def __init__(self, title: str = "lanekd") -> None:
        if not has_display():
            raise SinkError("--show needs a display and an OpenCV build with GUI support "
                            "(opencv-python-headless has none)")
        self.title = title
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)

    def write(self, frame: np.ndarray) -> bool:
        cv2.imshow(self.title, frame)
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass
