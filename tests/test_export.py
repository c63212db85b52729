"""ONNX export: every student exports, passes the checker and matches PyTorch in ONNX Runtime; fused
pre/post-processing gives the same lanes; the sidecar round-trips; bad inputs fail cleanly."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from torch import nn

from distill.checkpoint import CheckpointError, save_checkpoint
from distill.data.sample import DataSpec
from distill.models.base import SegModel, TapInfo, build_model, model_names
from export.deploy import DeployModule, peaks_numpy
from export.onnx import (ExportError, build_meta, embedded_meta, export_module, export_onnx, sampling_rows)
from export.parity import verify
from export.verify import OrtRunner, compare, model_inputs
from runtime.geometry import Geometry
from runtime.metadata import ModelMeta, sidecar_path
from runtime.postprocess import decode_lanes, decode_lanes_from_peaks

torch.set_num_threads(1)

SIZE = (72, 200)       # stride-8 map 9x25 = the existence head's pooling grid
ORIG = (590, 1640)


def road_frames(n: int, seed: int = 0, size: tuple[int, int] = ORIG) -> list[np.ndarray]:
    """Small stand-in road scenes: grey asphalt, four bright lane lines converging, some noise."""
    rng = np.random.default_rng(seed)
    h, w = size
    frames = []
    for _ in range(n):
        img = np.full((h, w, 3), 70, np.uint8)
        img[: h // 3] = (180, 140, 110)
        horizon = (int(w * rng.uniform(0.45, 0.55)), h // 3)
        for k, x0 in enumerate(np.linspace(-0.2, 1.2, 4)):
            cv2.line(img, horizon, (int(x0 * w + rng.uniform(-80, 80)), h - 1), (235, 235, 235), 8 + 2 * k)
        img = cv2.add(img, rng.integers(0, 25, img.shape, dtype=np.uint8))
        frames.append(img)
    return frames


def students() -> list[str]:
    return model_names("student")


def make_checkpoint(path: Path, name: str = "erfnet", task: str = "lanes", size=SIZE, seed: int = 0,
                    **kwargs) -> Path:
    torch.manual_seed(seed)
    spec = DataSpec.lanes(4) if task == "lanes" else DataSpec("marking", ("road", "line", "arrow"), 0)
    model = build_model(name, num_classes=spec.num_classes, lane_slots=spec.lane_slots, **kwargs).eval()
    return save_checkpoint(path, {
        "model_name": name, "model_kwargs": {"num_classes": spec.num_classes, "lane_slots": spec.lane_slots,
                                             **kwargs},
        "spec": {"task": spec.task, "class_names": list(spec.class_names), "lane_slots": spec.lane_slots},
        "input_size": list(size), "crop_top": 0, "orig_size": list(ORIG), "state_dict": model.state_dict()})


class BumpLanes(SegModel):
    """A deterministic 'lane detector': lane slot k scores bright pixels near column band k.

    Random-init networks rarely produce lanes; this one does, so lane decoding is really exercised.
    """

    def __init__(self, width: int, lane_slots: int = 4) -> None:
        super().__init__()
        self.num_classes, self.lane_slots, self.has_exist = 1 + lane_slots, lane_slots, True
        self.feature_info = {"logits": TapInfo(1 + lane_slots, 1), "exist": TapInfo(lane_slots, 0)}
        cols = torch.arange(width, dtype=torch.float32)
        centres = torch.linspace(0.1, 0.9, lane_slots) * width
        bumps = torch.exp(-((cols[None] - centres[:, None]) / (0.12 * width)) ** 2)     # (L, W)
        self.register_buffer("bumps", bumps.view(1, lane_slots, 1, width))
        self.exist_bias = nn.Parameter(torch.tensor([3.0, 3.0, 3.0, -3.0]))

    def forward_taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        bright = x.mean(1, keepdim=True)                                    # normalised brightness
        lanes = 4.0 * torch.relu(bright) * self.bumps
        logits = torch.cat([torch.ones_like(bright), lanes], 1)
        exist = self.exist_bias.expand(x.shape[0], -1)
        return {"logits": logits, "exist": exist}


def bump_meta(module: DeployModule, fused_pre: bool, fused_post: bool, dynamic_batch: bool = False) -> ModelMeta:
    g = Geometry(*ORIG, *SIZE)
    ckpt = {"model_name": "bumps", "spec": {"task": "lanes", "class_names": list(DataSpec.lanes(4).class_names),
                                            "lane_slots": 4}}
    return build_meta(ckpt, g, module.output_names, fused_pre, fused_post, dynamic_batch, False)


# ------------------------------------------------------------------------------------------ tests
@pytest.fixture(scope="module")
def erfnet_onnx(tmp_path_factory) -> Path:
    """One ERFNet lane export (opset 17, dynamic batch) shared by the tests that only read it."""
    d = tmp_path_factory.mktemp("erfnet")
    ckpt = make_checkpoint(d / "m.pt", "erfnet")
    return export_onnx(ckpt, d / "model.onnx", opset=17, dynamic_batch=True, frames=road_frames(2), verify_frames=2)


def graph_input_dims(path: Path) -> list[int | str]:
    """The ONNX graph's own input dims (a name for a dynamic dim), not the sidecar's."""
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param if d.dim_param else d.dim_value for d in dims]


def check_export(out: Path, name: str) -> None:
    """Checker passes, sidecar names the model, and the default static 1x3xHxW input is what the graph has."""
    onnx.checker.check_model(onnx.load(str(out)))
    meta = ModelMeta.load(sidecar_path(out))
    assert meta.model == name and meta.precision == "fp32"
    assert meta.inputs[0].shape == [1, 3, *SIZE] and graph_input_dims(out) == [1, 3, *SIZE]


def test_dynamic_batch_opt_in(erfnet_onnx):
    """--dynamic-batch: the graph's batch dim is symbolic and two frames at once give what each gives alone."""
    meta = ModelMeta.load(sidecar_path(erfnet_onnx))
    assert meta.inputs[0].shape[0] == "batch" and isinstance(graph_input_dims(erfnet_onnx)[0], str)
    out = erfnet_onnx
    feeds = model_inputs(meta, road_frames(2, seed=3))
    run = OrtRunner(out)
    both = run({meta.inputs[0].name: np.concatenate([f[meta.inputs[0].name] for f in feeds])})
    one = run(feeds[1])
    np.testing.assert_allclose(both["probs"][1:], one["probs"], atol=1e-5)


