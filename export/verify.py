"""Output parity between two builds of one model: PyTorch checkpoint, ONNX Runtime, TensorRT.

Both sides see the same real frames through the runtime's own pre-processing. Numeric parity is
checked against a tolerance per precision (FP32 1e-4, FP16 1e-2; INT8 is judged at task level
only), and task agreement is measured the way the task is scored: per-pixel arg-max agreement,
lane count match and lane-point deviation after the runtime's post-processing.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from runtime.geometry import Geometry
from runtime.metadata import ModelMeta, MetadataError, sidecar_path

Outputs = dict[str, np.ndarray]
PRECISION_ORDER = ("fp32", "fp16", "int8")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class Tolerance:
    """Pass bounds for one precision. ``max_abs`` None = no numeric check (task level only);
    ``max_lane_dev`` is in input pixels (the model's own grid)."""

    max_abs: float | None
    min_argmax_agreement: float
    min_lane_count_match: float
    max_lane_dev: float | None


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs=1e-4, min_argmax_agreement=0.999, min_lane_count_match=1.0, max_lane_dev=1.0),
    "fp16": Tolerance(max_abs=1e-2, min_argmax_agreement=0.99, min_lane_count_match=0.9, max_lane_dev=None),
    "int8": Tolerance(max_abs=None, min_argmax_agreement=0.95, min_lane_count_match=0.75, max_lane_dev=None),
}


class VerifyError(RuntimeError):
    """Two builds of a model disagree beyond the tolerance of their precision."""


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

    def __call__(self, feeds: Outputs) -> Outputs:
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


def read_meta(path: str | Path) -> ModelMeta:
    """The sidecar of an exported model (``model.json`` beside it)."""
    side = sidecar_path(path)
    if not side.is_file():
        raise MetadataError(f"{path}: no sidecar {side.name} beside it (export writes one)")
    return ModelMeta.load(side)


def open_runner(path: str | Path, meta: ModelMeta | None = None) -> tuple[Callable[[Outputs], Outputs], ModelMeta]:
    """A runner for a checkpoint (needs the other side's ``meta``), ``.onnx`` or ``.engine``/``.plan``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth", ".ckpt"):
        if meta is None:
            from export.onnx import meta_from_checkpoint

            meta = meta_from_checkpoint(path)
        return TorchRunner(path, meta), meta
    own = read_meta(path)
    if suffix == ".onnx":
        return OrtRunner(path), own
    if suffix in (".engine", ".plan"):
        from export.tensorrt import EngineRunner

        return EngineRunner(path), own
    raise ValueError(f"{path}: unknown model type {suffix!r}; expected .pt, .onnx, .engine or .plan")


# ------------------------------------------------------------------------------------- comparison
def _decode(meta: ModelMeta, out: Outputs) -> dict[int, np.ndarray]:
    """Lanes (slot -> (N, 2) original-frame points) of one frame's outputs, via the runtime."""
    from runtime.postprocess import LaneDecodeConfig, decode_lanes, decode_lanes_from_peaks

    cfg = LaneDecodeConfig()
    exist = out["exist"][0] if "exist" in out else None
    if "peak_vals" in out:
        return decode_lanes_from_peaks(out["peak_vals"][0], out["peak_cols"][0], exist, meta.geometry, cfg)
    return decode_lanes(out["probs"][0], exist, meta.geometry, cfg)


def lane_agreement(meta: ModelMeta, ref: Outputs, test: Outputs) -> tuple[bool, float | None]:
    """(same set of lanes, max |dx| in input pixels over rows both sides have) for one frame."""
    la, lb = _decode(meta, ref), _decode(meta, test)
    same = set(la) == set(lb)
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
            same = False
    return same, dev


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
    lane_count_match: float | None = None
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
        lines.append(f"lane count match   {fmt(self.lane_count_match, '.3f')}")
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
        same, devs = [], []
        for r, t in zip(ref, test):
            s, d = lane_agreement(meta, r, t)
            same.append(s)
            if d is not None:
                devs.append(d)
        rep.lane_count_match = float(np.mean(same))
        rep.lane_dev_max = max(devs) if devs else None
        rep.lane_dev_mean = float(np.mean(devs)) if devs else None
        if rep.lane_count_match < tol.min_lane_count_match:
            rep.failures.append(f"lane count match {rep.lane_count_match:.3f} < {tol.min_lane_count_match} ({precision})")
        if tol.max_lane_dev is not None and devs and max(devs) > tol.max_lane_dev:
            rep.failures.append(f"lane points deviate up to {max(devs):.2f} input px > {tol.max_lane_dev} ({precision})")
    return rep


def lower_precision(*precisions: str) -> str:
    """The lowest of the given precisions (its tolerance applies to the pair)."""
    return max(precisions, key=lambda p: PRECISION_ORDER.index(p) if p in PRECISION_ORDER else -1)


def verify(a: str | Path, b: str | Path, frames: str | Path | Sequence[np.ndarray] | None = None, k: int = 8,
           json_out: str | Path | None = None, quiet: bool = False) -> VerifyReport:
    """Compare model ``b`` against reference ``a`` (checkpoint, ``.onnx`` or ``.engine``) on ``k`` real frames.

    A checkpoint side is wrapped the way the other side was exported, so pass at most one. The
    report is printed as a table (unless ``quiet``) and written as JSON to ``json_out`` if given.
    """
    a, b = Path(a), Path(b)
    ckpt = (".pt", ".pth", ".ckpt")
    if a.suffix.lower() in ckpt and b.suffix.lower() in ckpt:
        raise ValueError("verify compares an exported model with its source or another export; got two checkpoints")
    if a.suffix.lower() in ckpt:
        run_b, meta_b = open_runner(b)
        run_a, meta_a = open_runner(a, meta_b)
    else:
        run_a, meta_a = open_runner(a)
        run_b, meta_b = open_runner(b, meta_a)
    for attr in ("fused_preprocess", "fused_postprocess", "layout", "task"):
        if getattr(meta_a, attr) != getattr(meta_b, attr):
            raise ValueError(f"{a.name} and {b.name} differ in {attr} ({getattr(meta_a, attr)!r} vs "
                             f"{getattr(meta_b, attr)!r}); export both the same way to compare them")
    meta_a = _with_geometry(meta_a, meta_b.geometry)
    feeds = model_inputs(meta_b, load_frames(frames, k))
    outs_a = [run_a(f) for f in feeds]
    outs_b = [run_b(f) for f in feeds]
    precision = lower_precision(meta_a.precision, meta_b.precision)
    rep = compare(meta_b, outs_a, outs_b, precision, str(a), str(b))
    if not quiet:
        print(rep.table())
    if json_out is not None:
        write_json(json_out, rep.to_dict())
    return rep


def _with_geometry(meta: ModelMeta, geometry: Geometry) -> ModelMeta:
    if meta.geometry != geometry:
        raise ValueError(f"the two models take different inputs: {meta.geometry} vs {geometry}")
    return meta


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    os.replace(tmp, path)
    return path
