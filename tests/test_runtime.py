"""Runtime tests: sources, pre-processing, backends, post-processing wiring, overlay, sinks and
the threaded pipeline end to end, on tiny real artifacts (ONNX models built with onnx.helper,
short mp4v videos with drawn lanes)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from runtime.backends.base import BackendError, backend_class, choose_backend, create_backend
from runtime.backends.onnxruntime import resolve_providers
from runtime.geometry import Geometry
from runtime.lane_writers import read_video_lanes
from runtime.metadata import MetadataError, ModelMeta
from runtime.overlay import EGO_FILL, LANE_COLORS, Overlay, fill_ego_lane
from runtime.pipeline import STAGES, Decoder, load_model, run
from runtime.postprocess import LaneDecodeConfig, decode_lanes, decode_lanes_from_peaks
from runtime.preprocess import Preprocessor, preprocess_reference
from runtime.sinks import SinkError
from runtime.sources import SourceError, open_source
from runtime.standin import BIAS, LANE_BGR, WEIGHT
from runtime.standin import build_standin as build_model
from tests.helpers import read_video

# ------------------------------------------------------------------------------------------------
# tiny real artifacts: the stand-in model (runtime/standin.py) and videos of coloured lanes
# ------------------------------------------------------------------------------------------------

FRAME_H, FRAME_W = 72, 200
IN_H, IN_W = 32, 96
CROP_TOP = 8
GEOMETRY = Geometry(FRAME_H, FRAME_W, IN_H, IN_W, CROP_TOP)
SAMPLE_ROWS = [float(y) for y in range(FRAME_H - 1, 20, -5)]   # the stand-in's default rows


def lane_frame(i: int, h: int = FRAME_H, w: int = FRAME_W) -> np.ndarray:
    """A grey road with four coloured lanes that drift with ``i`` (so frames differ)."""
    img = np.full((h, w, 3), 70, np.uint8)
    img[: h // 4] = (150, 120, 90)  # "sky"
    shift = (i % 7) - 3
    sx = w / 200.0
    bottoms = [20, 70, 130, 185]
    tops = [85, 95, 108, 120]
    for slot, (b, t) in enumerate(zip(bottoms, tops), 1):
        cv2.line(img, (int((b + shift) * sx), h - 1), (int((t + shift) * sx), int(h * 0.3)),
                 LANE_BGR[slot], max(3, int(4 * sx)))
    return img


def write_video(path: Path, frames: int, h: int = FRAME_H, w: int = FRAME_W, fps: float = 10.0) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert vw.isOpened()
    for i in range(frames):
        vw.write(lane_frame(i, h, w))
    vw.release()
    return path




# ------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    """Models (plain, fused pre, fused post, marking) and a 6-frame video, built once."""
    d = tmp_path_factory.mktemp("rt")
    return {
        "dir": d,
        "plain": build_model(d / "plain.onnx"),
        "fused_pre": build_model(d / "fused_pre.onnx", fused_pre=True),
        "fused_post": build_model(d / "fused_post.onnx", fused_post=True),
        "marking": build_model(d / "marking.onnx", marking=True, fused_post=True),
        "video": write_video(d / "drive.mp4", 6),
    }


def _direct_lanes(model: Path, frames: list[np.ndarray]) -> list[dict[int, np.ndarray]]:
    """The same frames through onnxruntime and post-processing called directly (no pipeline)."""
    meta = ModelMeta.load(model.with_suffix(".json"))
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    cfg = LaneDecodeConfig(rows=meta.sample_rows)
    out = []
    for f in frames:
        x = preprocess_reference(f, meta)
        res = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {sess.get_inputs()[0].name: x})))
        g = meta.geometry.for_frame(*f.shape[:2])
        if meta.fused_postprocess:
            out.append(decode_lanes_from_peaks(res["peak_vals"][0], res["peak_cols"][0], res["exist"][0], g, cfg))
        else:
            out.append(decode_lanes(res["probs"][0], res["exist"][0], g, cfg))
    return out


def test_preprocess_matches_reference(art):
    for key in ("plain", "fused_pre"):
        meta = ModelMeta.load(art[key].with_suffix(".json"))
        pre = Preprocessor(meta, buffers=2)
        for size in ((FRAME_H, FRAME_W), (2 * FRAME_H, 2 * FRAME_W)):   # other frame sizes scale the crop
            f = cv2.resize(lane_frame(1), size[::-1])
            a = pre(f)
            np.testing.assert_allclose(a, preprocess_reference(f, meta), atol=1e-5)
        b = pre(lane_frame(2))
        assert b is not a and not np.shares_memory(a, b)                  # ring of 2 buffers
    with pytest.raises(ValueError, match="BGR uint8"):
        pre(np.zeros((10, 10), np.uint8))


def test_sidecar_input_shape_must_match_geometry(art, tmp_path):
    meta = ModelMeta.load(art["plain"].with_suffix(".json"))
    meta.inputs[0].shape = ["N", 3, IN_H + 8, IN_W]
    with pytest.raises(MetadataError, match="does not match"):
        Preprocessor(meta)


def test_model_and_sidecar_mismatch_fail_before_any_frame(art, tmp_path):
    model = build_model(tmp_path / "m.onnx", in_hw=(IN_H + 8, IN_W))
    meta = ModelMeta.load(art["plain"].with_suffix(".json"))        # sidecar for IN_H, model has IN_H+8
    meta.save(model.with_suffix(".json"))
    out = tmp_path / "out.mp4"
    with pytest.raises(MetadataError, match="m.onnx.*shape"):
        run(model, str(art["video"]), out=out)
    assert not out.exists()
    model.with_suffix(".json").unlink()
    with pytest.raises(MetadataError, match="sidecar not found"):
        run(model, str(art["video"]), out=out)
    with pytest.raises(MetadataError, match="model not found"):
        load_model(tmp_path / "absent.onnx")


def test_onnxruntime_backend_reads_io_from_model(art):
    with create_backend(art["fused_post"], output_names=["peak_cols"]) as be:
        assert [i.name for i in be.inputs] == ["input"]
        assert be.inputs[0].shape[1:] == (3, IN_H, IN_W) and be.inputs[0].dtype == "float32"
        assert {o.name for o in be.outputs} == {"exist", "peak_vals", "peak_cols"}
        out = be.infer({"input": np.zeros((1, 3, IN_H, IN_W), np.float32)})
        assert list(out) == ["peak_cols"] and out["peak_cols"].dtype == np.int32
    with pytest.raises(BackendError, match="no output"):
        create_backend(art["plain"], output_names=["nope"]).open()
    assert choose_backend("a.engine") == "tensorrt" and choose_backend("a.pt2") == "torch"
    with pytest.raises(BackendError, match="suffix"):
        choose_backend("model.bin")
    with pytest.raises(BackendError, match="runs on the onnxruntime backend"):
        choose_backend("model.onnx", "tensorrt")


def test_provider_resolution():
    avail = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers(None, avail) == avail
    assert resolve_providers(None, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert resolve_providers(["cuda"], avail) == avail
    with pytest.raises(BackendError, match="not available"):
        resolve_providers(["tensorrt"], avail)


@pytest.mark.parametrize("key", ["plain", "fused_pre", "fused_post"])
def test_end_to_end_video(art, tmp_path, key):
    out, jsonl, summ = tmp_path / "out.mp4", tmp_path / "lanes.jsonl", tmp_path / "summary.json"
    s = run(art[key], str(art["video"]), out=out, jsonl=jsonl, summary=summ)
    frames_in = read_video(art["video"])
    assert s["frames"] == s["frames_decoded"] == len(frames_in) == 6
    assert s["error"] == "" and s["corrupt"] == 0 and s["dropped"] == 0
    frames_out = read_video(out)
    assert len(frames_out) == len(frames_in) and frames_out[0].shape == frames_in[0].shape
    recs = read_video_lanes(jsonl)
    assert [r["frame"] for r in recs] == list(range(6))
    expected = _direct_lanes(art[key], frames_in)
    assert any(len(e) == 4 for e in expected)               # the tiny model does find the drawn lanes
    for rec, exp in zip(recs, expected):
        assert sorted(rec["lanes"]) == sorted(exp)
        for slot, pts in exp.items():
            np.testing.assert_allclose(rec["lanes"][slot], pts, atol=0.006)
    summary = json.loads(summ.read_text())
    assert summary["frames"] == 6 and set(summary["latency_ms"]) == set(STAGES)
    assert all(summary["latency_ms"][st]["n"] == 6 for st in STAGES)


def test_marking_model_draws_classes(art, tmp_path):
    out = tmp_path / "m.mp4"
    s = run(art["marking"], str(art["video"]), out=out, hud=False)
    assert s["frames"] == 6
    drawn, raw = read_video(out)[0], read_video(art["video"])[0]
    assert np.abs(drawn.astype(int) - raw).mean() > 1.0     # the palette blend changed the lane pixels
    with pytest.raises(SinkError, match="lane model"):
        run(art["marking"], str(art["video"]), jsonl=tmp_path / "x.jsonl")


def test_image_folder_and_glob_sources(art, tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(4):
        cv2.imwrite(str(d / f"f{i:02d}.png"), lane_frame(i))
    (d / "f02b.jpg").write_bytes(b"not an image")          # a corrupt frame: skipped and counted
    jsonl = tmp_path / "l.jsonl"
    s = run(art["plain"], str(d), jsonl=jsonl)
    assert s["frames"] == 4 and s["corrupt"] == 1
    assert len(read_video_lanes(jsonl)) == 4
    s = run(art["plain"], str(d / "*.png"), out=tmp_path / "g.mp4")
    assert s["frames"] == 4 and s["corrupt"] == 0 and len(read_video(tmp_path / "g.mp4")) == 4
    with open_source(str(d / "f01.png")) as one:
        assert [f.name for f in one] == ["f01.png"]


def test_bad_sources_fail_before_any_frame(art, tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(SourceError, match="no such file"):
        run(art["plain"], str(tmp_path / "missing.mp4"), out=out)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 2048)
    with pytest.raises(SourceError, match="bad.mp4"):
        run(art["plain"], str(bad), out=out)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no image files"):
        run(art["plain"], str(empty), out=out)
    with pytest.raises(SourceError, match="no image files"):
        open_source(str(tmp_path / "*.png"))
    assert not out.exists()


def test_many_corrupt_frames_end_run_keeping_output(art, tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    cv2.imwrite(str(d / "a0.png"), lane_frame(0))
    cv2.imwrite(str(d / "a1.png"), lane_frame(1))
    for i in range(3):
        (d / f"b{i}.png").write_bytes(b"garbage")
    cv2.imwrite(str(d / "c0.png"), lane_frame(2))             # never reached
    out, summ = tmp_path / "o.mp4", tmp_path / "s.json"
    s = run(art["plain"], str(d), out=out, summary=summ, max_corrupt=2)
    assert "2 unreadable frames in a row" in s["error"]
    assert s["frames"] == 2 and s["corrupt"] == 2
    assert len(read_video(out)) == 2                           # video finalised with what was done
    assert json.loads(summ.read_text())["error"] == s["error"]


def test_live_source_keeps_newest_frame(tmp_path):
    video = write_video(tmp_path / "v.mp4", 40)
    seen = []
    with open_source(str(video), live=True) as src:
        assert src.is_live
        for frame in src:
            seen.append(frame.index)
            time.sleep(0.03)                                   # a slow consumer
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert src.dropped > 0 and len(seen) + src.dropped == 40


def test_unwritable_outputs_fail_before_any_frame(art, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SinkError, match="cannot create its folder"):
        run(art["plain"], str(art["video"]), out=blocker / "out.mp4")
    with pytest.raises(SinkError, match="is a folder"):
        run(art["plain"], str(art["video"]), jsonl=tmp_path)
    with pytest.raises(SinkError, match="overwrite the model"):
        run(art["plain"], str(art["video"]), out=art["plain"])


def test_overlay_draws_lanes_and_blends_only_the_ego_region():
    frame = np.zeros((100, 200, 3), np.uint8)
    left = np.array([[60, 99], [90, 40]], float)
    right = np.array([[140, 99], [110, 40]], float)
    Overlay().draw(frame, {1: np.array([[10, 99], [70, 40]], float), 2: left, 3: right}, hud=["x"])
    assert (frame.reshape(-1, 3) == LANE_COLORS[1]).all(axis=1).any()
    assert frame[90, 100].tolist() != [0, 0, 0]                  # inside the ego lane: filled
    assert frame[20:39, 150:].sum() == 0                         # outside every drawing: untouched
    f2 = np.full((50, 50, 3), 100, np.uint8)
    fill_ego_lane(f2, np.array([[10, 49], [20, 10]]), np.array([[40, 49], [30, 10]]), alpha=0.5)
    assert f2[5, 25].tolist() == [100, 100, 100] and f2[0, 0].tolist() == [100, 100, 100]
    assert f2[40, 25].tolist() == [round(100 * 0.5 + c * 0.5) for c in EGO_FILL]


def test_decoder_fetches_only_what_it_decodes(art):
    meta = ModelMeta.load(art["fused_post"].with_suffix(".json"))
    assert Decoder(meta).fetch == ["peak_vals", "peak_cols", "exist"]
    meta = ModelMeta.load(art["plain"].with_suffix(".json"))
    assert Decoder(meta).fetch == ["probs", "exist"]
    meta.outputs = []
    with pytest.raises(MetadataError, match="needs outputs"):
        Decoder(meta)


def test_torch_backend_runs_pt2_like_onnx(art, tmp_path):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 5, 1)
            self.conv.weight.data = torch.from_numpy(WEIGHT.reshape(5, 3, 1, 1).copy())
            self.conv.bias.data = torch.from_numpy(BIAS.copy())

        def forward(self, x):
            logits = self.conv(x)
            return torch.softmax(logits, 1), torch.sigmoid(logits.amax(dim=(2, 3))[:, 1:])

    prog = torch.export.export(Tiny().eval(), (torch.zeros(1, 3, IN_H, IN_W),))
    pt2 = tmp_path / "tiny.pt2"
    torch.export.save(prog, str(pt2))
    ModelMeta.load(art["plain"].with_suffix(".json")).save(pt2.with_suffix(".json"))
    x = preprocess_reference(lane_frame(3), ModelMeta.load(pt2.with_suffix(".json")))
    lm_t, lm_o = load_model(pt2), load_model(art["plain"])
    try:
        a, b = lm_t.backend.infer({"input": x}), lm_o.backend.infer({"input": x})
    finally:
        lm_t.close()
        lm_o.close()
    for k in ("probs", "exist"):
        np.testing.assert_allclose(a[k], b[k], atol=1e-5)


def test_cli_run(art, tmp_path, capsys):
    from runtime.cli import main

    out = tmp_path / "cli.mp4"
    rc = main("python -m runtime", "", ["runtime.commands"],
              ["run", "--model", str(art["plain"]), "--source", str(art["video"]), "--out", str(out)])
    assert rc == 0 and len(read_video(out)) == 6
    assert f"wrote video: {out}" in capsys.readouterr().out
    rc = main("python -m runtime", "", ["runtime.commands"],
              ["run", "--model", str(art["plain"]), "--source", str(tmp_path / "nope.mp4")])
    assert rc == 2 and "no such file" in capsys.readouterr().err


@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(),
                    reason="onnxruntime has no CUDA provider here (CPU-only build or no GPU)")
def test_onnxruntime_cuda_matches_cpu(art):
    x = preprocess_reference(lane_frame(0), ModelMeta.load(art["plain"].with_suffix(".json")))
    with create_backend(art["plain"], providers=["cuda"]) as gpu, create_backend(art["plain"], providers=["cpu"]) as cpu:
        assert gpu.describe()["io_binding"]
        for _ in range(2):                                     # second call reuses the bound device input
            a, b = gpu.infer({"input": x}), cpu.infer({"input": x})
        np.testing.assert_allclose(a["probs"], b["probs"], atol=1e-4)


@pytest.mark.skipif(not backend_class("tensorrt").is_available(),
                    reason="TensorRT and cuda-python are not installed here (needs an NVIDIA GPU)")
def test_tensorrt_backend_matches_onnxruntime(art, tmp_path):
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(art["plain"].read_bytes())
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    shape = (1, 3, IN_H, IN_W)
    profile.set_shape("input", shape, shape, shape)
    config.add_optimization_profile(profile)
    engine = tmp_path / "plain.engine"
    engine.write_bytes(bytes(builder.build_serialized_network(network, config)))
    ModelMeta.load(art["plain"].with_suffix(".json")).save(engine.with_suffix(".json"))
    x = preprocess_reference(lane_frame(0), ModelMeta.load(engine.with_suffix(".json")))
    for graph in (False, True):
        with create_backend(engine, cuda_graph=graph) as t, create_backend(art["plain"]) as o:
            np.testing.assert_allclose(t.infer({"input": x})["probs"], o.infer({"input": x})["probs"], atol=1e-4)


def test_ctrl_c_closes_the_video_cleanly_and_exits_non_zero(art, tmp_path, monkeypatch, capsys):
    """Ctrl-C while the encoder thread is writing: the main thread waits for it before closing the
    video (no close under a writer), the video plays with every frame counted, the summary says
    interrupted, no temp file is left, and the command exits 130."""
    import _thread

    from runtime.cli import main
    from runtime.sinks import VideoSink

    real_write = VideoSink.write
    calls = []

    def slow_write(self, frame):
        calls.append(1)
        if len(calls) == 3:
            _thread.interrupt_main()            # what SIGINT does, while this thread is mid-write
        time.sleep(0.05)
        real_write(self, frame)

    monkeypatch.setattr(VideoSink, "write", slow_write)
    long_video = write_video(tmp_path / "long.mp4", 60)
    out, summ = tmp_path / "o" / "out.mp4", tmp_path / "o" / "s.json"
    rc = main("python -m runtime", "", ["runtime.commands"],
              ["run", "--model", str(art["plain"]), "--source", str(long_video), "--out", str(out),
               "--summary", str(summ)])
    assert rc == 130 and "interrupted" in capsys.readouterr().err
    s = json.loads(summ.read_text())
    assert s["end_reason"] == "interrupted (Ctrl-C)" and 3 <= s["frames"] < 60
    assert len(read_video(out)) == s["frames"] == len(calls)
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.mp4", "s.json"]


@pytest.mark.parametrize("flag, value", [("--max-frames", "-1"), ("--max-frames", "0"), ("--max-corrupt", "-2"),
                                         ("--threads", "0")])
def test_run_refuses_counts_out_of_range(art, tmp_path, capsys, flag, value):
    from runtime.cli import main

    with pytest.raises(SystemExit) as e:
        main("python -m runtime", "", ["runtime.commands"],
             ["run", "--model", str(art["plain"]), "--source", str(art["video"]), flag, value])
    err = capsys.readouterr().err
    assert e.value.code == 2 and flag in err and (">= 1" in err or ">= 0" in err)
    with pytest.raises(ValueError, match="max_frames must be an integer >= 1"):
        run(art["plain"], str(art["video"]), max_frames=-1)
