"""The demo's report: results table, training curves, a frame grid, latency chart, artefact paths."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch


def frame_grid(root: Path, ckpts: dict[str, Path], out: Path, rows: int = 3, cell_w: int = 410) -> Path:
    """Test frames (rows) drawn by each model (columns: input, then one per checkpoint)."""
    from distill.checkpoint import model_from_checkpoint
    from distill.data.dataset import build_dataset
    from runtime.overlay import Overlay
    from runtime.postprocess import LaneDecodeConfig, decode_lanes

    loaded = {name: model_from_checkpoint(p) for name, p in ckpts.items()}
    models = {name: model for name, (model, _) in loaded.items()}
    first = next(iter(loaded.values()))[1]
    data = build_dataset("culane", root, "test", tuple(first["input_size"]), first.get("crop_top", 0))
    overlay = Overlay()
    picks = np.linspace(0, len(data) - 1, rows).astype(int)
    grid_rows = []
    for idx in picks:
        raw = data.reader[int(idx)]
        s = data.sample(int(idx))
        x = torch.from_numpy(s.image)[None]
        cells = [_label(raw.image, "input")]
        for name, model in models.items():
            with torch.no_grad():
                logits, exist = model(x)
            lanes = decode_lanes(torch.softmax(logits, 1)[0].numpy(), torch.sigmoid(exist)[0].numpy(),
                                 s.meta["geometry"], LaneDecodeConfig(row_step=10, num_rows=None))
            cells.append(_label(overlay.draw(raw.image.copy(), lanes=lanes), name))
        h = int(round(raw.image.shape[0] * cell_w / raw.image.shape[1]))
        grid_rows.append(np.hstack([cv2.resize(c, (cell_w, h), interpolation=cv2.INTER_AREA) for c in cells]))
    cv2.imwrite(str(out), np.vstack(grid_rows))
    return out


def _label(img: np.ndarray, text: str) -> np.ndarray:
    img = img.copy()
    cv2.putText(img, text, (20, 60), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (0, 0, 0), 8, cv2.LINE_AA)
    cv2.putText(img, text, (20, 60), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (255, 255, 255), 3, cv2.LINE_AA)
    return img


def _markdown(s: Any, scores: dict, export_scores: dict, summary: dict, bench: dict,
              artefacts: list[tuple[str, Path]], rel: Any, ckpts: dict[str, Path] | None = None) -> str:
    lines = ["# lanekd demo report", "",
             f"Embedded default: {s.scenes} synthetic road scenes, a {s.video_seconds:g} s synthetic dashcam video.", "",
             "## Accuracy on the synthetic test split", "",
             "| model | F1 (CULane protocol, IoU > 0.5) | precision | recall | mIoU (lane classes) |",
             "|---|---|---|---|---|"]
    for name, m in scores.items():
        lines.append(f"| {name} | {100 * m['f1']:.1f} | {100 * m['precision']:.1f} | {100 * m['recall']:.1f} "
                     f"| {100 * m['miou']:.1f} |")
    gain = 100 * (scores["distilled"]["f1"] - scores["baseline"]["f1"])
    lines += ["", f"Distillation changed the student's F1 by {gain:+.1f} points at the same training budget "
                  f"({s.student_steps} steps).", "", s.teacher_origin, "",
              "## Exported student through the runtime", "",
              "| model | F1 | precision | recall |", "|---|---|---|---|"]
    for name, m in export_scores.items():
        lines.append(f"| {name} | {100 * m['f1']:.1f} | {100 * m['precision']:.1f} | {100 * m['recall']:.1f} |")
    if "fp32" in export_scores and "int8" in export_scores:
        drop = 100 * (export_scores["int8"]["f1"] - export_scores["fp32"]["f1"])
        lines += ["", f"INT8 changes F1 by {drop:+.1f} points against FP32 (the runtime decodes the sidecar's "
                      f"sampling rows, so these F1 differ slightly from the PyTorch table above)."]
    lines += ["", "## Training curves", ""]
    for name in ("teacher", "baseline", "distilled"):
        run = ckpts[name].parent if ckpts else s.out / "runs" / name
        lines.append(f"![{name}]({rel(run / 'curves.png')})")
    lines += ["", "## Frames (input, teacher, baseline, distilled)", "", f"![grid]({rel(s.out / 'grid.png')})", "",
              "## Runtime on the dashcam video", "",
              f"{summary.get('frames')} frames, {summary.get('fps', 0):.1f} FPS through the threaded pipeline "
              f"(decode, pre-process, {Path(str(summary.get('model', ''))).name} on "
              f"{summary.get('backend', {}).get('backend', '?')}, post-process, draw, encode).", "",
              "| model | backend | inference ms (mean) | serial FPS | infer-only FPS | pipelined FPS "
              "| pipelined / infer-only | vs first |",
              "|---|---|---|---|---|---|---|---|"]
    for r in bench["models"]:
        lines.append(f"| {Path(r['model']).name} | {r['backend']['backend']} | {r['stages_ms']['infer']['mean']:.2f} "
                     f"| {r['serial_fps']:.1f} | {r['infer_only_fps']:.1f} | {r.get('pipelined_fps') or 0:.1f} "
                     f"| {r.get('pipelined_vs_infer_only') or 0:.2f}x | {r['vs_first']['serial_fps']:.2f}x |")
    if bench.get("winner"):
        w = bench["winner"]
        lines += ["", f"Fastest deployment path here: **{Path(w['model']).name} on {w['backend']}** "
                      f"({w['fps']:.1f} {w['by'].replace('_', ' ')}, median of {bench['rounds']} interleaved rounds)."]
        lines += [f"Not run: {Path(k['model']).name} on {k['backend']} ({k['reason']})." for k in bench["skipped"]]
    sysinfo = bench["system"]
    lines += ["", f"Measured on {sysinfo['cpu']} ({sysinfo['cores']} cores).", "",
              f"![latency]({rel(s.out / 'bench.png')})", "", "## Step timings", "",
              f"On {sysinfo['cpu']} ({sysinfo['cores']} cores); the load average at each step's end says how "
              f"busy the CPU was (above the core count: other work shared it).", "",
              "| step | seconds | load average (1 min) |", "|---|---|---|"]
    lines += [f"| {k} | {v:.1f} | {s.loads.get(k, float('nan')):.1f} |" for k, v in s.timings.items()]
    if s.reused:
        lines += ["", f"Read back from an earlier run in this folder (same input files, by sha256; "
                      f"`{rel(s.out / 'cache')}/`): {', '.join(s.reused)}. The benchmark is measured in every run."]
    lines += ["", "## Artefacts", ""] + [f"- {what}: `{path}`" for what, path in artefacts]
    return "\n".join(lines) + "\n"


def _html(md: str, title: str) -> str:
    """A small Markdown subset (headings, tables, images, lists) to HTML; enough for this report."""
    out, in_table = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                     "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
                     "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
                     "img{max-width:100%}</style></head><body>"], False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            if not in_table:
                out.append("<table>")
                in_table = True
                out.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cells) + "</tr>")
            else:
                out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            out.append(f"<p><img alt='{html.escape(alt)}' src='{html.escape(src.rstrip(')'))}'></p>")
        elif line.startswith("- "):
            out.append(f"<li>{html.escape(line[2:]).replace('`', '')}</li>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        out.append("</table>")
    return "\n".join(out + ["</body></html>"])


def write_report(s: Any, root: Path, video: Path, ckpts: dict[str, Path], scores: dict, models: dict[str, Path],
                 export_scores: dict, summary: dict, bench: dict) -> Path:
    grid = frame_grid(root, ckpts, s.out / "grid.png")
    artefacts = [("synthetic dataset (CULane layout)", root), ("dashcam video", video),
                 *[(f"{k} checkpoint", v) for k, v in ckpts.items()],
                 *[(f"exported model ({k})", v) for k, v in models.items()],
                 *[(f"sidecar ({k})", v.with_suffix(".json")) for k, v in models.items()],
                 ("annotated video", s.out / "annotated.mp4"), ("lanes per frame (JSONL)", s.out / "lanes.jsonl"),
                 ("runtime summary", s.out / "runtime_summary.json"), ("benchmark JSON", s.out / "bench.json"),
                 ("latency chart", s.out / "bench.png"), ("frame grid", grid),
                 ("scores", s.out / "scores.json")]
    (s.out / "scores.json").write_text(json.dumps({"pytorch": scores, "runtime": export_scores}, indent=2))
    rel = lambda p: Path(p).resolve().relative_to(s.out.resolve()).as_posix()  # noqa: E731
    md = _markdown(s, scores, export_scores, summary, bench, artefacts, rel, ckpts)
    report = s.out / "report.md"
    report.write_text(md)
    (s.out / "report.html").write_text(_html(md, "lanekd demo report"))
    return report
