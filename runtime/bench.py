"""Benchmark: the pipeline's stages timed one by one on real video frames, for one or more models.

Per model: decode, preprocess, infer, postprocess, draw and write latency (mean/p50/p90/p99/max
after warm-up), the serial latency FPS (one frame through every stage), inference-only FPS, and
the threaded pipeline's throughput FPS on the same source; ratios against the first model; the
system it ran on; on a Jetson, the power mode and tegrastats samples. Output: a terminal table, a
JSON report and a PNG chart.

With ``backends`` (``"all"`` or a list) every model runs on every backend that takes its file
here: the model x backend candidates are timed in interleaved rounds (each round times every
candidate, starting one later each round), each figure is the median over the rounds, and the
report names the winner (highest pipelined FPS, or serial FPS without the pipelined run).
"""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import tempfile
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from runtime.overlay import Overlay
from runtime.pipeline import STAGES, StageStats, latency_summary, load_model, run
from runtime.sinks import VideoSink, check_writable, write_json
from runtime.sources import Frame, open_source

JETSON_RELEASE = Path("/etc/nv_tegra_release")


# --------------------------------------------------------------------------------------------
# system information
# --------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _pkg_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def gpu_info() -> list[dict[str, str]]:
    """GPUs as ``nvidia-smi`` reports them (name, driver, memory); [] without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return gpus


def is_jetson() -> bool:
    return JETSON_RELEASE.exists()


def jetson_power_mode() -> str:
    """``nvpmodel -q`` output (the power mode's name and id), or "" when unavailable."""
    if shutil.which("nvpmodel") is None:
        return ""
    try:
        return subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def system_info(threads: int | None = None) -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, GPU and driver, library versions, threads."""
    import cv2

    info: dict[str, Any] = {
        "platform": platform.platform(), "python": platform.python_version(),
        "cpu": _cpu_model(), "cores": os.cpu_count(),
        "gpus": gpu_info(),
        "libraries": {k: v for k, v in {
            "numpy": np.__version__, "opencv": cv2.__version__,
            "onnxruntime": _pkg_version("onnxruntime") or _pkg_version("onnxruntime-gpu"),
            "openvino": _pkg_version("openvino"),
            "tensorrt": _pkg_version("tensorrt"), "cuda-python": _pkg_version("cuda-python"),
            "torch": _pkg_version("torch")}.items() if v},
        "threads": {"requested": threads, "opencv": cv2.getNumThreads()},
    }
    if is_jetson():
        info["jetson"] = {"release": JETSON_RELEASE.read_text().strip().splitlines()[0][:200],
                          "power_mode": jetson_power_mode()}
    return info


# --------------------------------------------------------------------------------------------
# tegrastats
# --------------------------------------------------------------------------------------------
_TEMP = re.compile(r"\b([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C\b")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*)\s+(\d+)(?:mW)?/(\d+)(?:mW)?\b")
_TOTAL_RAILS = ("VDD_IN", "POM_5V_IN", "VIN_SYS_5V0")


def parse_tegrastats(line: str) -> dict[str, Any]:
    """One tegrastats line -> RAM (MB), CPU loads (%), GPU load (%, GR3D_FREQ), temperatures (C,
    sensors reporting -256 are off and dropped), power rails (mW now / average) and total power.

    Handles both the older (``POM_5V_IN 2826/2826``) and the Orin (``VDD_IN 5000mW/5000mW``) formats.
    """
    out: dict[str, Any] = {}
    m = re.search(r"RAM (\d+)/(\d+)MB", line)
    if m:
        out["ram_used_mb"], out["ram_total_mb"] = int(m.group(1)), int(m.group(2))
    m = re.search(r"CPU \[([^\]]*)\]", line)
    if m:
        out["cpu_load"] = [int(c.split("%")[0]) if "%" in c else None for c in m.group(1).split(",")]
    m = re.search(r"GR3D_FREQ (\d+)%", line)
    if m:
        out["gpu_load"] = int(m.group(1))
    out["temps_c"] = {k: float(v) for k, v in _TEMP.findall(line) if float(v) > -200}
    rails = {name: {"now_mw": int(a), "avg_mw": int(b)} for name, a, b in _RAIL.findall(line)
             if name not in ("RAM", "SWAP")}
    out["rails_mw"] = rails
    total = next((rails[r]["now_mw"] for r in _TOTAL_RAILS if r in rails), None)
    out["power_mw"] = total if total is not None else (sum(r["now_mw"] for r in rails.values()) or None)
    return out


class TegraStats:
    """Samples ``tegrastats`` in the background while a benchmark runs (Jetson only)."""

    def __init__(self, interval_ms: int = 500) -> None:
        self.interval_ms = interval_ms
        self.samples: list[dict[str, Any]] = []
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "TegraStats":
        if shutil.which("tegrastats"):
            self._proc = subprocess.Popen(["tegrastats", "--interval", str(self.interval_ms)],
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self.samples.append(parse_tegrastats(line))

    def __exit__(self, *exc: Any) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=5)
            self._thread.join(timeout=2)

    def summary(self) -> dict[str, Any]:
        s: dict[str, Any] = {"samples": len(self.samples)}
        for key in ("power_mw", "gpu_load"):
            vals = [x[key] for x in self.samples if x.get(key) is not None]
            if vals:
                s[key] = {"mean": float(np.mean(vals)), "max": float(np.max(vals))}
        temps = [max(x["temps_c"].values()) for x in self.samples if x.get("temps_c")]
        if temps:
            s["max_temp_c"] = float(np.max(temps))
        return s


# --------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------
def _frames(source: str, count: int, max_corrupt: int) -> Iterator[Frame]:
    """``count`` frames from a file source, replayed from the start if it is shorter."""
    got = 0
    while got < count:
        src = open_source(source, live=False, max_corrupt=max_corrupt)
        try:
            n0 = got
            for frame in src:
                yield frame
                got += 1
                if got >= count:
                    return
            if got == n0:
                return
        finally:
            src.close()


def bench_model(model: str | Path, source: str, frames: int = 100, warmup: int = 10, backend: str = "auto",
                providers: Sequence[str] | None = None, threads: int | None = None,
                pipelined: bool = True, max_corrupt: int = 30) -> dict[str, Any]:
    """Time every stage for one model (see the module docstring); returns its report."""
    lm = load_model(model, backend, providers, threads)
    stats = StageStats()
    totals: list[float] = []
    overlay = Overlay(num_classes=lm.meta.num_classes if lm.meta.task == "marking" else 0)
    name = lm.pre.input_name
    tmp = Path(tempfile.mkdtemp(prefix="lanekd-bench-"))
    video = None
    infer_only = 0.0
    try:
        n = 0
        last_input = None
        for frame in _frames(source, warmup + frames, max_corrupt):
            img = frame.image
            if video is None:
                video = VideoSink(tmp / "bench.mp4", img.shape[:2], 30.0)
            t0 = time.perf_counter()
            g = lm.pre.geometry(*img.shape[:2])
            x = lm.pre(img)
            t1 = time.perf_counter()
            out = lm.backend.infer({name: x})
            t2 = time.perf_counter()
            res = lm.decoder(out, g)
            t3 = time.perf_counter()
            overlay.draw(img, res.lanes, res.classes, g.crop_top, ["bench"])
            t4 = time.perf_counter()
            video.write(img)
            t5 = time.perf_counter()
            n += 1
            last_input = x
            if n <= warmup:
                continue
            for stage, dt in zip(STAGES, (frame.t_decode, t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                stats.add(stage, dt)
            totals.append(frame.t_decode + t5 - t0)
        if not totals:
            raise ValueError(f"{source}: delivered {n} frames, fewer than warm-up {warmup} + 1")
        reps = max(10, min(len(totals), 200))
        t0 = time.perf_counter()
        for _ in range(reps):
            lm.backend.infer({name: last_input})
        infer_only = reps / (time.perf_counter() - t0)
        info = lm.backend.describe()
    finally:
        if video is not None:
            video.close()
        lm.close()
        shutil.rmtree(tmp, ignore_errors=True)
    report: dict[str, Any] = {
        "model": str(model), "backend": info, "task": lm.meta.task, "precision": lm.meta.precision,
        "fused_pre": lm.meta.fused_preprocess, "fused_post": lm.meta.fused_postprocess,
        "frames": len(totals), "warmup": warmup,
        "stages_ms": stats.summary(), "total_ms": latency_summary(totals),
        "serial_fps": len(totals) / float(np.sum(totals)),
        "infer_only_fps": infer_only,
        "per_frame_total_ms": [t * 1e3 for t in totals],
    }
    if pipelined:
        with tempfile.TemporaryDirectory(prefix="lanekd-bench-") as d:
            s = run(model, source, out=Path(d) / "pipe.mp4", backend=backend, providers=providers,
                    threads=threads, max_frames=warmup + frames, max_corrupt=max_corrupt)
            jsonl = Path(d) / "pipe.jsonl" if lm.meta.task == "lanes" else None
            lanes = run(model, source, jsonl=jsonl, backend=backend, providers=providers,
                        threads=threads, max_frames=warmup + frames, max_corrupt=max_corrupt)
        report["pipelined_fps"] = s["steady_fps"] or s["fps"]     # start-up left out, as for infer-only
        report["pipelined_frames"] = s["frames"]
        report["pipelined_vs_infer_only"] = report["pipelined_fps"] / infer_only if infer_only else None
        # the same without the video: what the host stages cost when nothing is encoded
        report["pipelined_no_video_fps"] = lanes["steady_fps"] or lanes["fps"]
    return report


def backends_for(model: str | Path, backends: str | Sequence[str]) -> list[str]:
    """The backends to try ``model`` on: ``"all"`` = every available one that takes its suffix."""
    from runtime.backends.base import BACKENDS, BackendError, backend_class

    suffix = Path(model).suffix.lower()
    names = list(BACKENDS) if backends == "all" else [b.strip() for b in
                                                     (backends.split(",") if isinstance(backends, str) else backends)]
    unknown = [b for b in names if b not in BACKENDS]
    if unknown:
        raise BackendError(f"unknown backend(s) {unknown}; choose from all, {', '.join(BACKENDS)}")
    return [b for b in names if suffix in backend_class(b).suffixes and backend_class(b).is_available()]


_MEDIAN_KEYS = ("serial_fps", "infer_only_fps", "pipelined_fps", "pipelined_vs_infer_only")


def _median_of_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One report for a candidate timed in several rounds: the FPS figures are medians over the
    rounds, the stage latencies those of the median round (by serial FPS)."""
    order = sorted(runs, key=lambda r: r["serial_fps"])
    out = dict(order[len(order) // 2])
    for key in _MEDIAN_KEYS:
        vals = [r[key] for r in runs if r.get(key)]
        if vals:
            out[key] = float(np.median(vals))
    out["rounds"] = {key: [r.get(key) for r in runs] for key in _MEDIAN_KEYS}
    return out


def _bench_candidates(models: Sequence[str | Path], source: str, frames: int, warmup: int,
                      backends: str | Sequence[str], providers: Sequence[str] | None, threads: int | None,
                      pipelined: bool, rounds: int) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Every model on every backend that takes it, interleaved rounds; (results, skipped)."""
    from runtime.backends.base import BackendError

    cands = [(m, b) for m in models for b in backends_for(m, backends)]
    if not cands:
        raise BackendError(f"no backend available here takes {[str(m) for m in models]} (see `python -m runtime doctor`)")
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {(str(m), b): [] for m, b in cands}
    skipped: dict[tuple[str, str], str] = {}
    for r in range(rounds):
        for m, b in cands[r % len(cands):] + cands[: r % len(cands)]:
            if (str(m), b) in skipped:
                continue
            try:
                runs[(str(m), b)].append(bench_model(m, source, frames, warmup, b,
                                                     providers if b == "onnxruntime" else None, threads, pipelined))
            except BackendError as exc:          # e.g. a quantised file OpenVINO cannot compile
                skipped[(str(m), b)] = str(exc)
    results = [_median_of_rounds(v) for v in runs.values() if v]
    return results, [{"model": m, "backend": b, "reason": why} for (m, b), why in skipped.items()]


def winner(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The fastest candidate: highest pipelined FPS where measured, else serial FPS."""
    key = "pipelined_fps" if all(r.get("pipelined_fps") for r in results) else "serial_fps"
    best = max(results, key=lambda r: r[key])
    return {"model": best["model"], "backend": best["backend"]["backend"], "by": key, "fps": best[key],
            "precision": best.get("precision", "")}


def bench(models: Sequence[str | Path], source: str, frames: int = 100, warmup: int = 10,
          backend: str = "auto", providers: Sequence[str] | None = None, threads: int | None = None,
          json_path: str | Path | None = None, png_path: str | Path | None = None,
          pipelined: bool = True, quiet: bool = False, backends: str | Sequence[str] | None = None,
          rounds: int = 3) -> dict[str, Any]:
    """Benchmark each model on ``source``; write the JSON/PNG asked for and print a table.
    ``backends``: ``"all"`` or a list, to compare every backend on every model (see above)."""
    if not models:
        raise ValueError("bench needs at least one --model")
    if frames < 1 or warmup < 0 or rounds < 1:
        raise ValueError("frames and rounds must be >= 1 and warmup >= 0")
    for p in (json_path, png_path):
        if p is not None:
            check_writable(p)
    tegra = TegraStats() if is_jetson() else None
    results = []
    if tegra is not None:
        tegra.__enter__()
    skipped: list[dict[str, str]] = []
    try:
        if backends:
            results, skipped = _bench_candidates(models, source, frames, warmup, backends, providers, threads,
                                                 pipelined, rounds)
        else:
            for m in models:
                results.append(bench_model(m, source, frames, warmup, backend, providers, threads, pipelined))
    finally:
        if tegra is not None:
            tegra.__exit__(None, None, None)
    base = results[0]
    for r in results:
        r["vs_first"] = {
            "serial_fps": r["serial_fps"] / base["serial_fps"],
            "infer_mean": r["stages_ms"]["infer"]["mean"] / base["stages_ms"]["infer"]["mean"],
            "total_mean": r["total_ms"]["mean"] / base["total_ms"]["mean"],
        }
        if pipelined and base.get("pipelined_fps"):
            r["vs_first"]["pipelined_fps"] = r["pipelined_fps"] / base["pipelined_fps"]
    report: dict[str, Any] = {"source": str(source), "frames": frames, "warmup": warmup,
                              "system": system_info(threads), "models": results}
    if backends:
        report.update(rounds=rounds, skipped=skipped, winner=winner(results))
    if tegra is not None:
        report["tegrastats"] = {"summary": tegra.summary(), "samples": tegra.samples}
    if png_path is not None:
        report["png"] = str(plot(report, png_path))
    if not quiet:
        print(format_table(report))
    if json_path is not None:
        report["json"] = str(json_path)
        write_json(json_path, report)
    return report


def format_table(report: dict[str, Any]) -> str:
    """Per-stage mean / p99 per model, then FPS figures and ratios against the first model."""
    rows = [["stage (ms)"] + [Path(r["model"]).name + f" [{r['backend']['backend']}]" for r in report["models"]]]
    for stage in STAGES + ("total",):
        cells = [stage]
        for r in report["models"]:
            s = r["total_ms"] if stage == "total" else r["stages_ms"].get(stage)
            cells.append(f"{s['mean']:.2f} / p99 {s['p99']:.2f}" if s and s.get("n") else "-")
        rows.append(cells)
    for key, label in (("serial_fps", "serial FPS"), ("infer_only_fps", "infer-only FPS"),
                       ("pipelined_fps", "pipelined FPS")):
        rows.append([label] + [f"{r[key]:.1f}" if r.get(key) else "-" for r in report["models"]])
    rows.append(["pipelined, no video FPS"] + [f"{r['pipelined_no_video_fps']:.1f}" if r.get("pipelined_no_video_fps")
                                               else "-" for r in report["models"]])
    rows.append(["pipelined/infer-only"] + [f"{r['pipelined_vs_infer_only']:.2f}x" if r.get("pipelined_vs_infer_only")
                                            else "-" for r in report["models"]])
    rows.append(["serial FPS vs first"] + [f"{r['vs_first']['serial_fps']:.2f}x" for r in report["models"]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    sys_ = report["system"]
    gpu = ", ".join(f"{g['name']} (driver {g['driver']})" for g in sys_["gpus"]) or "no GPU"
    lines.append(f"\n{sys_['cpu']} x{sys_['cores']}; {gpu}; {report['frames']} frames after {report['warmup']} warm-up")
    if report.get("winner"):
        w = report["winner"]
        lines.append(f"medians of {report['rounds']} interleaved rounds; fastest: {Path(w['model']).name} on "
                     f"{w['backend']} ({w['fps']:.1f} {w['by'].replace('_', ' ')})")
        lines += [f"skipped {Path(k['model']).name} on {k['backend']}: {k['reason']}" for k in report["skipped"]]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: str | Path) -> Path:
    """PNG: per-stage mean latency bars per model, and a histogram of per-frame total latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = report["models"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(models)
    xs = np.arange(len(STAGES))
    for i, r in enumerate(models):
        means = [r["stages_ms"].get(s, {}).get("mean", 0.0) for s in STAGES]
        ax1.bar(xs + i * width, means, width, label=Path(r["model"]).name)
        ax2.hist(r["per_frame_total_ms"], bins=30, alpha=0.6, label=Path(r["model"]).name)
    ax1.set_xticks(xs + width * (len(models) - 1) / 2, STAGES)
    ax1.set_ylabel("mean latency (ms)")
    ax1.set_title("per-stage latency")
    ax1.legend(fontsize=8)
    ax2.set_xlabel("per-frame latency, all stages (ms)")
    ax2.set_ylabel("frames")
    ax2.set_title("latency distribution")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    path = check_writable(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
