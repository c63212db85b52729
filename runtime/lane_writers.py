"""Lane writers: TuSimple JSON lines and a per-frame JSONL log for video.

CULane ``.lines.txt`` writing lives in :mod:`runtime.lane_io`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import IO, Any, Mapping, Sequence

import numpy as np

TUSIMPLE_ABSENT = -2


class NonFiniteError(ValueError):
    """A record holding NaN or infinity: JSON has no such numbers, so nothing is written."""


def _first_non_finite(obj: Any, where: str = "") -> str | None:
    """Where the first NaN/inf sits in nested dicts/lists (``lanes.1[0][0]``), or None."""
    if isinstance(obj, float) or isinstance(obj, np.floating):
        return None if math.isfinite(float(obj)) else (where or "value")
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "fc" and not np.all(np.isfinite(obj)):
            idx = tuple(int(i) for i in np.argwhere(~np.isfinite(obj))[0])
            return f"{where}{list(idx)}"
        return None
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            found = _first_non_finite(v, f"{where}.{k}" if where else str(k))
            if found:
                return found
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = _first_non_finite(v, f"{where}[{i}]")
            if found:
                return found
    return None


def finite_json(obj: Any, what: str, **kw: Any) -> str:
    """``json.dumps(obj)``, refusing NaN/inf with a message naming ``what`` and the field."""
    bad = _first_non_finite(obj)
    if bad is not None:
        raise NonFiniteError(f"{what}: {bad} is not a finite number (NaN or infinity); refusing to write "
                             f"invalid JSON -- the model or input produced non-finite values")
    return json.dumps(obj, allow_nan=False, **kw)


def lane_x_at(lane: np.ndarray, h_samples: Sequence[float], img_w: int | None = None) -> list[float]:
    """x of a lane at each h_sample: linear interpolation within the lane's y-range, else -2.

    Points are sorted by y first; rows outside [min y, max y] (and, with ``img_w``, x outside
    [0, img_w)) are absent (-2), as TuSimple expects.
    """
    p = np.asarray(lane, dtype=np.float64).reshape(-1, 2)
    hs = np.asarray(h_samples, dtype=np.float64)
    out = np.full(len(hs), float(TUSIMPLE_ABSENT))
    if len(p) == 0:
        return out.tolist()
    order = np.argsort(p[:, 1], kind="stable")
    xs, ys = p[order, 0], p[order, 1]
    inside = (hs >= ys[0]) & (hs <= ys[-1])
    if len(p) == 1:
        vals = np.full(len(hs), xs[0])
    else:
        vals = np.interp(hs, ys, xs)
    if img_w is not None:
        inside &= (vals >= 0) & (vals < img_w)
    out[inside] = np.round(vals[inside], 3)
    return out.tolist()


def tusimple_record(raw_file: str, lanes: Mapping[int, np.ndarray] | Sequence[np.ndarray],
                    h_samples: Sequence[float], run_time_ms: float,
                    img_w: int | None = None) -> dict:
    """One TuSimple prediction: ``{"raw_file", "lanes", "h_samples", "run_time"}``.

    Lanes (dict by slot, in slot order, or a list) that are absent at every h_sample are dropped:
    TuSimple would count them as false positives.
    """
    seq = [lanes[k] for k in sorted(lanes)] if isinstance(lanes, Mapping) else list(lanes)
    rows = [lane_x_at(l, h_samples, img_w) for l in seq]
    rows = [r for r in rows if any(v != TUSIMPLE_ABSENT for v in r)]
    return {"raw_file": raw_file, "lanes": rows, "h_samples": [float(h) if not float(h).is_integer()
                                                                else int(h) for h in h_samples],
            "run_time": float(run_time_ms)}


def tusimple_line(raw_file: str, lanes: Mapping[int, np.ndarray] | Sequence[np.ndarray],
                  h_samples: Sequence[float], run_time_ms: float, img_w: int | None = None) -> str:
    """:func:`tusimple_record` as one JSON line (no trailing newline)."""
    return finite_json(tusimple_record(raw_file, lanes, h_samples, run_time_ms, img_w), raw_file)


class _JsonlWriter:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] | None = open(self.path, "w")
        self.count = 0

    def _emit(self, rec: dict) -> None:
        if self._fh is None:
            raise ValueError(f"{self.path}: writer is closed")
        where = f"{self.path}: line {self.count + 1}" + (f" (frame {rec['frame']})" if "frame" in rec else "")
        self._fh.write(finite_json(rec, where) + "\n")
        self.count += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TuSimpleWriter(_JsonlWriter):
    """Writes a TuSimple prediction file, one JSON line per image."""

    def write(self, raw_file: str, lanes: Mapping[int, np.ndarray] | Sequence[np.ndarray],
              h_samples: Sequence[float], run_time_ms: float, img_w: int | None = None) -> None:
        self._emit(tusimple_record(raw_file, lanes, h_samples, run_time_ms, img_w))


class VideoLaneWriter(_JsonlWriter):
    """Per-frame lane log for video: one JSON line per frame.

    ``{"frame": i, "t": seconds, "lanes": {"1": [[x, y], ...], ...}, "exist": [p1, ...]}``;
    ``exist`` is null when the model has no existence head.
    """

    def write(self, frame_index: int, timestamp: float, lanes: Mapping[int, np.ndarray],
              exist: Sequence[float] | np.ndarray | None = None) -> None:
        rec = {
            "frame": int(frame_index),
            "t": round(float(timestamp), 6),
            "lanes": {str(int(k)): np.round(np.asarray(v, dtype=np.float64).reshape(-1, 2), 2).tolist()
                      for k, v in sorted(lanes.items())},
            "exist": None if exist is None else [round(float(e), 4) for e in np.asarray(exist).ravel()],
        }
        self._emit(rec)


def read_video_lanes(path: str | Path) -> list[dict]:
    """Read a :class:`VideoLaneWriter` file back (lanes as (N, 2) arrays keyed by int slot)."""
    out = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                rec["lanes"] = {int(k): np.asarray(v, dtype=np.float64).reshape(-1, 2)
                                for k, v in rec["lanes"].items()}
            except (json.JSONDecodeError, KeyError, AttributeError, ValueError) as exc:
                raise ValueError(f"{path}:{lineno}: not a lane record ({exc})") from None
            out.append(rec)
    return out
