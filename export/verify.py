"""Output parity between two builds of one model, whatever runs them.

This module knows frames, the ONNX Runtime and PyTorch runners, and the comparison; a stage that
produces another format (TensorRT) brings its own runner, and ``export.parity`` opens any two
files. So the stages import in one direction: artifacts -> verify -> onnx -> quantize -> tensorrt.
Both sides see the same real frames through the runtime's own pre-processing. Numeric parity is
checked against a tolerance per precision (FP32 1e-4, FP16 1e-2; INT8 is judged at task level
only), and task agreement is measured the way the task is scored: per-pixel arg-max agreement,
lane count match and lane-point deviation after the runtime's post-processing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from runtime.metadata import ModelMeta

Outputs = dict[str, np.ndarray]
Runner = Callable[[Outputs], Outputs]          # one frame's feeds -> that build's outputs
PRECISION_ORDER = ("fp32", "fp16", "int8")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class Tolerance:
    """Pass bounds for one precision. ``max_abs`` None = no numeric check (task level only);
    ``max_lane_dev`` is in input pixels (the model's own grid). ``min_lane_count_match`` is the
    share of frames with the same set of lanes; ``same_points`` also asks every lane to keep the
    same sampled rows (FP32 only: at lower precision a row whose peak sits at the threshold may
    come and go without changing the lane)."""

    max_abs: float | None
    min_argmax_agreement: float
    min_lane_count_match: float
    max_lane_dev: float | None
    same_points: bool = False


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs=1e-4, min_argmax_agreement=0.999, min_lane_count_match=1.0, max_lane_dev=1.0,
                      same_points=True),
    "fp16": Tolerance(max_abs=1e-2, min_argmax_agreement=0.99, min_lane_count_match=0.9, max_lane_dev=None),
    "int8": Tolerance(max_abs=None, min_argmax_agreement=0.95, min_lane_count_match=0.75, max_lane_dev=None),
}


# ----------------------------------------------------------------------------------------- frames
def synthetic_frames(k: int, seed: int = 0) -> list[np.ndarray]:
    """``k`` BGR frames from the project's synthetic road-scene generator."""
    from distill.data.synth import generate_scene

    return [generate_scene(seed, i).image for i in range(k)]


def load_frames(source: str | Path | Sequence[np.ndarray] | None, k: int = 8, seed: int = 0) -> list[np.ndarray]:
    """Up to ``k`` BGR uint8 frames from a list, an image folder, a video file, or (None) synthetic scenes."""
    import cv2

    if k <= 0:
        raise ValueError(f"need at least one frame, got k={k}")
    if source is None:
        return synthetic_frames(k, seed)
    if not isinstance(source, (str, Path)):
        frames = [np.asarray(f) for f in list(source)[:k]]
        if not frames:
            raise ValueError("no frames given")
        for i, f in enumerate(frames):
            if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
                raise ValueError(f"frame {i}: expected (H, W, 3) uint8 BGR, got {f.shape} {f.dtype}")
        return frames
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:k]
        if not files:
            raise ValueError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        frames = []
        for f in files:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f"{f}: not a readable image")
            frames.append(img)
        return frames
    if path.is_file():
        cap = cv2.VideoCapture(str(path))
        frames = []
        while len(frames) < k:
            ok, img = cap.read()
            if not ok:
                break
            frames.append(img)
        cap.release()
        if not frames:
            raise ValueError(f"{path}: no frames could be decoded (not a video OpenCV reads?)")
        return frames
    raise FileNotFoundError(f"frames source not found: {path}")


def model_inputs(meta: ModelMeta, frames: Iterable[np.ndarray]) -> list[Outputs]:
    """One feed dict per frame, built by the runtime's own pre-processing."""
    from runtime.preprocess import Preprocessor

    pre = Preprocessor(meta)
    name = meta.inputs[0].name
    return [{name: pre(f, copy=True)} for f in frames]


# ---------------------------------------------------------------------------------------- runners
class OrtRunner:
    """An ONNX model on ONNX Runtime (CPU unless ``providers`` says otherwise)."""

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None, threads: int = 0) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.path), opts, providers=list(providers or ["CPUExecutionProvider"]))
        self.output_names = [o.name for o in self.session.get_outputs()]
        half = {i.name for i in self.session.get_inputs() if i.type == "tensor(float16)"}
        self._casts = {n: np.float16 for n in half}    # an fp16-I/O model fed float32 pre-processing

    def __call__(self, feeds: Outputs) -> Outputs:
        feeds = {n: a.astype(self._casts[n]) if n in self._casts else a for n, a in feeds.items()}
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))


