"""The real-time pipeline: decode+preprocess -> infer -> postprocess+draw -> video encode, one
thread each, joined by bounded queues so decoding, drawing and encoding overlap inference (OpenCV's
decode and encode and the backends' inference release the GIL, so the threads really run at once).

``run()`` is the public entry point (the CLI's ``run`` command wraps it; tests call it). It opens
everything first -- model and sidecar, source, outputs -- so bad input fails before any frame,
and on any ending (end of source, a source that dies, Ctrl-C, an error) it finalises what was
written: the video is released, the JSONL closed, the summary written.

The stage units (``load_model``, ``Decoder``, ``StageStats``) are public too; ``runtime.bench``
times the same units one by one.
"""
from __future__ import annotations

import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from runtime.backends.base import Backend, BackendError, check_against_meta, create_backend
from runtime.geometry import Geometry
from runtime.metadata import MetadataError, ModelMeta, sidecar_path
from runtime.overlay import Overlay
from runtime.postprocess import LaneDecodeConfig, decode_lanes, decode_lanes_from_peaks
from runtime.preprocess import Preprocessor
from runtime.sinks import LaneLogSink, SinkError, VideoSink, WindowSink, write_json
from runtime.sources import Frame, Source, SourceError, open_source

STAGES = ("decode", "preprocess", "infer", "postprocess", "draw", "write")
# What an output means, by the export's naming; ``meaning`` in the sidecar may name it instead.
ROLES = ("probs", "logits", "exist", "peak_vals", "peak_cols", "classes")


# --------------------------------------------------------------------------------------------
# model loading and decoding
# --------------------------------------------------------------------------------------------
def output_roles(meta: ModelMeta) -> dict[str, str]:
    """role -> output name. A sidecar output is a role by its name, or by its ``meaning``'s
    first word (so a renamed output still works when its meaning says what it is)."""
    roles: dict[str, str] = {}
    for spec in meta.outputs:
        words = spec.meaning.split()
        role = spec.name if spec.name in ROLES else (words[0].rstrip(":,") if words else "")
        if role in ROLES:
            roles.setdefault(role, spec.name)
    return roles


@dataclass
class FrameResult:
    """What post-processing found in one frame (original-frame coordinates for lanes)."""

    lanes: dict[int, np.ndarray] = field(default_factory=dict)
    exist: np.ndarray | None = None
    classes: np.ndarray | None = None      # marking: (in_h, in_w) uint8 class map of the cropped area


