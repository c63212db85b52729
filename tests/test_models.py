"""The model zoo: every registered model's contract (shapes, taps, gradients, in_channels, exist
head), ONNX export parity for the students, ENet's two decoders, torchvision-named pretrained
loading, and the parameter / FLOP figures the papers report."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

from distill.models.base import MODELS, SegModel, build_model
from distill.models.flops import count_flops, count_params
from distill.models.heads import ExistHead, grid_pool

torch.set_num_threads(1)

H, W, B = 64, 160, 2
# Small variants keep the whole file fast on one core; the architecture is otherwise the default.
SMALL: dict[str, dict] = {"resnet101_deeplab": {"width": 0.25}, "resnet50_deeplab": {"width": 0.25},
                          "resnet34_deeplab": {"width": 0.25}, "resnet18_fcn": {"width": 0.25},
                          "resnet34_fcn": {"width": 0.25}, "mobilenetv2_deeplab": {"width": 0.5}}
BASE_CASES = [(name, SMALL.get(name, {})) for name in MODELS.names()]  # importing base registered them all
CASES = BASE_CASES + [("resnet34_deeplab", {"width": 0.25, "scnn": True}), ("enet", {"decoder": "interp"})]


def _ids(case) -> str:
    name, kw = case
    return name + "".join(f"-{k}={v}" for k, v in kw.items() if k != "width")


def _build(name: str, kw: dict, **extra) -> SegModel:
    torch.manual_seed(0)
    return build_model(name, **{**kw, **extra})


def test_every_family_is_registered():
    import distill.models  # noqa: F401

    expected = {"resnet101_deeplab", "resnet50_deeplab", "resnet34_deeplab", "resnet18_fcn", "resnet34_fcn",
                "enet", "erfnet", "mobilenetv2_deeplab"}
    assert expected <= set(MODELS.names())


def _check_taps(model: SegModel, taps: dict[str, torch.Tensor], h: int, w: int, b: int) -> None:
    assert set(taps) == set(model.feature_info), f"taps {sorted(taps)} != feature_info {sorted(model.feature_info)}"
    for key, info in model.feature_info.items():
        t = taps[key]
        if info.stride == 0:
            assert t.shape == (b, info.channels), key
        else:
            assert t.shape == (b, info.channels, h // info.stride, w // info.stride), (key, tuple(t.shape), info)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_forward_taps_backward_and_deploy_outputs(case):
    name, kw = case
    model = _build(name, kw, num_classes=5, lane_slots=4)
    assert model.has_exist and model.num_classes == 5 and model.lane_slots == 4
    assert model.feature_info["logits"].channels == 5 and model.feature_info["logits"].stride == 1
    assert model.feature_info["exist"].channels == 4
    model.train()
    x = torch.randn(B, 3, H, W)
    taps = model.forward_taps(x)
    _check_taps(model, taps, H, W, B)
    assert "decoder" in taps
    # Touch every tap so the gradient check also covers branches feeding only the exist head.
    loss = taps["logits"].square().mean() + taps["exist"].square().mean()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters the loss never reaches: {no_grad}"
    model.eval()
    with torch.no_grad():
        out = model(x[:1])
    assert isinstance(out, tuple) and len(out) == 2
    assert out[0].shape == (1, 5, H, W) and out[1].shape == (1, 4)
    assert torch.isfinite(out[0]).all() and torch.isfinite(out[1]).all()


@pytest.mark.parametrize("case", BASE_CASES, ids=_ids)
def test_label_input_and_no_exist_head(case):
    """LGAD's label teacher feeds a one-hot map of 1+L channels; marking models have no exist head."""
    name, kw = case
    model = _build(name, kw, num_classes=3, lane_slots=0, in_channels=5).eval()
    assert not model.has_exist and "exist" not in model.feature_info
    x = torch.randn(1, 5, H, W)
    with torch.no_grad():
        out = model(x)
        taps = model.forward_taps(x)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, H, W)
    _check_taps(model, taps, H, W, 1)
    off = _build(name, kw, num_classes=5, lane_slots=4, exist_head=False)
    assert not off.has_exist and "exist" not in off.feature_info


def test_exist_head_needs_lane_slots():
    with pytest.raises(ValueError, match="lane_slots"):
        build_model("erfnet", num_classes=5, lane_slots=0, exist_head=True)


