"""Quantisation-aware distillation (torchao PT2E): a tiny QAT run on CPU exports a Q/DQ ONNX that
follows its target's rules and agrees with the fake-quantised PyTorch model, runs in the runtime,
resumes to the same weights, and refuses to be exported as FP32."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
import yaml

pytest.importorskip("torchao", reason="QAT needs the qat extra (pip install -e .[qat])")

from distill.checkpoint import load_checkpoint  # noqa: E402
from distill.config import ConfigError, load_config  # noqa: E402
from distill.qat import QAT_KEY, QATConfig, QATTrainer, qat, qat_student_from_checkpoint  # noqa: E402
from distill.train import train  # noqa: E402
from distill.train_config import TrainConfig  # noqa: E402
from export.artifacts import ExportError  # noqa: E402
from export.onnx import export_onnx  # noqa: E402
from export.qat import export_qat  # noqa: E402
from export.quantize import qdq_violations  # noqa: E402
from runtime.metadata import ModelMeta, sidecar_path  # noqa: E402

SIZE = [40, 104]
torch.set_num_threads(1)        # module fixtures run before function ones: one thread for every run here
DATA = {"kind": "culane", "input_size": SIZE, "batch_size": 4, "num_workers": 0, "options": {"rotate_p": 0.0}}



def _write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def student(synth_root, tmp_path_factory) -> Path:
    """A tiny ENet (interpolation decoder, the embedded default) trained for a few steps."""
    out = tmp_path_factory.mktemp("fp32")
    cfg = load_config(TrainConfig, _write(out / "train.yaml", {
        "out": str(out), "model": {"name": "enet", "kwargs": {"decoder": "interp"}},
        "data": {**DATA, "root": str(synth_root)}, "steps": 8, "val_every": 0, "ckpt_every": 8,
        "seed": 1, "optim": {"name": "adamw", "lr": 0.005}}))
    train(cfg, quiet=True)
    return out / "last.pt"


def _qat_cfg(synth_root: Path, student: Path, out: Path, **over) -> QATConfig:
    base = {"out": str(out), "qat": {"student": str(student), "target": "tensorrt", "calib_images": 8,
                                     "freeze_observers": 0.5},
            "data": {**DATA, "root": str(synth_root)}, "steps": 4, "ckpt_every": 2, "log_every": 1,
            "deterministic": True, "seed": 5}
    for k, v in over.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return load_config(QATConfig, _write(out.parent / f"{out.name}.yaml", base))


@pytest.fixture(scope="module")
def qat_run(synth_root, student, tmp_path_factory) -> Path:
    """Four QAT steps (tensorrt target, logit KD against the FP32 student by default)."""
    out = tmp_path_factory.mktemp("qat") / "trt"
    qat(_qat_cfg(synth_root, student, out), quiet=True)
    return out


@pytest.fixture(scope="module")
def trt_onnx(qat_run, tmp_path_factory) -> Path:
    return export_qat(qat_run / "last.pt", tmp_path_factory.mktemp("onnx") / "qat_trt.onnx", verify_frames=4)


def test_qat_checkpoint_records_target_teacher_and_kd(qat_run, student):
    ckpt = load_checkpoint(qat_run / "last.pt")
    info = ckpt[QAT_KEY]
    assert ckpt["step"] == 4
    assert info["target"] == "tensorrt" and info["kd"] == ["kd"]
    assert info["teacher"] == str(student.resolve())       # no teacher named: the FP32 student watches
    assert info["calib_images"] == 8


def test_tensorrt_qat_onnx_follows_the_rules_and_agrees_with_the_fake_quantised_model(trt_onnx, qat_run):
    graph = onnx.load(str(trt_onnx)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > ops.count("QuantizeLinear")
    assert qdq_violations(trt_onnx) == []
    meta = ModelMeta.load(sidecar_path(trt_onnx))
    q = meta.extra["quantization"]
    assert meta.precision == "int8" and q["qat"] is True and q["target"] == "tensorrt"
    assert q["activation_type"] == "int8" and q["symmetric_activations"] is True
    ver = meta.extra["verification"]
    assert ver["ok"] and ver["precision"] == "int8" and ver["frames"] == 4
    assert ver["argmax_agreement"] >= 0.99 and ver["lane_count_match"] >= 0.75
    assert "verification_vs_fp32_student" in meta.extra


def test_qat_onnx_runs_in_the_runtime_unchanged(trt_onnx):
    from distill.data.synth import generate_scene
    from runtime.pipeline import load_model

    loaded = load_model(trt_onnx)
    try:
        frame = generate_scene(11, 0).image
        outputs = loaded.backend.infer({loaded.pre.input_name: loaded.pre(frame)})
        result = loaded.decoder(outputs, loaded.pre.geometry(*frame.shape[:2]))
    finally:
        loaded.close()
    assert isinstance(result.lanes, dict)


def test_qat_checkpoint_refuses_fp32_export(qat_run, tmp_path):
    with pytest.raises(ExportError, match="QAT checkpoint.*python -m distill qat-export"):
        export_onnx(qat_run / "last.pt", tmp_path / "fp32.onnx")
    assert not list(tmp_path.iterdir())


def test_interrupted_and_resumed_qat_ends_with_the_same_weights(synth_root, student, qat_run, tmp_path):
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        qat(_qat_cfg(synth_root, student, cut), quiet=True, stop_at=3)     # what Ctrl-C does after step 3
    assert load_checkpoint(cut / "last.pt")["step"] == 3
    qat(_qat_cfg(synth_root, student, cut), quiet=True)
    a, b = load_checkpoint(qat_run / "last.pt"), load_checkpoint(cut / "last.pt")
    assert b["step"] == a["step"] == 4
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k


def _bn_stats(checkpoint: Path) -> dict[str, torch.Tensor]:
    """BatchNorm running statistics by the FP32 model's names (a QAT graph prefixes them ``gm.model.``)."""
    state = load_checkpoint(checkpoint)["state_dict"]
    return {k.removeprefix("gm.model."): v for k, v in state.items() if k.endswith(("running_mean", "running_var"))}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(v, b[k]) for k, v in a.items())


