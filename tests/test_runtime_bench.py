"""`runtime.bench` and `runtime.doctor`: a complete report (JSON + PNG) on a few real frames for
two models side by side, the tegrastats parser on sample lines, the doctor report."""
from __future__ import annotations

import json

import pytest

from runtime.bench import bench, parse_tegrastats
from runtime.cli import main
from runtime.doctor import doctor, format_doctor
from runtime.pipeline import STAGES
from runtime.standin import build_standin as build_model
from tests.test_runtime import write_video

NANO = ("RAM 2448/3964MB (lfb 1x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
        "CPU [12%@1479,5%@1479,off,off] EMC_FREQ 3%@1600 GR3D_FREQ 61%@921 APE 25 "
        "PLL@41.5C CPU@43C PMIC@50C GPU@41.5C AO@48.5C thermal@42.45C "
        "POM_5V_IN 4826/4715 POM_5V_GPU 1202/1105 POM_5V_CPU 479/466")
ORIN = ("04-05-2024 10:30:01 RAM 3004/30536MB (lfb 6060x4MB) SWAP 0/15268MB (cached 0MB) "
        "CPU [2%@729,0%@729,1%@729,0%@729] EMC_FREQ 0%@2133 GR3D_FREQ 37%@[305,305] VIC_FREQ 729 APE 174 "
        "CV0@-256C CPU@44.593C SOC2@41.875C GPU@-256C tj@44.593C "
        "VDD_GPU_SOC 2388mW/2388mW VDD_CPU_CV 398mW/398mW VIN_SYS_5V0 2219mW/2219mW VDD_IN 6001mW/5800mW")


def test_parse_tegrastats_older_format():
    s = parse_tegrastats(NANO)
    assert s["ram_used_mb"] == 2448 and s["ram_total_mb"] == 3964
    assert s["cpu_load"] == [12, 5, None, None]
    assert s["gpu_load"] == 61
    assert s["temps_c"]["GPU"] == 41.5 and s["temps_c"]["thermal"] == 42.45
    assert s["rails_mw"]["POM_5V_GPU"] == {"now_mw": 1202, "avg_mw": 1105}
    assert s["power_mw"] == 4826


def test_parse_tegrastats_orin_format():
    s = parse_tegrastats(ORIN)
    assert s["gpu_load"] == 37 and s["cpu_load"] == [2, 0, 1, 0]
    assert "GPU" not in s["temps_c"] and s["temps_c"]["tj"] == 44.593      # -256C: sensor off
    assert s["rails_mw"]["VDD_IN"] == {"now_mw": 6001, "avg_mw": 5800}
    assert s["power_mw"] == 6001                                           # the board's input rail
    assert parse_tegrastats("garbage")["power_mw"] is None