def test_erfnet_exports_static_by_default(tmp_path):
    ckpt = make_checkpoint(tmp_path / "m.pt", "erfnet")
    check_export(export_onnx(ckpt, tmp_path / "m.onnx", frames=road_frames(1), verify_frames=1), "erfnet")


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in students() if n != "erfnet"])
def test_every_student_exports_and_matches_pytorch(name, tmp_path):
    kwargs = {"decoder": "interp"} if name == "enet" else {}
    ckpt = make_checkpoint(tmp_path / "m.pt", name, **kwargs)
    check_export(export_onnx(ckpt, tmp_path / "m.onnx", frames=road_frames(2), verify_frames=2), name)


@pytest.mark.slow
def test_enet_unpool_exports(tmp_path):
    ckpt = make_checkpoint(tmp_path / "e.pt", "enet", decoder="unpool")
    out = export_onnx(ckpt, tmp_path / "e.onnx", frames=road_frames(1), verify_frames=1)
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert ops & {"MaxUnpool", "ScatterND"}       # the dynamo exporter lowers max_unpool2d to ScatterND


def test_sidecar_round_trips_file_and_metadata_props(erfnet_onnx):
    out = erfnet_onnx
    side = ModelMeta.load(out.parent / "model.json")
    assert embedded_meta(out).to_dict() == side.to_dict()
    assert side.geometry == Geometry(*ORIG, *SIZE, 0)
    assert side.classes[0] == "background" and side.lane_slots == 4
    assert [o.name for o in side.outputs] == ["probs", "exist"]
    assert side.sample_rows[0] == 589.0 and len(side.sample_rows) == 18
    assert side.checkpoint_sha256 and side.source_checkpoint.endswith("m.pt")
    assert {"torch", "onnx", "onnxruntime"} <= set(side.versions)
    assert json.loads(json.dumps(side.to_dict())) == ModelMeta.from_dict(side.to_dict()).to_dict()
    assert max(o.version for o in onnx.load(str(out)).opset_import if o.domain == "") == 17
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.pt", "model.json", "model.onnx"]


def test_fused_peaks_equal_numpy_on_the_full_map():
    model = BumpLanes(SIZE[1]).eval()
    rows = sampling_rows(Geometry(*ORIG, *SIZE))[1]
    full, fused = DeployModule(model, "lanes"), DeployModule(model, "lanes", fused_post=True, rows=rows)
    x = torch.randn(2, 3, *SIZE)
    probs, _ = full(x)
    exist, vals, cols = fused(x)
    ref_vals, ref_cols = peaks_numpy(probs.numpy(), rows, 4)
    np.testing.assert_allclose(vals.numpy(), ref_vals, atol=1e-6)
    np.testing.assert_array_equal(cols.numpy(), ref_cols)