def test_batchnorm_statistics_stay_the_students_unless_told_otherwise(synth_root, student, qat_run, tmp_path):
    fp32 = _bn_stats(student)
    assert fp32 and _same(_bn_stats(qat_run / "last.pt"), fp32)            # default freeze_bn: 0, from the start
    qat(_qat_cfg(synth_root, student, tmp_path / "bn", qat={"freeze_bn": 0.5}), quiet=True)
    assert not _same(_bn_stats(tmp_path / "bn" / "last.pt"), fp32)         # the first half re-estimated them


def _fake_quants(target: str) -> tuple[list, list]:
    """(activation, weight) fake-quantize modules torchao inserts into a small ENet for ``target``."""
    from distill.models.base import build_model
    from distill.qat import fake_quant_modules, prepare_student

    model = build_model("enet", num_classes=5, lane_slots=4, decoder="interp")
    fqs = fake_quant_modules(prepare_student(model, target, tuple(SIZE)))
    weights = [f for f in fqs if f.qscheme == torch.per_channel_symmetric]
    return [f for f in fqs if f not in weights], weights


def test_cpu_target_quantises_uint8_asymmetric_activations_and_conv_outputs():
    act, weights = _fake_quants("cpu")
    trt_act, trt_weights = _fake_quants("tensorrt")
    assert act and all(f.dtype == torch.uint8 and (f.quant_min, f.quant_max) == (0, 255)
                       and f.qscheme == torch.per_tensor_affine for f in act)
    assert all(f.dtype == torch.int8 and (f.quant_min, f.quant_max) == (-127, 127) and f.ch_axis in (0, 1)
               for f in weights + trt_weights)
    assert len(weights) == len(trt_weights)
    assert all(f.dtype == torch.int8 and f.qscheme == torch.per_tensor_symmetric for f in trt_act)
    assert len(act) > len(trt_act)          # cpu also quantises Conv(+BN) and Add outputs


def test_bad_qat_recipes_are_refused_in_one_line(synth_root, student, qat_run, tmp_path):
    with pytest.raises(ConfigError, match="qat.target"):
        QATTrainer(_qat_cfg(synth_root, student, tmp_path / "a", qat={"target": "gpu"}), quiet=True)
    with pytest.raises(ConfigError, match="already a QAT checkpoint"):
        QATTrainer(_qat_cfg(synth_root, qat_run / "last.pt", tmp_path / "b"), quiet=True)
    with pytest.raises(ConfigError, match="unknown key"):
        _qat_cfg(synth_root, student, tmp_path / "c", qat={"bits": 4})
    with pytest.raises(ConfigError, match="qat.freeze_bn"):
        QATTrainer(_qat_cfg(synth_root, student, tmp_path / "d", qat={"freeze_bn": 1.5}), quiet=True)