def test_enet_decoders_share_weights_and_differ_only_in_upsampling():
    unpool = _build("enet", {}, num_classes=5, lane_slots=4).eval()
    interp = _build("enet", {"decoder": "interp"}, num_classes=5, lane_slots=4).eval()
    interp.load_state_dict(unpool.state_dict())  # identical parameter sets
    x = torch.randn(1, 3, H, W)
    with torch.no_grad():
        (a, ea), (b, eb) = unpool(x), interp(x)
    assert a.shape == b.shape == (1, 5, H, W)
    torch.testing.assert_close(ea, eb)  # the exist head reads the encoder, untouched by the decoder
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="unpool"):
        build_model("enet", num_classes=5, decoder="deconv")
    with pytest.raises(ValueError, match="divisible by 8"):
        unpool(torch.randn(1, 3, 60, 160))


def test_grid_pool_is_adaptive_pool_when_the_grid_divides():
    x = torch.randn(2, 5, 36, 100)
    torch.testing.assert_close(grid_pool(x, (9, 25)), torch.nn.functional.adaptive_avg_pool2d(x, (9, 25)))
    assert grid_pool(torch.randn(1, 5, 8, 20), (9, 25)).shape == (1, 5, 9, 25)
    with pytest.raises(ValueError, match="num_classes"):
        ExistHead(16, 5, 4, project=False)


# --- ONNX export (dynamo exporter, opset 18) and parity with PyTorch in eval mode ----------------------

def _export_and_compare(model: SegModel, h: int, w: int, tmp_path) -> None:
    import onnxruntime as ort

    model.eval()
    x = torch.randn(2, 3, h, w)
    names = ["logits", "exist"] if model.has_exist else ["logits"]
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(model, (x,), dynamo=True, opset_version=18, input_names=["image"],
                                    output_names=names, dynamic_shapes=({0: torch.export.Dim("batch")},))
    path = tmp_path / "model.onnx"
    program.save(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x1 = torch.randn(1, 3, h, w)  # a different batch size than traced: the batch axis is dynamic
    got = sess.run(None, {"image": x1.numpy()})
    with torch.no_grad():
        ref = model(x1)
    ref = ref if isinstance(ref, tuple) else (ref,)
    assert [o.name for o in sess.get_outputs()] == names
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r.numpy(), atol=1e-4, rtol=1e-4)


# erfnet at 72x200 (stride-8 map 9x25: the plain AvgPool exist path used at the standard sizes) and
# enet-interp at 64x160 (8x20: the adaptive exist path). Every student goes through the full export
# pipeline (checker, verification, sidecar) in tests/test_export.py.
ONNX_CASES = [("erfnet", {}, 72, 200), ("enet", {"decoder": "interp"}, H, W)]


@pytest.mark.parametrize("name,kw,h,w", ONNX_CASES,
                         ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else str(v))
def test_student_onnx_export_matches_pytorch(name, kw, h, w, tmp_path):
    _export_and_compare(_build(name, kw, num_classes=5, lane_slots=4), h, w, tmp_path)


# --- pretrained weights with torchvision key names ----------------------------------------------------

RESNET18_TV = {"conv1.weight": (64, 3, 7, 7), "bn1.running_mean": (64,), "layer1.0.conv1.weight": (64, 64, 3, 3),
               "layer2.0.downsample.0.weight": (128, 64, 1, 1), "layer4.1.bn2.running_var": (512,),
               "fc.weight": (1000, 512)}
MOBILENETV2_TV = {"features.0.0.weight": (32, 3, 3, 3), "features.1.conv.0.0.weight": (32, 1, 3, 3),
                  "features.1.conv.1.weight": (16, 32, 1, 1), "features.2.conv.0.0.weight": (96, 16, 1, 1),
                  "features.17.conv.2.weight": (320, 960, 1, 1), "features.17.conv.3.running_var": (320,),
                  "features.18.0.weight": (1280, 320, 1, 1), "classifier.1.weight": (1000, 1280)}


def _torchvision_like(backbone: torch.nn.Module, extra: dict[str, tuple]) -> dict[str, torch.Tensor]:
    """A state dict with torchvision's names: the backbone's own (same naming) plus the parts we skip."""
    torch.manual_seed(1)
    state = {k: torch.randn_like(v, dtype=torch.float32) if v.is_floating_point() else v.clone()
             for k, v in backbone.state_dict().items()}
    for k, shape in extra.items():
        state.setdefault(k, torch.randn(shape))
    return state