class Decoder:
    """Model outputs -> ``FrameResult`` for one model, following its sidecar.

    Lanes: the fused per-row peaks when the model has them (only those are fetched), else the
    probability maps (``logits`` are soft-maxed first). Marking: the arg-max class map.
    """

    def __init__(self, meta: ModelMeta, cfg: LaneDecodeConfig | None = None) -> None:
        self.meta = meta
        self.roles = output_roles(meta)
        r = self.roles
        self.task = meta.task
        self.cfg = cfg or LaneDecodeConfig(rows=list(meta.sample_rows) or None)
        if self.task == "lanes":
            self.fused = "peak_vals" in r and "peak_cols" in r
            if not self.fused and "probs" not in r and "logits" not in r:
                raise MetadataError(f"sidecar of {meta.model!r}: a lane model needs outputs probs (or "
                                    f"logits) or peak_vals+peak_cols; it lists {[o.name for o in meta.outputs]}")
            main = [r["peak_vals"], r["peak_cols"]] if self.fused else [r.get("probs") or r["logits"]]
            self.fetch = main + ([r["exist"]] if "exist" in r else [])
        elif self.task == "marking":
            self.fused = "classes" in r
            if not self.fused and "probs" not in r and "logits" not in r:
                raise MetadataError(f"sidecar of {meta.model!r}: a marking model needs outputs classes, "
                                    f"probs or logits; it lists {[o.name for o in meta.outputs]}")
            self.fetch = [r["classes"] if self.fused else (r.get("probs") or r["logits"])]
        else:
            raise MetadataError(f"sidecar of {meta.model!r}: unknown task {meta.task!r} (lanes or marking)")
        self._cfgs: dict[tuple[int, int], LaneDecodeConfig] = {}

    def _cfg_for(self, g: Geometry) -> LaneDecodeConfig:
        """Explicit rows are in the sidecar's frame; scale them for a frame of another height."""
        base = self.meta.geometry
        if self.cfg.rows is None or g.orig_h == base.orig_h:
            return self.cfg
        cfg = self._cfgs.get((g.orig_h, g.orig_w))
        if cfg is None:
            k = g.orig_h / base.orig_h
            rows = [(y + 0.5) * k - 0.5 for y in self.cfg.rows]
            cfg = self._cfgs[(g.orig_h, g.orig_w)] = LaneDecodeConfig(**{**self.cfg.__dict__, "rows": rows})
        return cfg

    def __call__(self, outputs: Mapping[str, np.ndarray], geometry: Geometry) -> FrameResult:
        r = self.roles
        if self.task == "marking":
            if self.fused:
                return FrameResult(classes=np.asarray(outputs[r["classes"]])[0].astype(np.uint8, copy=False))
            return FrameResult(classes=np.asarray(outputs[self.fetch[0]])[0].argmax(axis=0).astype(np.uint8))
        exist = np.asarray(outputs[r["exist"]])[0] if "exist" in r else None
        if "exist" in r and "logits" in r and "probs" not in r and not self.fused:
            exist = 1.0 / (1.0 + np.exp(-exist))
        cfg = self._cfg_for(geometry)
        if self.fused:
            lanes = decode_lanes_from_peaks(outputs[r["peak_vals"]][0], outputs[r["peak_cols"]][0],
                                            exist, geometry, cfg)
        else:
            maps = np.asarray(outputs[self.fetch[0]])[0]
            if "probs" not in r:
                maps = _softmax0(maps)
            lanes = decode_lanes(maps, exist, geometry, cfg)
        return FrameResult(lanes=lanes, exist=exist)


def _softmax0(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


@dataclass
class LoadedModel:
    meta: ModelMeta
    backend: Backend
    pre: Preprocessor
    decoder: Decoder

    def close(self) -> None:
        self.backend.close()


def load_model(model: str | Path, backend: str = "auto", providers: Sequence[str] | None = None,
               threads: int | None = None, buffers: int = 1, meta: ModelMeta | None = None,
               **options: Any) -> LoadedModel:
    """Open ``model`` with the sidecar beside it and check they agree (input size, layout, outputs)."""
    path = Path(model)
    if not path.is_file():
        raise MetadataError(f"model not found: {path}")
    meta = meta or ModelMeta.load(sidecar_path(path))
    decoder = Decoder(meta)
    opts = dict(options)
    if providers:
        opts["providers"] = list(providers)
    if threads:
        opts["threads"] = int(threads)
    if str(path.suffix).lower() in (".pt2", ".pt", ".pth"):
        opts["meta"] = meta
    be = _open_backend(path, backend, decoder.fetch, opts)
    try:
        check_against_meta(be, meta)
        pre = Preprocessor(meta, buffers=buffers)
    except Exception:
        be.close()
        raise
    return LoadedModel(meta, be, pre, decoder)


def _open_backend(path: Path, backend: str, fetch: Sequence[str], opts: dict[str, Any]) -> Backend:
    """Create and open the backend. ``auto`` on a quantised file OpenVINO cannot compile falls back
    to ONNX Runtime and says why in ``describe()["auto"]``: auto promises the fastest path that runs."""
    be = create_backend(path, backend, output_names=fetch, **opts)
    try:
        return be.open()
    except BackendError as exc:
        from runtime.backends.openvino import OpenVinoCrash

        if backend != "auto" or not isinstance(exc, OpenVinoCrash):
            raise
        be = create_backend(path, "onnxruntime", output_names=fetch, **opts).open()
        be.auto_note = f"openvino skipped: {exc}"
        return be


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------
class StageStats:
    """Per-stage latencies in seconds; ``summary()`` in milliseconds."""

    def __init__(self, stages: Sequence[str] = STAGES) -> None:
        self.samples: dict[str, list[float]] = {s: [] for s in stages}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.samples.setdefault(stage, []).append(seconds)

    def last_ms(self, stage: str) -> float:
        s = self.samples.get(stage)
        return s[-1] * 1e3 if s else 0.0

    def summary(self, skip: int = 0) -> dict[str, dict[str, float]]:
        return {stage: latency_summary(v[skip:]) for stage, v in self.samples.items() if v[skip:]}


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """mean, p50, p90, p99, max (ms) and the sample count."""
    a = np.asarray(seconds, np.float64) * 1e3
    if a.size == 0:
        return {"n": 0}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"n": int(a.size), "mean": float(a.mean()), "p50": float(p50), "p90": float(p90),
            "p99": float(p99), "max": float(a.max())}