def test_fused_pre_and_post_give_the_same_lanes_as_unfused(tmp_path):
    model = BumpLanes(SIZE[1]).eval()
    rows = sampling_rows(Geometry(*ORIG, *SIZE))[1]
    frames = road_frames(3, seed=1)
    plain = DeployModule(model, "lanes")
    fused = DeployModule(model, "lanes", fused_pre=True, fused_post=True, rows=rows)
    meta_p, meta_f = bump_meta(plain, False, False), bump_meta(fused, True, True)
    a = export_module(plain, meta_p, tmp_path / "plain.onnx", frames=frames, verify_frames=3)
    b = export_module(fused, meta_f, tmp_path / "fused.onnx", frames=frames, verify_frames=3)
    assert [o.name for o in onnx.load(str(b)).graph.output] == ["exist", "peak_vals", "peak_cols"]
    assert meta_f.inputs[0].dtype == "uint8" and meta_f.layout == "NHWC"
    run_a, run_b = OrtRunner(a), OrtRunner(b)
    n_lanes = 0
    for fa, fb in zip(model_inputs(meta_p, frames), model_inputs(meta_f, frames)):
        oa, ob = run_a(fa), run_b(fb)
        la = decode_lanes(oa["probs"][0], oa["exist"][0], meta_p.geometry)
        lb = decode_lanes_from_peaks(ob["peak_vals"][0], ob["peak_cols"][0], ob["exist"][0], meta_f.geometry)
        assert set(la) == set(lb)
        for s in la:
            np.testing.assert_allclose(la[s], lb[s], atol=1e-9)
        n_lanes += len(la)
    assert n_lanes >= 3 * 2          # the bump model finds lanes in these frames: the check is not vacuous


def test_marking_fused_post_is_argmax(tmp_path):
    ckpt = make_checkpoint(tmp_path / "k.pt", "erfnet", task="marking")
    out = export_onnx(ckpt, tmp_path / "k.onnx", fused_post=True, frames=road_frames(1), verify_frames=1)
    meta = ModelMeta.load(sidecar_path(out))
    assert [o.name for o in meta.outputs] == ["classes"] and meta.sample_rows == []
    rep = verify(ckpt, out, frames=road_frames(2, seed=5), k=2, quiet=True, json_out=tmp_path / "v.json")
    assert rep.ok and rep.argmax_agreement >= 0.999
    assert json.loads((tmp_path / "v.json").read_text())["ok"] is True


def test_verification_catches_a_wrong_model(tmp_path):
    model = BumpLanes(SIZE[1]).eval()
    meta = bump_meta(DeployModule(model, "lanes"), False, False)
    feeds = model_inputs(meta, road_frames(2))
    with torch.no_grad():
        ref = [dict(zip(["probs", "exist"], (t.numpy() for t in DeployModule(model, "lanes")(
            torch.from_numpy(f["image"]))))) for f in feeds]
    bad = [{"probs": r["probs"][:, [0, 2, 1, 3, 4]], "exist": r["exist"]} for r in ref]
    rep = compare(meta, ref, bad, "fp32")
    assert not rep.ok and any("probs" in f for f in rep.failures)
    assert compare(meta, ref, ref, "fp32").ok


def test_a_lane_losing_one_row_fails_fp32_but_not_the_int8_task_check():
    model = BumpLanes(SIZE[1]).eval()
    meta = bump_meta(DeployModule(model, "lanes"), False, False)
    with torch.no_grad():
        ref = [dict(zip(["probs", "exist"], (t.numpy() for t in DeployModule(model, "lanes")(
            torch.from_numpy(f["image"]))))) for f in model_inputs(meta, road_frames(2))]
    bottom = int(round(meta.extra["input_rows"][0]))        # the lowest sampled row
    cut = []
    for r in ref:
        probs = r["probs"].copy()
        probs[:, 1, bottom] = 0.0                             # lane slot 1 loses its bottom sample
        cut.append({"probs": probs, "exist": r["exist"]})
    strict, task = compare(meta, ref, cut, "fp32"), compare(meta, ref, cut, "int8")
    assert task.lane_count_match == 1.0 and task.lane_rows_match < 1.0 and task.ok, task.failures
    assert any("lane rows differ" in f for f in strict.failures)


# ------------------------------------------------------------------------------------- bad inputs
def _only(tmp_path: Path, *names: str) -> None:
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_foreign_checkpoint_is_refused(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="not a lanekd checkpoint"):
        export_onnx(tmp_path / "x.pt", tmp_path / "x.onnx")
    _only(tmp_path, "x.pt")


