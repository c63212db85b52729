"""The OpenVINO backend: the stand-in and an exported ERFNet run end to end on a generated video,
and give the same lanes / arg-max as ONNX Runtime on the same frames; ``auto`` picks what
``doctor`` reports; bad options and models fail with one clear line."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino", reason="openvino is not installed (pip install .[openvino]; make setup, "
                                      "which CI runs, installs it)")

from runtime.backends.base import BackendError, choose_backend, create_backend  # noqa: E402
from runtime.backends.openvino import OpenVinoBackend, compiles_in_child  # noqa: E402
from runtime.cli import main  # noqa: E402
from runtime.doctor import doctor  # noqa: E402
from runtime.lane_writers import read_video_lanes  # noqa: E402
from runtime.pipeline import load_model, run  # noqa: E402
from runtime.standin import build_standin  # noqa: E402
from tests.test_runtime import IN_H, IN_W, lane_frame, write_video  # noqa: E402


def _lanes(path) -> list[dict]:
    return [rec["lanes"] for rec in read_video_lanes(path)]


@pytest.mark.parametrize("fused_post", [False, True])
def test_standin_lanes_agree_with_onnxruntime(tmp_path, fused_post):
    model = build_standin(tmp_path / "m.onnx", fused_post=fused_post)
    video = write_video(tmp_path / "v.mp4", 6)
    got = {}
    for be in ("onnxruntime", "openvino"):
        s = run(model, str(video), out=tmp_path / f"{be}.mp4", jsonl=tmp_path / f"{be}.jsonl", backend=be)
        assert s["frames"] == 6 and s["backend"]["backend"] == be
        got[be] = _lanes(tmp_path / f"{be}.jsonl")
    assert len(got["openvino"]) == 6 and all(len(f) == 4 for f in got["openvino"])   # four lanes found
    for a, b in zip(got["onnxruntime"], got["openvino"]):
        assert a.keys() == b.keys()
        for slot in a:
            np.testing.assert_allclose(np.asarray(a[slot]), np.asarray(b[slot]), atol=1e-3)


def test_exported_erfnet_agrees_with_onnxruntime(tmp_path):
    from export.onnx import export_onnx
    from tests.test_export import make_checkpoint

    onnx_path = export_onnx(make_checkpoint(tmp_path / "e.pt"), tmp_path / "erfnet.onnx", verify_frames=1)
    video = write_video(tmp_path / "v.mp4", 4, h=590, w=1640)
    outs = {}
    for be in ("onnxruntime", "openvino"):
        s = run(onnx_path, str(video), jsonl=tmp_path / f"{be}.jsonl", backend=be)
        assert s["frames"] == 4 and not s["error"]
        lm = load_model(onnx_path, be)
        try:
            x = lm.pre(lane_frame(1, 590, 1640))
            outs[be] = {k: np.array(v) for k, v in lm.backend.infer({lm.pre.input_name: x}).items()}
        finally:
            lm.close()
    assert _lanes(tmp_path / "onnxruntime.jsonl") == _lanes(tmp_path / "openvino.jsonl")
    ref, got = outs["onnxruntime"], outs["openvino"]
    assert ref.keys() == got.keys() and got["probs"].dtype == np.float32
    np.testing.assert_allclose(got["probs"], ref["probs"], atol=1e-4)        # FP32 kept, not bf16
    assert (got["probs"].argmax(1) == ref["probs"].argmax(1)).mean() >= 0.999


def test_auto_picks_what_doctor_reports(tmp_path):
    report = doctor()
    assert report["backends"]["openvino"]["available"] and "CPU" in report["backends"]["openvino"]["devices"]
    model = build_standin(tmp_path / "m.onnx")
    want = report["auto"][".onnx"]
    assert choose_backend(model) == want
    lm = load_model(model)
    try:
        assert lm.backend.name == want
    finally:
        lm.close()
    gpu = set(report["backends"]["onnxruntime"]["providers"]) & {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
    assert want == ("onnxruntime" if gpu else "openvino")
    lm = load_model(model, providers=["cpu"])          # ONNX Runtime options mean ONNX Runtime
    try:
        assert lm.backend.name == "onnxruntime"
    finally:
        lm.close()
    assert create_backend(model, providers=["cpu"]).name == "onnxruntime"


def test_options_and_bad_models_fail_clearly(tmp_path):
    model = build_standin(tmp_path / "m.onnx")
    with create_backend(model, "openvino", threads=1) as be:
        d = be.describe()
        assert d["config"]["INFERENCE_NUM_THREADS"] == "1" and d["config"]["PERFORMANCE_HINT"] == "LATENCY"
        assert d["config"]["INFERENCE_PRECISION_HINT"] == "f32"
        assert be.reuses_outputs and [i.shape[1:] for i in be.inputs] == [(3, IN_H, IN_W)]
    with pytest.raises(BackendError, match="inference_precision 'fp64'"):
        create_backend(model, "openvino", inference_precision="fp64").open()
    with pytest.raises(BackendError, match="device 'NPU7' is not available"):
        create_backend(model, "openvino", device="NPU7").open()
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(BackendError, match="openvino cannot load the model"):
        create_backend(broken, "openvino").open()
    assert compiles_in_child(model, "CPU", {}) == ""
    assert compiles_in_child(broken, "CPU", {}) != ""
    assert OpenVinoBackend.version()[:4].isdigit()


def test_signals_still_reach_python_after_backends_close_in_opening_order(tmp_path):
    """The crash behind 'worker crashed' in test_torch_free: every ov.Core's CPU plugin installs a
    sigaltstack on the compiling thread and puts back the one it found when destroyed, so two Cores
    released in creation order left the thread on freed memory, and the next Python signal handler
    there (torch DataLoader's SIGCHLD, Ctrl-C) killed the process with SIGSEGV. The backend's one
    Core per process keeps it alive. Checked in a child: the failure kills the process."""
    model = build_standin(tmp_path / "m.onnx")
    code = textwrap.dedent(f"""
        import gc, os, signal, subprocess, sys
        from runtime.backends.base import create_backend
        a = create_backend({str(model)!r}, "openvino").open()
        b = create_backend({str(model)!r}, "openvino").open()
        a.close(); b.close(); del a, b; gc.collect()
        signal.signal(signal.SIGCHLD, lambda *_: None)      # as torch's DataLoader sets it
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            print("ctrl-c reached python")
    """)
    p = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, (f"child died of {signal.Signals(-p.returncode).name}" if p.returncode < 0
                               else p.stderr)
    assert "ctrl-c reached python" in p.stdout


def test_cli_runs_on_openvino(tmp_path, capsys):
    model = build_standin(tmp_path / "m.onnx")
    video = write_video(tmp_path / "v.mp4", 3)
    summ = tmp_path / "s.json"
    rc = main("python -m runtime", "", ["runtime.commands"],
              ["run", "--model", str(model), "--source", str(video), "--backend", "openvino", "--threads", "1",
               "--summary", str(summ)])
    assert rc == 0 and json.loads(summ.read_text())["backend"]["backend"] == "openvino"


def test_quantised_file_stays_on_onnxruntime_under_auto(tmp_path):
    """lanekd's INT8 ENet: OpenVINO 2026.4 segfaults compiling it, and its child-process probe does
    not always catch that first. So ``auto`` runs a quantised file (sidecar int8) on ONNX Runtime
    without trying OpenVINO in-process, and ``--backend openvino`` refuses with the reason when the
    child compile dies."""
    from export.onnx import export_onnx
    from export.quantize import quantize_int8
    from runtime.backends.base import choose_backend
    from runtime.backends.openvino import OpenVinoCrash
    from tests.test_export import make_checkpoint

    fp32 = export_onnx(make_checkpoint(tmp_path / "e.pt", name="enet", size=(32, 96)), tmp_path / "e.onnx",
                       verify_frames=1)
    int8 = quantize_int8(fp32, tmp_path / "e_int8.onnx", frames="synthetic", calib_frames=2, verify_frames=1)
    assert choose_backend(int8) == "onnxruntime" and choose_backend(fp32) == "openvino"
    lm = load_model(int8)
    try:
        assert lm.backend.name == "onnxruntime"
    finally:
        lm.close()
    why = compiles_in_child(int8, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
    if why:
        with pytest.raises(OpenVinoCrash, match="cannot compile this quantised model"):
            create_backend(int8, "openvino").open()