# --------------------------------------------------------------------------------------------
# the threaded pipeline
# --------------------------------------------------------------------------------------------
_END = object()


class _Stop(Exception):
    pass


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    while True:
        try:
            q.put(item, timeout=0.05)
            return
        except queue.Full:
            if stop.is_set():
                raise _Stop from None


def _get(q: queue.Queue, stop: threading.Event) -> Any:
    while True:
        try:
            return q.get(timeout=0.05)
        except queue.Empty:
            if stop.is_set():
                raise _Stop from None


@dataclass
class _Item:
    frame: Frame
    geometry: Geometry
    inputs: np.ndarray
    outputs: dict[str, np.ndarray] | None = None


class _Runner:
    """Holds the stage threads of one ``run()`` and what they share."""

    def __init__(self, lm: LoadedModel, source: Source, video: VideoSink | None, lanes: LaneLogSink | None,
                 window: WindowSink | None, stats: StageStats, hud: bool, queue_size: int,
                 max_frames: int | None) -> None:
        self.lm, self.source, self.video, self.lanes, self.window = lm, source, video, lanes, window
        self.stats, self.hud, self.max_frames = stats, hud, max_frames
        self.q_in: queue.Queue = queue.Queue(maxsize=queue_size)
        self.q_out: queue.Queue = queue.Queue(maxsize=queue_size)
        self.q_video: queue.Queue = queue.Queue(maxsize=queue_size)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.decoded = 0
        self.done = 0
        self.done_at: list[float] = []
        self.end_reason = ""
        self.overlay = Overlay(num_classes=lm.meta.num_classes if lm.meta.task == "marking" else 0)
        self._fps = 0.0
        self._t_last = 0.0

    def _guard(self, fn: Callable[[], None], downstream: queue.Queue | None) -> Callable[[], None]:
        def body() -> None:
            try:
                fn()
            except _Stop:
                pass
            except SourceError as exc:    # the source gave up: finish the frames already decoded
                self.errors.append(exc)
            except BaseException as exc:  # recorded and re-raised by run() after outputs are closed
                self.errors.append(exc)
                self.stop.set()
            finally:
                if downstream is not None:
                    try:
                        _put(downstream, _END, self.stop)
                    except _Stop:
                        pass
        return body

    def decode(self) -> None:
        pre = self.lm.pre
        it = iter(self.source)
        while not self.stop.is_set():
            if self.max_frames is not None and self.decoded >= self.max_frames:
                self.end_reason = f"max_frames={self.max_frames} reached"
                return
            t0 = time.perf_counter()
            try:
                frame = next(it)
            except StopIteration:
                return
            t1 = time.perf_counter()
            g = pre.geometry(*frame.image.shape[:2])
            x = pre(frame.image)
            self.stats.add("decode", frame.t_decode or (t1 - t0))
            self.stats.add("preprocess", time.perf_counter() - t1)
            self.decoded += 1
            _put(self.q_in, _Item(frame, g, x), self.stop)

    def infer(self) -> None:
        be, name = self.lm.backend, self.lm.pre.input_name
        copy = be.reuses_outputs
        while True:
            item = _get(self.q_in, self.stop)
            if item is _END:
                return
            t0 = time.perf_counter()
            out = be.infer({name: item.inputs})
            item.outputs = {k: v.copy() for k, v in out.items()} if copy else out
            self.stats.add("infer", time.perf_counter() - t0)
            _put(self.q_out, item, self.stop)

    def finish(self) -> None:
        fps_src = self.source.fps
        t_start = time.perf_counter()
        while True:
            item = _get(self.q_out, self.stop)
            if item is _END:
                return
            t0 = time.perf_counter()
            res = self.lm.decoder(item.outputs, item.geometry)
            t1 = time.perf_counter()
            img = item.frame.image
            if self.video is not None or self.window is not None:
                self.overlay.draw(img, res.lanes, res.classes, item.geometry.crop_top,
                                  self._hud_lines() if self.hud else None)
            t2 = time.perf_counter()
            if self.lanes is not None:
                ts = item.frame.index / fps_src if fps_src > 0 else t0 - t_start
                self.lanes.write(item.frame.index, ts, res.lanes, res.exist)
            keep_going = self.window.write(img) if self.window is not None else True
            t3 = time.perf_counter()
            self.stats.add("postprocess", t1 - t0)
            self.stats.add("draw", t2 - t1)
            if self.video is not None:             # encoded on its own thread, which adds "write"
                _put(self.q_video, (img, t3 - t2), self.stop)
            else:
                self.stats.add("write", t3 - t2)
                self._done(t3)
            if not keep_going:
                self.end_reason = "window closed by the user"
                self.stop.set()
                return

    def encode(self) -> None:
        """Video encoding, off the drawing thread: the frame drawn last is encoded while the next
        one is post-processed and drawn. ``done`` counts frames once they are in the file."""
        while True:
            item = _get(self.q_video, self.stop)
            if item is _END:
                return
            img, other_writes = item
            t0 = time.perf_counter()
            self.video.write(img)
            t1 = time.perf_counter()
            self.stats.add("write", other_writes + t1 - t0)
            self._done(t1)

    def _done(self, now: float) -> None:
        self.done += 1
        self.done_at.append(now)
        self._tick(now)

    def steady_fps(self, skip: int) -> float | None:
        """Throughput after the first ``skip`` finished frames (start-up and the first, slow
        inferences left out): frames finished per second between frame ``skip`` and the last."""
        t = self.done_at
        if len(t) < skip + 2 or t[-1] <= t[skip]:
            return None
        return (len(t) - 1 - skip) / (t[-1] - t[skip])

    def _tick(self, now: float) -> None:
        if self._t_last:
            inst = 1.0 / max(now - self._t_last, 1e-6)
            self._fps = inst if self._fps == 0 else 0.9 * self._fps + 0.1 * inst
        self._t_last = now

    def _hud_lines(self) -> list[str]:
        s = self.stats
        return [f"{self._fps:5.1f} FPS  {self.lm.backend.name}",
                "pre {:.1f} inf {:.1f} post {:.1f} draw {:.1f} ms".format(
                    s.last_ms("preprocess"), s.last_ms("infer"), s.last_ms("postprocess"), s.last_ms("draw"))]

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._guard(self.decode, self.q_in), name="lanekd-decode", daemon=True),
                   threading.Thread(target=self._guard(self.infer, self.q_out), name="lanekd-infer", daemon=True),
                   threading.Thread(target=self._guard(self.finish, self.q_video if self.video else None),
                                    name="lanekd-draw", daemon=True)]
        if self.video is not None:
            threads.append(threading.Thread(target=self._guard(self.encode, None), name="lanekd-encode",
                                            daemon=True))
        for t in threads:
            t.start()
        return threads


