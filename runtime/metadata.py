"""The ``model.json`` sidecar: everything the runtime needs to run an exported model.

Export writes it next to ``model.onnx`` / ``model.engine`` (and copies it into the ONNX
``metadata_props`` under the key ``lanekd``); the runtime reads nothing else.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runtime.geometry import Geometry

FORMAT_VERSION = 1
ONNX_METADATA_KEY = "lanekd"

# ImageNet statistics on RGB 0..255, the normalisation every lanekd model is trained with.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class MetadataError(ValueError):
    """A sidecar that is missing, unreadable or inconsistent."""


@dataclass
class TensorSpec:
    name: str
    shape: list[int | str]          # symbolic dims as strings, e.g. ["batch", 3, 288, 800]
    dtype: str                      # "float32", "float16", "uint8", "int64"
    meaning: str = ""


@dataclass
class ModelMeta:
    """The sidecar's content. ``task`` is ``"lanes"`` (1 + L classes, existence) or ``"marking"``."""

    model: str
    task: str
    classes: list[str]
    lane_slots: int
    geometry: Geometry
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    layout: str = "NCHW"            # input layout: "NCHW" float, or "NHWC" uint8 when pre-processing is fused
    color: str = "RGB"              # channel order the model wants after pre-processing
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    fused_preprocess: bool = False
    fused_postprocess: bool = False
    sample_rows: list[float] = field(default_factory=list)   # lane sampling rows, original-frame y
    precision: str = "fp32"
    source_checkpoint: str = ""
    checkpoint_sha256: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["geometry"] = self.geometry.to_dict()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelMeta":
        try:
            d = dict(d)
            if d.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
                raise MetadataError(f"sidecar format {d['format_version']} is newer than this runtime's {FORMAT_VERSION}")
            d["geometry"] = Geometry.from_dict(d["geometry"])
            d["inputs"] = [TensorSpec(**t) for t in d["inputs"]]
            d["outputs"] = [TensorSpec(**t) for t in d["outputs"]]
            return cls(**d)
        except (KeyError, TypeError) as exc:
            raise MetadataError(f"malformed model metadata: {exc}") from None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ModelMeta":
        path = Path(path)
        if not path.is_file():
            raise MetadataError(f"model sidecar not found: {path}")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise MetadataError(f"{path}: not valid JSON ({exc})") from None


def sidecar_path(model_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.json`` (same folder, same stem)."""
    p = Path(model_path)
    return p.with_suffix(".json")


def culane_rows(orig_h: int = 590, step: int = 20, count: int = 18) -> list[float]:
    """The standard prob2lines sampling rows in original-frame y: ``orig_h - 1 - step*k``."""
    return [float(orig_h - 1 - step * k) for k in range(count) if orig_h - 1 - step * k >= 0]
