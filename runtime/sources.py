"""Frame sources: a video file, a camera, an image folder or glob, an RTSP/HTTP stream.

Every source is opened (and its first frame read) before the pipeline starts, so a missing file,
an unreadable folder or a camera that does not open fails before any frame is processed.

Files are played in full: every frame is yielded. Live sources (cameras, URLs) are read by a
background thread into a one-slot buffer where the newest frame wins; frames that nobody took in
time are counted as ``dropped``. Frames that cannot be decoded are skipped and counted as
``corrupt``; ``max_corrupt`` of them in a row ends the run with a ``SourceError``. Image files are
decoded with ``runtime.imagefile.decode_file``: a JPEG or PNG cut short counts as corrupt (OpenCV
alone would return it half grey), as the dataset readers treat it; ``corrupt_files`` names the
first few, and ``describe()`` (the run summary's ``source``) carries them.
"""
from __future__ import annotations

import glob as globlib
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from runtime.imagefile import decode_file

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
CORRUPT_LISTED = 10          # corrupt image files named in ``describe()``
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class SourceError(RuntimeError):
    """A source that cannot be opened, or that produced too many unreadable frames in a row."""


@dataclass
class Frame:
    index: int               # position in the source (gaps where frames were corrupt or dropped)
    image: np.ndarray        # BGR uint8 (H, W, 3)
    t_decode: float          # seconds spent decoding this frame
    name: str = ""           # file name for image sources, "" otherwise


def _valid(img: np.ndarray | None) -> bool:
    return img is not None and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.size > 0