def run(model: str | Path, source: str | int, out: str | Path | None = None, jsonl: str | Path | None = None,
        summary: str | Path | None = None, backend: str = "auto", providers: Sequence[str] | None = None,
        threads: int | None = None, show: bool = False, max_frames: int | None = None, max_corrupt: int = 30,
        live: bool | None = None, hud: bool = True, queue_size: int = 4, verbose: bool = False) -> dict[str, Any]:
    """Run ``model`` over ``source``; write the annotated video / lane JSONL / summary JSON asked for.

    Returns the summary: frames in and out, dropped and corrupt counts, throughput FPS, per-stage
    latency (ms), why the run ended, and ``error`` (a message) when it ended on one -- too many
    corrupt frames in a row, for instance. Everything written so far is kept in every case.
    Ctrl-C stops the stage threads, waits for the encoder to finish the frame it is on, closes the
    video (a playable file with every frame written so far), writes the summary (``end_reason``
    says so) and re-raises ``KeyboardInterrupt``, so the command exits non-zero; other exceptions
    also re-raise after clean-up. Counts must be positive (``ValueError`` naming the range).
    """
    for name, value, low in (("max_frames", max_frames, 1), ("max_corrupt", max_corrupt, 0),
                             ("queue_size", queue_size, 1), ("threads", threads, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    for p in (out, jsonl, summary):
        if p is not None and Path(p).resolve() == Path(model).resolve():
            raise SinkError(f"{p}: output would overwrite the model")
    src = open_source(source, live=live, max_corrupt=max_corrupt)
    qsize = 1 if src.is_live else max(1, queue_size)
    sinks: list[Any] = []
    workers: list[threading.Thread] = []
    lm = None
    try:
        lm = load_model(model, backend, providers, threads, buffers=2 * qsize + 3)
        if jsonl is not None and lm.meta.task != "lanes":
            raise SinkError(f"{jsonl}: the lane JSONL needs a lane model; {lm.meta.model!r} is a {lm.meta.task} model")
        video = VideoSink(out, src.frame_size, src.fps or 30.0) if out is not None else None
        sinks.append(video)
        lanes = LaneLogSink(jsonl) if jsonl is not None else None
        sinks.append(lanes)
        window = WindowSink() if show else None
        sinks.append(window)
        if summary is not None:
            from runtime.sinks import check_writable
            check_writable(summary)
        stats = StageStats()
        runner = _Runner(lm, src, video, lanes, window, stats, hud, qsize, max_frames)
        if verbose:
            print(f"model   {model} ({lm.backend.name}: {lm.backend.describe()})", file=sys.stderr)
            print(f"source  {src.describe()}", file=sys.stderr)
        t0 = time.perf_counter()
        workers = runner.start()
        interrupted = False
        try:
            while any(t.is_alive() for t in workers):
                for t in workers:
                    t.join(timeout=0.1)
        except KeyboardInterrupt:
            interrupted = True
            runner.stop.set()
            _join_after_interrupt(workers)
        wall = time.perf_counter() - t0
    finally:
        writers_alive = any(t.is_alive() and t.name in _WRITERS for t in workers)
        for s in sinks:
            if s is not None and not writers_alive:    # never close a sink under a thread writing to it
                s.close()
        src.close()
        if lm is not None:
            lm.close()

    error = ""
    fatal = [e for e in runner.errors if not isinstance(e, SourceError)]
    for e in runner.errors:
        if isinstance(e, SourceError):
            error = str(e)
    end_reason = ("interrupted (Ctrl-C)" if interrupted else error or runner.end_reason or src.end_reason
                  or ("error" if fatal else "done"))
    result: dict[str, Any] = {
        "model": str(model), "task": lm.meta.task, "backend": lm.backend.describe(),
        "source": src.describe(),
        "frames_decoded": runner.decoded, "frames": runner.done,
        "dropped": src.dropped, "corrupt": src.corrupt,
        "wall_s": wall, "fps": runner.done / wall if wall > 0 else 0.0,
        "steady_fps": runner.steady_fps(min(10, runner.done // 5)),
        "latency_ms": stats.summary(),
        "end_reason": end_reason, "error": error or (repr(fatal[0]) if fatal else ""),
        "outputs": {"video": str(out) if out else None, "jsonl": str(jsonl) if jsonl else None,
                    "summary": str(summary) if summary else None},
    }
    if summary is not None:
        write_json(summary, result)
    if interrupted:
        raise KeyboardInterrupt
    if fatal:
        raise fatal[0]
    return result


_WRITERS = ("lanekd-draw", "lanekd-encode")


def _join_after_interrupt(workers: Sequence[threading.Thread], timeout: float = 10.0) -> None:
    """Wait for the stage threads to see the stop flag (each polls it every 50 ms); a second
    Ctrl-C meanwhile does not cut the wait short, so the sinks are never closed under a writer."""
    deadline = time.perf_counter() + timeout
    while any(t.is_alive() for t in workers) and time.perf_counter() < deadline:
        try:
            for t in workers:
                t.join(timeout=0.1)
        except KeyboardInterrupt:
            continue