class TorchRunner:
    """A checkpoint wrapped exactly as ``meta`` describes the exported model (fused flags, rows)."""

    def __init__(self, checkpoint: str | Path, meta: ModelMeta) -> None:
        import torch

        from distill.checkpoint import model_from_checkpoint
        from export.deploy import DeployModule, input_rows

        model, _ = model_from_checkpoint(checkpoint)
        rows = input_rows(meta.extra.get("input_rows", []), meta.geometry.in_h) if meta.fused_postprocess else None
        self.module = DeployModule(model, meta.task, meta.fused_preprocess, meta.fused_postprocess, rows,
                                   meta.mean, meta.std).eval()
        self.output_names = self.module.output_names
        self._torch = torch

    def __call__(self, feeds: Outputs) -> Outputs:
        (x,) = feeds.values()
        with self._torch.inference_mode():
            outs = self.module(self._torch.from_numpy(np.ascontiguousarray(x)))
        return {n: o.numpy() for n, o in zip(self.output_names, outs)}


# ------------------------------------------------------------------------------------- comparison
def _decode(meta: ModelMeta, out: Outputs) -> dict[int, np.ndarray]:
    """Lanes (slot -> (N, 2) original-frame points) of one frame's outputs, via the runtime."""
    from runtime.postprocess import LaneDecodeConfig, decode_lanes, decode_lanes_from_peaks

    cfg = LaneDecodeConfig()
    exist = out["exist"][0] if "exist" in out else None
    if "peak_vals" in out:
        return decode_lanes_from_peaks(out["peak_vals"][0], out["peak_cols"][0], exist, meta.geometry, cfg)
    return decode_lanes(out["probs"][0], exist, meta.geometry, cfg)


def lane_agreement(meta: ModelMeta, ref: Outputs, test: Outputs) -> tuple[bool, bool, float | None]:
    """(same set of lanes, same rows in every lane, max |dx| in input pixels over rows both sides
    have) for one frame."""
    la, lb = _decode(meta, ref), _decode(meta, test)
    same = set(la) == set(lb)
    same_rows = same
    dev: float | None = None
    for slot in set(la) & set(lb):
        a, b = np.asarray(la[slot], np.float64), np.asarray(lb[slot], np.float64)
        if len(a) == 0 or len(b) == 0:
            continue
        ya = {round(float(y), 3): x for x, y in a}
        dxs = [abs(x - ya[round(float(y), 3)]) for x, y in b if round(float(y), 3) in ya]
        if dxs:
            d = max(dxs) * meta.geometry.scale_x
            dev = d if dev is None else max(dev, d)
        if len(a) != len(b):
            same_rows = False
    return same, same_rows, dev


def _argmax_map(out: Outputs) -> np.ndarray | None:
    if "classes" in out:
        return out["classes"]
    if "probs" in out:
        return out["probs"].argmax(axis=1)
    if "peak_cols" in out:
        return out["peak_cols"]
    return None


@dataclass
class VerifyReport:
    """Parity of ``test`` against ``ref`` over ``frames`` frames."""

    ref: str
    test: str
    precision: str
    frames: int
    outputs: dict[str, dict[str, float]] = field(default_factory=dict)   # name -> max_abs, max_rel
    argmax_agreement: float | None = None
    lane_count_match: float | None = None       # frames with the same set of lanes
    lane_rows_match: float | None = None        # frames whose lanes also keep the same sampled rows
    lane_dev_max: float | None = None        # input pixels
    lane_dev_mean: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d

    def table(self) -> str:
        lines = [f"verify {self.test} ({self.precision}) against {self.ref} on {self.frames} frame(s)",
                 f"{'output':<12} {'max_abs':>12} {'max_rel':>12}"]
        for name, s in self.outputs.items():
            lines.append(f"{name:<12} {s['max_abs']:>12.3e} {s['max_rel']:>12.3e}")
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        lines.append(f"arg-max agreement  {fmt(self.argmax_agreement, '.5f')}")
        lines.append(f"lane count match   {fmt(self.lane_count_match, '.3f')}  (same rows {fmt(self.lane_rows_match, '.3f')})")
        lines.append(f"lane dev (in px)   max {fmt(self.lane_dev_max, '.2f')}  mean {fmt(self.lane_dev_mean, '.2f')}")
        lines.append("PASS" if self.ok else "FAIL: " + "; ".join(self.failures))
        return "\n".join(lines)


