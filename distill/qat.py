"""Quantisation-aware distillation: fine-tune a trained student as INT8 with its FP32 teacher watching.

The library is torchao's PT2E flow (``prepare_qat_pt2e`` / ``convert_pt2e``): the student is
captured with ``torch.export`` (its ``forward_taps``, so every KD method still sees its taps),
fake quantisation is inserted where ``LaneQuantizer`` annotates the graph for the chosen target,
observers are calibrated on real frames, and the ordinary lanekd ``Trainer`` fine-tunes it with
the task loss plus the recipe's KD methods (default: logit KD with the FP32 student as teacher).

Targets (the Q/DQ conventions of ``export.quantize``):
- ``tensorrt``: symmetric int8 activations (zero point 0), symmetric per-channel int8 weights on the
  output-channel axis, float biases, fake quantisation only on the inputs of Conv / ConvTranspose /
  Linear and of residual Adds (TensorRT's placement guide);
- ``cpu``: uint8 asymmetric activations, symmetric per-channel int8 weights (ONNX Runtime's fastest
  QDQ kernels), and the Conv(+BN) and Add outputs quantised too, so ONNX Runtime fuses each
  DQ -> Conv -> Q unit into an integer kernel.

Spatial dropout is removed for the fine-tune (torchao's train/eval switch does not rewrite
``feature_dropout``). BatchNorm is folded into the convolution weights as torchao's QAT conv-BN
pattern simulates; its statistics are frozen from ``qat.freeze_bn`` of the run on (default: from
the start; 1 = never), so the fine-tune normalises with the trained student's running statistics
instead of re-estimating them from a few batches of 8 (the usual QAT practice; measured effect in
benchmarks/RESULTS.md, QAT section). Observers are frozen for the last part of the run
(``qat.freeze_observers``) and never update during validation.
"""
from __future__ import annotations

import copy
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.checkpoint import QAT_KEY, CheckpointError, file_sha256, load_checkpoint, load_weights
from distill.config import ConfigError, load_config, save_config, to_dict
from distill.models.base import SegModel, build_model
from distill.train import Trainer
from distill.train_config import DataConfig, LossConfig, ModelConfig, OptimConfig, TeacherConfig, TrainConfig

QAT_TARGETS = ("tensorrt", "cpu")


# ----------------------------------------------------------------------------- config

@dataclass
class QATSettings:
    student: str = ""                 # the trained FP32 student checkpoint QAT starts from
    target: str = "tensorrt"          # tensorrt | cpu (see the module docstring)
    calib_images: int = 64            # training images (eval transforms) that calibrate the observers
    freeze_observers: float = 0.75    # fraction of the run after which the quantisation ranges stay fixed
    freeze_bn: float = 0.0            # fraction of the run after which BatchNorm statistics stay fixed (1 = never)


@dataclass
class QATConfig:
    """A QAT recipe. ``methods: null`` (the default) = logit KD; ``methods: []`` = no KD at all.
    ``teacher`` unset = the FP32 student itself. The input geometry comes from the student checkpoint."""

    out: str = "runs/qat"
    qat: QATSettings = field(default_factory=QATSettings)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig | None = None
    methods: list[dict[str, Any]] | None = None
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="adamw", lr=1e-4, weight_decay=0.0))
    loss: LossConfig = field(default_factory=LossConfig)
    steps: int = 200
    val_every: int = 0
    ckpt_every: int = 25
    log_every: int = 5
    device: str = "cpu"
    seed: int = 0
    deterministic: bool = False
    resume: str = "auto"


DEFAULT_METHODS: list[dict[str, Any]] = [{"name": "kd"}]