def test_unsupported_opset_is_refused(tmp_path):
    ckpt = make_checkpoint(tmp_path / "m.pt")
    with pytest.raises(ExportError, match="opset 12 is not supported"):
        export_onnx(ckpt, tmp_path / "m.onnx", opset=12)
    _only(tmp_path, "m.pt")


def test_missing_output_folder_is_refused(tmp_path):
    ckpt = make_checkpoint(tmp_path / "m.pt")
    with pytest.raises(ExportError, match="output folder does not exist"):
        export_onnx(ckpt, tmp_path / "nope" / "m.onnx")
    _only(tmp_path, "m.pt")


def test_failed_verification_leaves_nothing(tmp_path, monkeypatch):
    import export.verify as V

    module = DeployModule(BumpLanes(SIZE[1]).eval(), "lanes")
    strict = V.Tolerance(max_abs=-1.0, min_argmax_agreement=1.0, min_lane_count_match=1.0, max_lane_dev=0.0)
    monkeypatch.setitem(V.TOLERANCES, "fp32", strict)     # nothing can pass a negative tolerance
    with pytest.raises(ExportError, match="does not match PyTorch"):
        export_module(module, bump_meta(module, False, False), tmp_path / "m.onnx", frames=road_frames(1),
                      verify_frames=1)
    _only(tmp_path)


class NaNLanes(BumpLanes):
    """A model whose logits are NaN: what a diverged training run exports."""

    def forward_taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        taps = super().forward_taps(x)
        taps["logits"] = taps["logits"] * float("nan")
        return taps


def test_nan_model_is_rejected_and_leaves_nothing(tmp_path):
    module = DeployModule(NaNLanes(SIZE[1]).eval(), "lanes")
    with pytest.raises(ExportError, match=r"'probs' is not finite"):
        export_module(module, bump_meta(module, False, False), tmp_path / "m.onnx", frames=road_frames(1),
                      verify_frames=1)
    _only(tmp_path)


def test_interrupted_export_keeps_the_previous_model_and_no_temp_files(tmp_path, monkeypatch):
    import export.onnx as O

    module = DeployModule(BumpLanes(SIZE[1]).eval(), "lanes")
    out = export_module(module, bump_meta(module, False, False), tmp_path / "m.onnx", frames=road_frames(1),
                        verify_frames=1)
    before = out.read_bytes()
    stale = tmp_path / ".m.999999999.tmp.onnx"      # a killed run's leftover (no such process)
    stale.write_bytes(b"x")

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(O, "check_build", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        export_module(module, bump_meta(module, False, False), out, frames=road_frames(1), verify_frames=1)
    assert out.read_bytes() == before
    _only(tmp_path, "m.onnx", "m.json")


def test_task_scores_through_the_runtime_match_the_training_side_pipeline(tmp_path, synth_root):
    """F1 of an exported model measured through runtime pre/post-processing equals the same model
    scored on the training side (distill transforms, torch, the same decode rows)."""
    from distill.data.dataset import build_dataset
    from distill.eval.culane import culane_counts
    from export.accuracy import task_scores
    from runtime.postprocess import LaneDecodeConfig

    geometry = Geometry(148, 410, *SIZE)
    model = BumpLanes(SIZE[1]).eval()
    module = DeployModule(model, "lanes")
    ckpt = {"model_name": "bumps", "spec": {"task": "lanes", "class_names": list(DataSpec.lanes(4).class_names),
                                            "lane_slots": 4}}
    meta = build_meta(ckpt, geometry, module.output_names, False, False, True, False)
    onnx_path = export_module(module, meta, tmp_path / "bumps.onnx", frames=road_frames(2, size=(148, 410)),
                              verify_frames=2)
    got = task_scores(onnx_path, synth_root, "test")

    data = build_dataset("culane", synth_root, "test", SIZE, 0)
    cfg = LaneDecodeConfig(rows=list(meta.sample_rows))
    counts = np.zeros(3, int)
    for i in range(len(data)):
        s, raw = data.sample(i), data.reader[i]
        with torch.no_grad():
            logits, exist = model(torch.from_numpy(s.image)[None])
            probs, exist = torch.softmax(logits, 1)[0].numpy(), torch.sigmoid(exist)[0].numpy()
        lanes = decode_lanes(probs, exist, geometry, cfg)
        counts += culane_counts(list(lanes.values()), [p for _, p in sorted(raw.lanes.items())], width=8,
                                img_size=(148, 410))[0.5]
    tp, fp, fn = counts
    assert got["images"] == len(data) and tp + fp > 0, "the bump model must predict lanes here"
    assert got["precision"] == pytest.approx(tp / (tp + fp))
    assert got["recall"] == pytest.approx(tp / (tp + fn) if tp + fn else 0.0)