def test_resnet_loads_torchvision_state_dict(tmp_path):
    ref = build_model("resnet18_fcn", num_classes=5).backbone
    state = _torchvision_like(ref, {"fc.weight": (1000, 512), "fc.bias": (1000,)})
    for key, shape in RESNET18_TV.items():
        assert tuple(state[key].shape) == shape, key
    good = tmp_path / "resnet18.pth"
    torch.save(state, good)
    model = build_model("resnet18_fcn", num_classes=5, lane_slots=4, pretrained=str(good))
    for key, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)

    bad = dict(state)
    del bad["layer3.1.conv2.weight"]
    bad["layer4.1.bn2.running_var"] = torch.ones(256)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as err:
        build_model("resnet18_fcn", num_classes=5, pretrained=str(tmp_path / "bad.pth"))
    msg = str(err.value)
    assert "bad.pth" in msg and "layer3.1.conv2.weight" in msg and "layer4.1.bn2.running_var" in msg
    with pytest.raises(ValueError, match="width"):
        build_model("resnet18_fcn", num_classes=5, width=0.5, pretrained=str(good))
    with pytest.raises(FileNotFoundError):
        build_model("resnet18_fcn", num_classes=5, pretrained=str(tmp_path / "nope.pth"))


def test_mobilenetv2_loads_torchvision_state_dict(tmp_path):
    ref = build_model("mobilenetv2_deeplab", num_classes=5).backbone
    extra = {"features.18.0.weight": (1280, 320, 1, 1), "features.18.1.weight": (1280,),
             "features.18.1.bias": (1280,), "features.18.1.running_mean": (1280,),
             "features.18.1.running_var": (1280,), "classifier.1.weight": (1000, 1280), "classifier.1.bias": (1000,)}
    state = _torchvision_like(ref, extra)
    for key, shape in MOBILENETV2_TV.items():
        assert tuple(state[key].shape) == shape, key
    assert len([k for k in state if k.endswith(".weight") and state[k].dim() == 4]) == 52  # torchvision's conv count
    path = tmp_path / "mbv2.pth"
    torch.save({"state_dict": state}, path)
    model = build_model("mobilenetv2_deeplab", num_classes=5, pretrained=str(path))
    torch.testing.assert_close(model.backbone.features[17].conv[2].weight, state["features.17.conv.2.weight"])

    state["features.5.conv.1.0.weight"] = torch.randn(3, 1, 3, 3)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"features\.5\.conv\.1\.0\.weight"):
        build_model("mobilenetv2_deeplab", num_classes=5, pretrained=str(path))


def test_own_weights_round_trip_and_mismatch(tmp_path):
    model = _build("erfnet", {}, num_classes=5, lane_slots=4)
    torch.save(model.state_dict(), tmp_path / "erfnet.pt")
    again = build_model("erfnet", num_classes=5, lane_slots=4, pretrained=str(tmp_path / "erfnet.pt"))
    torch.testing.assert_close(again.output_conv.weight, model.output_conv.weight)
    with pytest.raises(ValueError, match="erfnet.pt"):
        build_model("erfnet", num_classes=3, lane_slots=4, pretrained=str(tmp_path / "erfnet.pt"))


# --- size and cost against the papers ---------------------------------------------------------------

def _meta(name: str, **kw) -> SegModel:
    with torch.device("meta"):
        return build_model(name, **kw)


def test_erfnet_and_enet_size_and_flops_match_the_papers():
    erf = _meta("erfnet", num_classes=5, lane_slots=4, exist_head=False)
    assert 2.0e6 < count_params(erf) < 2.2e6  # paper: 2.1 M
    assert 22.8e9 < count_flops(erf, (288, 800)) < 23.8e9  # 23.3 GFLOPs (2·MAC) at 288x800
    enet = _meta("enet", num_classes=5, lane_slots=4, exist_head=False)
    assert 0.33e6 < count_params(enet) < 0.40e6  # paper: 0.37 M
    assert 3.3e9 < count_flops(enet, (288, 800)) < 3.9e9


def test_flops_count_real_tensors_too():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(8 * 16, 2))
    assert count_flops(model, (4, 4)) == 2 * (3 * 9 * 8 * 16) + 2 * (8 * 16 * 2)
    assert count_params(model) == 3 * 9 * 8 + 8 + 8 * 16 * 2 + 2


# --- CLI ----------------------------------------------------------------------------------------------

def test_list_command(capsys):
    from runtime.cli import main

    assert main("python -m distill", "", ["distill.models.cli"], ["list", "models", "--size", "72x200"]) == 0
    out = capsys.readouterr().out
    for name in MODELS.names():
        assert name in out
    assert "decoder:" in out and "GFLOPs@72x200" in out
    assert main("python -m distill", "", ["distill.models.cli"], ["list", "methods"]) == 0
    from distill.methods.base import METHODS

    assert capsys.readouterr().out.split() == (METHODS.names() or ["(no", "KD", "methods", "registered)"])
    with pytest.raises(SystemExit):
        main("python -m distill", "", ["distill.models.cli"], ["list", "models", "--size", "big"])