def check_qat_config(cfg: QATConfig) -> dict[str, Any]:
    """Refuse a recipe that cannot run, in one line; return the student checkpoint."""
    if cfg.qat.target not in QAT_TARGETS:
        raise ConfigError(f"qat.target: {cfg.qat.target!r} is not one of {QAT_TARGETS}")
    if not cfg.qat.student:
        raise ConfigError("qat.student: name the trained FP32 student checkpoint to start from")
    if cfg.qat.calib_images <= 0:
        raise ConfigError(f"qat.calib_images must be positive, got {cfg.qat.calib_images}")
    if not 0.0 < cfg.qat.freeze_observers <= 1.0:
        raise ConfigError(f"qat.freeze_observers is a fraction of the run in (0, 1], got {cfg.qat.freeze_observers}")
    if not 0.0 <= cfg.qat.freeze_bn <= 1.0:
        raise ConfigError(f"qat.freeze_bn is a fraction of the run in [0, 1], got {cfg.qat.freeze_bn}")
    ckpt = load_checkpoint(cfg.qat.student)
    if QAT_KEY in ckpt:
        raise ConfigError(f"qat.student: {cfg.qat.student} is already a QAT checkpoint; start from the FP32 student")
    return ckpt


def train_config(cfg: QATConfig, ckpt: dict[str, Any]) -> TrainConfig:
    """The ``TrainConfig`` the Trainer runs: the student's architecture and geometry, the QAT schedule."""
    kwargs = dict(ckpt["model_kwargs"])
    kwargs.pop("pretrained", None)
    data = copy.deepcopy(cfg.data)
    data.input_size = tuple(int(v) for v in ckpt["input_size"])        # type: ignore[assignment]
    data.crop_top = int(ckpt.get("crop_top", 0))
    methods = copy.deepcopy(DEFAULT_METHODS if cfg.methods is None else cfg.methods)
    teacher = cfg.teacher if cfg.teacher is not None and cfg.teacher.checkpoint else None
    if teacher is None and methods:
        teacher = TeacherConfig(cfg.qat.student)       # the FP32 student watches its INT8 self
    model = ModelConfig(name=ckpt["model_name"], kwargs=kwargs)
    return TrainConfig(out=cfg.out, model=model, data=data, teacher=teacher, methods=methods,
                       optim=copy.deepcopy(cfg.optim), loss=copy.deepcopy(cfg.loss), steps=cfg.steps,
                       val_every=cfg.val_every, ckpt_every=cfg.ckpt_every, log_every=cfg.log_every,
                       device=cfg.device, seed=cfg.seed, deterministic=cfg.deterministic, resume=cfg.resume)


# ----------------------------------------------------------------------------- the quantizer

def _fake_quant(dtype: torch.dtype, qmin: int, qmax: int, qscheme: torch.qscheme, axis: int | None = None) -> Any:
    """A torchao ``QuantizationSpec`` with a fake-quantize module (moving-average ranges for activations,
    exact per-channel min/max for weights)."""
    from torchao.quantization.pt2e import FakeQuantize, MovingAverageMinMaxObserver, PerChannelMinMaxObserver
    from torchao.quantization.pt2e.quantizer import QuantizationSpec

    qdtype = {torch.int8: torch.qint8, torch.uint8: torch.quint8}[dtype]
    if axis is None:
        ctr = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=qmin, quant_max=qmax,
                                     dtype=qdtype, qscheme=qscheme)
    else:
        ctr = FakeQuantize.with_args(observer=PerChannelMinMaxObserver, quant_min=qmin, quant_max=qmax,
                                     dtype=qdtype, qscheme=qscheme, ch_axis=axis)
    return QuantizationSpec(dtype=dtype, observer_or_fake_quant_ctr=ctr, quant_min=qmin, quant_max=qmax,
                            qscheme=qscheme, ch_axis=axis)


def activation_spec(target: str) -> Any:
    if target == "tensorrt":
        return _fake_quant(torch.int8, -128, 127, torch.per_tensor_symmetric)
    return _fake_quant(torch.uint8, 0, 255, torch.per_tensor_affine)


def weight_spec(axis: int) -> Any:
    """Symmetric per-channel int8 weights, [-127, 127] (TensorRT's and ONNX Runtime's weight range)."""
    return _fake_quant(torch.int8, -127, 127, torch.per_channel_symmetric, axis)