class Source:
    """Base class: iterate to get ``Frame`` objects; ``close()`` releases the device or file."""

    kind = "source"
    is_live = False

    def __init__(self, spec: str, max_corrupt: int = 30) -> None:
        if max_corrupt < 1:
            raise ValueError("max_corrupt must be >= 1")
        self.spec = spec
        self.max_corrupt = max_corrupt
        self.corrupt = 0
        self.dropped = 0
        self.end_reason = ""
        self.frame_size: tuple[int, int] = (0, 0)   # (h, w) of the first frame
        self.fps = 0.0
        self.corrupt_files: list[str] = []          # "path: why" for the first corrupt image files

    def __iter__(self) -> Iterator[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> dict:
        out = {"source": self.spec, "kind": self.kind, "live": self.is_live,
               "frame_size": list(self.frame_size), "fps": self.fps}
        if self.corrupt_files:
            out["corrupt_files"] = list(self.corrupt_files)
        return out

    def _corrupt_run(self, run: int) -> None:
        if run >= self.max_corrupt:
            raise SourceError(f"{self.spec}: {run} unreadable frames in a row "
                              f"(limit max_corrupt={self.max_corrupt}); stopping")


class ImageSource(Source):
    """Image files in sorted order; an unreadable file is a corrupt frame."""

    kind = "images"

    def __init__(self, spec: str, files: list[Path], max_corrupt: int = 30) -> None:
        super().__init__(spec, max_corrupt)
        if not files:
            raise SourceError(f"{spec}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        self.files = files
        self._first: np.ndarray | None = None
        why = ""
        for f in files:                 # find the first readable image now: fail before any frame
            img, why = self._read(f)
            if img is not None:
                self._first, self._first_name = img, f
                break
        if self._first is None:
            raise SourceError(f"{spec}: none of the {len(files)} image files could be read "
                              f"(last: {files[-1]}: {why})")
        self.frame_size = self._first.shape[:2]

    @staticmethod
    def _read(path: Path) -> tuple[np.ndarray | None, str]:
        img, why = decode_file(path, cv2.IMREAD_COLOR)
        if img is not None and not _valid(img):
            return None, "not a 3-channel 8-bit image"
        return img, why

    def __iter__(self) -> Iterator[Frame]:
        run = 0
        for i, f in enumerate(self.files):
            t0 = time.perf_counter()
            img, why = (self._first, "") if f == self._first_name else self._read(f)
            if f == self._first_name:
                self._first = None
            if img is None:
                if len(self.corrupt_files) < CORRUPT_LISTED:
                    self.corrupt_files.append(f"{f}: {why}")
                self.corrupt += 1
                run += 1
                self._corrupt_run(run)
                continue
            run = 0
            yield Frame(i, img, time.perf_counter() - t0, f.name)
        self.end_reason = self.end_reason or "end of images"


class VideoFileSource(Source):
    """A video file through OpenCV (FFmpeg): every frame, in order."""

    kind = "video"

    def __init__(self, spec: str, max_corrupt: int = 30) -> None:
        super().__init__(spec, max_corrupt)
        self.cap = cv2.VideoCapture(spec)
        if not self.cap.isOpened():
            raise SourceError(f"{spec}: cannot open as a video (not a video file, or its codec is unsupported)")
        self.frame_count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        t0 = time.perf_counter()
        ok, first = self.cap.read()
        self._t_first = time.perf_counter() - t0
        if not ok or not _valid(first):
            self.cap.release()
            raise SourceError(f"{spec}: opened but its first frame cannot be decoded")
        self._first: np.ndarray | None = first
        self.frame_size = first.shape[:2]

    def __iter__(self) -> Iterator[Frame]:
        index, run = 0, 0
        if self._first is not None:
            yield Frame(0, self._first, self._t_first)
            self._first = None
            index = 1
        while True:
            t0 = time.perf_counter()
            ok, img = self.cap.read()
            dt = time.perf_counter() - t0
            if ok and _valid(img):
                run = 0
                yield Frame(index, img, dt)
                index += 1
                continue
            # A failed read before the container's last frame is a damaged frame; after it, the end.
            pos = int(self.cap.get(cv2.CAP_PROP_POS_FRAMES) or index)
            if self.frame_count and max(pos, index) < self.frame_count - 1:
                self.corrupt += 1
                run += 1
                index += 1
                self._corrupt_run(run)
                continue
            break
        self.end_reason = self.end_reason or "end of video"

    def close(self) -> None:
        self.cap.release()


class LiveSource(Source):
    """A camera or network stream: a reader thread keeps only the newest frame.

    ``live=True`` on a file also lands here (useful to test the drop logic on real video).
    A stream that stops delivering ``max_corrupt`` reads in a row is treated as ended, not an error:
    cameras unplugged and streams that close end the run cleanly.
    """

    kind = "live"
    is_live = True

    def __init__(self, spec: str | int, max_corrupt: int = 30, open_timeout: float = 10.0) -> None:
        super().__init__(str(spec), max_corrupt)
        if isinstance(spec, int):
            self.kind = "camera"
        elif _URL.match(str(spec)):
            self.kind = "stream"
        self.cap = cv2.VideoCapture(spec)
        if not self.cap.isOpened():
            raise SourceError(f"{spec}: cannot open {'camera' if isinstance(spec, int) else 'stream'}"
                              f" (device missing, busy, or URL unreachable)")
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        first = None
        deadline = time.monotonic() + open_timeout
        while first is None and time.monotonic() < deadline:
            ok, img = self.cap.read()
            first = img if ok and _valid(img) else None
        if first is None:
            self.cap.release()
            raise SourceError(f"{spec}: opened but delivered no frame within {open_timeout:.0f} s")
        self.frame_size = first.shape[:2]
        self._slot: Frame | None = Frame(0, first, 0.0)
        self._cond = threading.Condition()
        self._done = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._reader, name="lanekd-source", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        index, run = 1, 0
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                ok, img = self.cap.read()
                dt = time.perf_counter() - t0
                if not (ok and _valid(img)):
                    self.corrupt += 1
                    run += 1
                    if run >= self.max_corrupt:
                        self.end_reason = f"source stopped delivering frames ({run} failed reads in a row)"
                        break
                    index += 1
                    continue
                run = 0
                with self._cond:
                    if self._slot is not None:
                        self.dropped += 1
                    self._slot = Frame(index, img, dt)
                    self._cond.notify()
                index += 1
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def __iter__(self) -> Iterator[Frame]:
        while True:
            with self._cond:
                while self._slot is None and not self._done:
                    self._cond.wait(0.1)
                if self._slot is None:
                    break
                frame, self._slot = self._slot, None
            yield frame
        self.end_reason = self.end_reason or "stream ended"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.cap.release()


def _glob_files(pattern: str) -> list[Path]:
    return sorted(Path(p) for p in globlib.glob(pattern, recursive=True)
                  if Path(p).suffix.lower() in IMAGE_SUFFIXES and Path(p).is_file())


def open_source(spec: str | int, live: bool | None = None, max_corrupt: int = 30) -> Source:
    """Open ``spec``: a camera index (``0``), a URL, a video file, an image folder or a glob.

    ``live`` forces (True) or forbids (False) newest-frame-wins reading; ``None`` decides from the
    kind (cameras and URLs are live). Raises ``SourceError`` if the source cannot deliver a frame.
    """
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        return LiveSource(int(spec), max_corrupt)
    spec = str(spec)
    if _URL.match(spec) and not spec.startswith("file://"):
        if live is False:
            raise SourceError(f"{spec}: network streams are always read live")
        return LiveSource(spec, max_corrupt)
    if any(ch in spec for ch in "*?["):
        return ImageSource(spec, _glob_files(spec), max_corrupt)
    path = Path(spec.removeprefix("file://"))
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        return ImageSource(spec, files, max_corrupt)
    if not path.exists():
        raise SourceError(f"{spec}: no such file or folder")
    if not os.access(path, os.R_OK):
        raise SourceError(f"{spec}: not readable (permission denied)")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource(spec, [path], max_corrupt)
    if live:
        return LiveSource(str(path), max_corrupt)
    return VideoFileSource(str(path), max_corrupt)