def test_bench_two_models_json_and_png(tmp_path):
    torch_free = pytest.importorskip("matplotlib")
    assert torch_free
    a = build_model(tmp_path / "a.onnx")
    b = build_model(tmp_path / "b.onnx", fused_post=True)
    video = write_video(tmp_path / "v.mp4", 5)       # shorter than warm-up + frames: replayed
    js, png = tmp_path / "r" / "bench.json", tmp_path / "r" / "bench.png"
    r = bench([a, b], str(video), frames=6, warmup=2, json_path=js, png_path=png, quiet=True)
    data = json.loads(js.read_text())
    assert data["frames"] == 6 and len(data["models"]) == 2
    for m in data["models"]:
        assert set(m["stages_ms"]) == set(STAGES) and m["frames"] == 6
        for st in STAGES:
            assert set(m["stages_ms"][st]) == {"n", "mean", "p50", "p90", "p99", "max"}
            assert m["stages_ms"][st]["p50"] <= m["stages_ms"][st]["max"]
        assert m["serial_fps"] > 0 and m["infer_only_fps"] > 0 and m["pipelined_fps"] > 0
        assert m["pipelined_no_video_fps"] > 0
        assert m["pipelined_vs_infer_only"] == pytest.approx(m["pipelined_fps"] / m["infer_only_fps"])
        assert len(m["per_frame_total_ms"]) == 6
    assert data["models"][0]["vs_first"]["serial_fps"] == 1.0
    assert data["models"][1]["fused_post"] and not data["models"][0]["fused_post"]
    assert data["system"]["cores"] >= 1 and "onnxruntime" in data["system"]["libraries"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert r["json"] == str(js)


def test_bench_cli_and_errors(tmp_path, capsys):
    a = build_model(tmp_path / "a.onnx")
    video = write_video(tmp_path / "v.mp4", 4)
    rc = main("python -m runtime", "", ["runtime.commands"],
              ["bench", "--model", str(a), "--source", str(video), "--frames", "3", "--warmup", "1",
               "--no-pipelined", "--json", str(tmp_path / "b.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "infer-only FPS" in out and (tmp_path / "b.json").exists()
    with pytest.raises(ValueError, match="at least one"):
        bench([], str(video))


def test_doctor_reports_backends(capsys):
    r = doctor()
    assert r["backends"]["onnxruntime"]["available"]
    assert "CPUExecutionProvider" in r["backends"]["onnxruntime"]["providers"]
    trt = r["backends"]["tensorrt"]
    assert trt["available"] or "not installed" in trt["reason"]
    assert "onnxruntime" in format_doctor(r)
    assert main("python -m runtime", "", ["runtime.commands"], ["doctor", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backends"]["onnxruntime"]["available"]


def test_bench_every_backend_names_the_winner(tmp_path, capsys):
    """--backends all: each model on each backend that takes it here, interleaved rounds, medians,
    the fastest named; the CLI prints it."""
    from runtime.bench import backends_for

    a = build_model(tmp_path / "a.onnx")
    b = build_model(tmp_path / "b.onnx", fused_post=True)
    video = write_video(tmp_path / "v.mp4", 4)
    want = backends_for(a, "all")
    assert "onnxruntime" in want and "tensorrt" not in want and "torch" not in want     # .onnx only
    js = tmp_path / "all.json"
    rc = main("python -m runtime", "", ["runtime.commands"],
              ["bench", "--model", str(a), "--model", str(b), "--source", str(video), "--frames", "3",
               "--warmup", "1", "--backends", "all", "--rounds", "2", "--json", str(js)])
    out = capsys.readouterr().out
    data = json.loads(js.read_text())
    assert rc == 0 and "fastest:" in out and data["rounds"] == 2 and data["skipped"] == []
    got = sorted((m["model"], m["backend"]["backend"]) for m in data["models"])
    assert got == sorted((str(p), be) for p in (a, b) for be in want)
    for m in data["models"]:
        assert len(m["rounds"]["serial_fps"]) == 2 and m["pipelined_fps"] > 0 and m["precision"] == "fp32"
        assert min(m["rounds"]["serial_fps"]) <= m["serial_fps"] <= max(m["rounds"]["serial_fps"])
    best = max(data["models"], key=lambda m: m["pipelined_fps"])
    assert data["winner"]["model"] == best["model"] and data["winner"]["backend"] == best["backend"]["backend"]
    with pytest.raises(Exception, match="unknown backend"):
        bench([a], str(video), backends="onnxruntime,nope")


def test_cpu_paths_benchmark_table_and_json_are_complete(tmp_path, capsys):
    """benchmarks/bench_cpu_paths on a tiny ENet: every by-hand and lanekd path timed or skipped
    with its reason, the agreement and the ratio of the bests, the ORT settings table, the PNG."""
    pytest.importorskip("openvino", reason="openvino is not installed (pip install .[openvino]; make setup, "
                                          "which CI runs, installs it)")
    from benchmarks.bench_cpu_paths import main as cpu_paths

    js = tmp_path / "cpu.json"
    assert cpu_paths(["--quick", "--no-compile", "--out", str(js)]) == 0
    out = capsys.readouterr().out
    (r,) = json.loads(js.read_text())["students"]
    hand = {"hand: PyTorch eager", "hand: ONNX Runtime FP32", "hand: ONNX Runtime INT8",
            "hand: OpenVINO FP32 file, defaults (bf16 here)"}
    ours = {"lanekd: onnxruntime FP32", "lanekd: onnxruntime INT8", "lanekd: openvino FP32",
            "lanekd: openvino INT8", "lanekd: openvino FP32 (bf16 opt-in)", "lanekd: openvino INT8 (bf16 opt-in)"}
    assert hand | ours <= set(r["median_ms"]) | set(r["skipped"])
    assert "left out by --no-compile" in r["skipped"]["hand: torch.compile (inductor, freezing)"]
    assert set(r["median_ms"]) == set(r["argmax_agreement"]) and all(v > 0 for v in r["median_ms"].values())
    assert r["best_hand"].startswith("hand:") and r["best_lanekd"].startswith("lanekd:")
    assert r["ratio"] == pytest.approx(r["median_ms"][r["best_hand"]] / r["median_ms"][r["best_lanekd"]])
    assert len(r["ort_variants_ms"]) == 8
    assert "ratio (hand ms / lanekd ms)" in out and "one change at a time" in out
    assert js.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