def _weighted_ops() -> dict[Any, int]:
    """aten ops with a quantised weight -> the weight's output-channel axis."""
    aten = torch.ops.aten
    return {aten.conv2d.default: 0, aten.conv1d.default: 0, aten.conv_transpose2d.input: 1,
            aten.conv_transpose1d.default: 1, aten.linear.default: 0}


def _batch_norms() -> set[Any]:
    aten = torch.ops.aten
    return {aten.batch_norm.default, aten._native_batch_norm_legit.default,
            aten._native_batch_norm_legit_no_training.default}


def _quantizer_base() -> type:
    from torchao.quantization.pt2e.quantizer import Quantizer

    return Quantizer


def make_quantizer(target: str) -> Any:
    """A torchao ``Quantizer`` that annotates a lanekd graph for ``target`` (tensorrt | cpu)."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    if target not in QAT_TARGETS:
        raise ValueError(f"unknown QAT target {target!r}; expected one of {QAT_TARGETS}")
    weighted, norms = _weighted_ops(), _batch_norms()
    adds = {torch.ops.aten.add.Tensor}

    class LaneQuantizer(_quantizer_base()):       # type: ignore[misc]
        """Conv / ConvTranspose / Linear inputs and weights, residual Add inputs (both operands computed,
        not a constant); for cpu the outputs too."""

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            act = activation_spec(target)
            for n in model.graph.nodes:
                if n.op != "call_function":
                    continue
                if n.target in weighted and isinstance(n.args[1], torch.fx.Node):
                    qmap = {n.args[0]: act, n.args[1]: weight_spec(weighted[n.target])}
                    n.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map=qmap, _annotated=True)
                    if target == "cpu":
                        self._annotate_output(n, act)
                elif n.target in adds and all(isinstance(a, torch.fx.Node) and a.op != "get_attr" for a in n.args[:2]):
                    n.meta["quantization_annotation"] = QuantizationAnnotation(
                        input_qspec_map={n.args[0]: act, n.args[1]: act},
                        output_qspec=act if target == "cpu" else None, _annotated=True)
            return model

        @staticmethod
        def _annotate_output(conv: torch.fx.Node, act: Any) -> None:
            """The output after a BatchNorm that only this conv feeds (folded into it), else the conv's."""
            users = list(conv.users)
            end = conv
            if len(users) == 1 and users[0].target in norms:
                end = users[0]
                if end.target is not torch.ops.aten.batch_norm.default:    # tuple-valued: its getitem 0
                    end = next((u for u in end.users if u.args[1] == 0), end)
                end.meta["quantization_annotation"] = QuantizationAnnotation(output_qspec=act, _annotated=True)
            else:
                conv.meta["quantization_annotation"].output_qspec = act

        def validate(self, model: torch.fx.GraphModule) -> None:
            pass

    return LaneQuantizer()


# ----------------------------------------------------------------------------- the fake-quantised student