def compare(meta: ModelMeta, ref: Sequence[Outputs], test: Sequence[Outputs], precision: str,
            ref_name: str = "ref", test_name: str = "test", tolerance: Tolerance | None = None) -> VerifyReport:
    """Compare per-frame outputs of two builds; ``precision`` picks the tolerance (the lower side's)."""
    if precision not in TOLERANCES:
        raise ValueError(f"unknown precision {precision!r}; expected one of {list(TOLERANCES)}")
    tol = tolerance or TOLERANCES[precision]
    rep = VerifyReport(ref_name, test_name, precision, len(ref))
    rep.failures += non_finite(ref, ref_name) + non_finite(test, test_name) + undeclared_shapes(meta, test)
    names = [n for n in ref[0] if n in test[0]]
    missing = sorted(set(ref[0]) ^ set(test[0]))
    if missing:
        rep.failures.append(f"outputs present on one side only: {missing}")
    for n in names:
        abs_err, scale = 0.0, 0.0
        for r, t in zip(ref, test):
            if r[n].shape != t[n].shape:
                rep.failures.append(f"{n}: shape {t[n].shape} != {r[n].shape}")
                break
            a, b = r[n].astype(np.float64), t[n].astype(np.float64)
            abs_err = max(abs_err, float(np.abs(a - b).max(initial=0.0)))
            scale = max(scale, float(np.abs(a).max(initial=0.0)))
        rep.outputs[n] = {"max_abs": abs_err, "max_rel": abs_err / scale if scale > 0 else abs_err}
        numeric = n in ("probs", "exist", "peak_vals")
        if numeric and tol.max_abs is not None and abs_err > tol.max_abs:
            rep.failures.append(f"{n}: max abs error {abs_err:.3e} > {tol.max_abs:.0e} ({precision})")
    maps = [(_argmax_map(r), _argmax_map(t)) for r, t in zip(ref, test)]
    if all(a is not None and b is not None and a.shape == b.shape for a, b in maps):
        agree = sum(int((a == b).sum()) for a, b in maps) / max(1, sum(a.size for a, _ in maps))
        rep.argmax_agreement = agree
        if agree < tol.min_argmax_agreement:
            rep.failures.append(f"arg-max agreement {agree:.4f} < {tol.min_argmax_agreement} ({precision})")
    if meta.task == "lanes" and meta.lane_slots > 0 and ("probs" in ref[0] or "peak_vals" in ref[0]):
        same, rows, devs = [], [], []
        for r, t in zip(ref, test):
            s, sr, d = lane_agreement(meta, r, t)
            same.append(s)
            rows.append(sr)
            if d is not None:
                devs.append(d)
        rep.lane_count_match = float(np.mean(same))
        rep.lane_rows_match = float(np.mean(rows))
        if tol.same_points and rep.lane_rows_match < 1.0:
            rep.failures.append(f"lane rows differ on {1 - rep.lane_rows_match:.0%} of frames ({precision})")
        rep.lane_dev_max = max(devs) if devs else None
        rep.lane_dev_mean = float(np.mean(devs)) if devs else None
        if rep.lane_count_match < tol.min_lane_count_match:
            rep.failures.append(f"lane count match {rep.lane_count_match:.3f} < {tol.min_lane_count_match} ({precision})")
        if tol.max_lane_dev is not None and devs and max(devs) > tol.max_lane_dev:
            rep.failures.append(f"lane points deviate up to {max(devs):.2f} input px > {tol.max_lane_dev} ({precision})")
    return rep


def non_finite(outs: Sequence[Outputs], name: str) -> list[str]:
    """A failure line per output that holds NaN or Inf on any frame (a NaN would drop out of max)."""
    bad = {}
    for i, out in enumerate(outs):
        for n, a in out.items():
            if np.issubdtype(a.dtype, np.floating) and n not in bad and not np.isfinite(a).all():
                bad[n] = i
    return [f"{name}: output {n!r} is not finite (NaN/Inf) on frame {i}" for n, i in bad.items()]


def undeclared_shapes(meta: ModelMeta, outs: Sequence[Outputs]) -> list[str]:
    """A failure line per output whose shape disagrees with the sidecar (symbolic dims match any size)."""
    declared = {o.name: o.shape for o in meta.outputs}
    fails = []
    for n, a in (outs[0].items() if outs else ()):
        want = declared.get(n)
        if want is None:
            continue
        if len(want) != a.ndim or any(isinstance(w, int) and w != g for w, g in zip(want, a.shape)):
            fails.append(f"output {n!r} has shape {list(a.shape)}, the sidecar declares {want}")
    return fails


def check_build(meta: ModelMeta, ref: Runner, test: Runner, feeds: Sequence[Outputs], precision: str,
                ref_name: str, test_name: str) -> VerifyReport:
    """Run both builds on the same ``feeds`` and compare them at ``precision``'s tolerance."""
    return compare(meta, [ref(f) for f in feeds], [test(f) for f in feeds], precision, ref_name, test_name)


def lower_precision(*precisions: str) -> str:
    """The lowest of the given precisions (its tolerance applies to the pair)."""
    return max(precisions, key=lambda p: PRECISION_ORDER.index(p) if p in PRECISION_ORDER else -1)