class _Taps(nn.Module):
    """``forward_taps`` as ``forward``: what ``torch.export`` captures."""

    def __init__(self, model: SegModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.forward_taps(x)


def _without_dropout(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every dropout layer replaced by Identity (QAT fine-tunes without it)."""
    model = copy.deepcopy(model)
    for name, child in list(model.named_modules()):
        for cname, c in list(child.named_children()):
            if isinstance(c, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)):
                setattr(child, cname, nn.Identity())
    return model


def prepare_student(model: SegModel, target: str, input_size: tuple[int, int]) -> torch.fx.GraphModule:
    """Capture ``model.forward_taps`` (dynamic batch) and insert torchao's fake quantisation for ``target``."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    h, w = input_size
    plain = _without_dropout(model).train()
    example = (torch.randn(2, plain_in_channels(model), h, w),)
    batch = torch.export.Dim("batch", min=1, max=1024)
    graph = torch.export.export(_Taps(plain), example, dynamic_shapes={"x": {0: batch}}).module()
    prepared = prepare_qat_pt2e(graph, make_quantizer(target))
    return allow_exported_model_train_eval(prepared)


def plain_in_channels(model: nn.Module) -> int:
    """Input channels of the first convolution (3 for every image model)."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return int(conv.in_channels) if conv is not None else 3


class QATStudent(nn.Module):
    """A prepared (fake-quantised) or converted graph behind the ``SegModel`` interface.

    With ``frozen_bn`` set, ``train()`` leaves the graph's BatchNorm in its eval form: it normalises
    with the running statistics and does not update them, while everything else trains.
    """

    def __init__(self, graph: torch.fx.GraphModule, like: SegModel) -> None:
        super().__init__()
        self.gm = graph
        self.frozen_bn = False
        self.feature_info = dict(like.feature_info)
        self.num_classes, self.lane_slots, self.has_exist = like.num_classes, like.lane_slots, like.has_exist

    def train(self, mode: bool = True) -> "QATStudent":
        self.training = mode
        self.gm.train(mode and not self.frozen_bn)      # torchao's rewrite of the graph's BatchNorm ops
        return self

    def forward_taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(self.gm(x))

    def forward(self, x: torch.Tensor):
        taps = self.forward_taps(x)
        return (taps["logits"], taps["exist"]) if self.has_exist else taps["logits"]


def fake_quant_modules(module: nn.Module) -> list[nn.Module]:
    from torchao.quantization.pt2e import FakeQuantizeBase

    return [m for m in module.modules() if isinstance(m, FakeQuantizeBase)]


def set_observers(module: nn.Module, on: bool) -> None:
    for fq in fake_quant_modules(module):
        fq.enable_observer(on)


def set_fake_quant(module: nn.Module, on: bool) -> None:
    for fq in fake_quant_modules(module):
        fq.enable_fake_quant(on)


def qat_student_from_checkpoint(ckpt: dict[str, Any] | str | Path) -> tuple[QATStudent, dict[str, Any]]:
    """Rebuild a QAT checkpoint's fake-quantised student (eval mode, observers off)."""
    where = "checkpoint" if isinstance(ckpt, dict) else str(ckpt)
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    info = ckpt.get(QAT_KEY)
    if not info:
        raise CheckpointError(f"{where} is not a QAT checkpoint (no 'qat' entry); train one with "
                              f"`python -m distill qat`, or export an FP32 one with `python -m export onnx`")
    kwargs = dict(ckpt["model_kwargs"])
    kwargs.pop("pretrained", None)
    model = build_model(ckpt["model_name"], **kwargs)
    student = QATStudent(prepare_student(model, info["target"], tuple(ckpt["input_size"])), model)
    student.load_state_dict(ckpt["state_dict"])
    student.eval()
    set_observers(student, False)
    return student, ckpt


def convert_student(student: QATStudent) -> QATStudent:
    """torchao's ``convert_pt2e`` on a copy: real Q/DQ ops with int8 weights, BN folded (eval mode)."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval, move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    graph = copy.deepcopy(student.gm)
    move_exported_model_to_eval(graph)
    converted = allow_exported_model_train_eval(convert_pt2e(graph))
    out = QATStudent(converted, student)
    out.feature_info = student.feature_info
    return out.eval()


def torchao_version() -> str:
    from importlib.metadata import version

    return f"torchao {version('torchao')}"


# ----------------------------------------------------------------------------- the Trainer

def same_optimizer(opt: torch.optim.Optimizer, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """A fresh optimiser of ``opt``'s class and settings over ``params`` (the prepared graph's)."""
    accepted = inspect.signature(type(opt).__init__).parameters
    return type(opt)(params, **{k: v for k, v in opt.defaults.items() if k in accepted})


class QATTrainer(Trainer):
    """The lanekd Trainer with its student replaced by the fake-quantised, calibrated student."""

    def __init__(self, cfg: QATConfig, quiet: bool = False) -> None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("distill qat runs in one process; launch it without torchrun")
        start = check_qat_config(cfg)
        self.qat_cfg = cfg
        super().__init__(train_config(cfg, start), quiet=quiet)
        plain = self.distiller.student
        load_weights(plain, start["state_dict"], source=cfg.qat.student)
        self.say(f"qat: inserting {cfg.qat.target} fake quantisation ({torchao_version()})")
        student = QATStudent(prepare_student(plain, cfg.qat.target, tuple(self.cfg.data.input_size)), plain)
        self.distiller.student = student.to(self.device)
        self.module = self.forward_fn = self.distiller
        self.optimizer = same_optimizer(self.optimizer, [p for p in self.distiller.parameters() if p.requires_grad])
        self.calibrated = self.calibrate(cfg.qat.calib_images)
        self.qat_info = {"target": cfg.qat.target, "tool": torchao_version(),
                         "source_checkpoint": str(Path(cfg.qat.student).resolve()),
                         "source_sha256": file_sha256(cfg.qat.student), "calib_images": self.calibrated,
                         "kd": [m["name"] for m in self.cfg.methods],
                         "teacher": str(Path(self.cfg.teacher.checkpoint).resolve()) if self.cfg.teacher else ""}

    @torch.no_grad()
    def calibrate(self, k: int) -> int:
        """Observers (fake quantisation off) over ``k`` training images with eval transforms."""
        from distill.data.dataset import build_dataset, collate

        d = self.cfg.data
        frames = build_dataset(d.kind, d.root, d.train_split, tuple(d.input_size), d.crop_top, train=False,
                               **d.options)
        k = min(k, len(frames))
        student = self.student
        student.eval()
        set_fake_quant(student, False)
        set_observers(student, True)
        for i in range(0, k, d.batch_size):
            batch = collate([frames.item(j, 0) for j in range(i, min(k, i + d.batch_size))])
            student.forward_taps(batch["image"].to(self.device))
        set_fake_quant(student, True)
        self.say(f"qat: calibrated on {k} training images")
        return k

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        if self.step >= self.qat_cfg.qat.freeze_observers * self.cfg.steps:
            set_observers(self.student, False)
        self.student.frozen_bn = self.step >= self.qat_cfg.qat.freeze_bn * self.cfg.steps
        return super().train_step(batch)

    def validate(self) -> dict[str, float]:
        """Validate the fake-quantised student without letting validation frames move its ranges."""
        fqs = fake_quant_modules(self.student)
        flags = [fq.observer_enabled.clone() for fq in fqs]
        set_observers(self.student, False)
        try:
            return super().validate()
        finally:
            for fq, flag in zip(fqs, flags):
                fq.observer_enabled.copy_(flag)

    def state(self, metrics: dict[str, float]) -> dict[str, Any]:
        return {**super().state(metrics), QAT_KEY: dict(self.qat_info), "qat_config": to_dict(self.qat_cfg)}

    def maybe_resume(self) -> None:
        path = self.out / "last.pt" if self.cfg.resume == "auto" else Path(self.cfg.resume)
        if self.cfg.resume != "never" and path.is_file():
            old = load_checkpoint(path).get(QAT_KEY)
            if not old or old.get("target") != self.qat_cfg.qat.target:
                raise CheckpointError(f"{path} is not a QAT checkpoint for target {self.qat_cfg.qat.target!r}; "
                                      f"use a new out folder or resume: never")
        super().maybe_resume()


def qat(cfg: QATConfig, quiet: bool = False, stop_at: int | None = None) -> dict[str, float]:
    """Run QAT as ``cfg`` says (``stop_at``: stop there as Ctrl-C would); return the final metrics."""
    trainer = QATTrainer(cfg, quiet=quiet)
    save_config(cfg, cfg.out, name="qat.yaml")
    try:
        return trainer.run(stop_at=stop_at)
    finally:
        trainer.close()


def load_qat_config(path: str | Path | None, overrides: list[str] | None = None) -> QATConfig:
    """A QAT recipe (YAML) plus ``--set`` overrides."""
    return load_config(QATConfig, path, overrides)

