"""``python -m distill data check``: walk a whole dataset once and report every problem in one table.

The dataset's own reader does the reading (nothing is parsed twice here): a split is opened with
``skip_bad=True`` so list entries that fail are collected instead of raised, then every sample is
loaded once. Each failure is put into one of the kinds in :data:`PROBLEMS` from the reader's own
message; the lane checks that readers do not raise for (more lanes than slots, lanes that no
sampling row reaches, lane points below the image) are done on the loaded ``Sample``.
The same table summarises what ``skip_bad: true`` skipped during training (:func:`skip_report`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from distill.data.sample import DataError, Sample

# kind -> (what the table says, fatal: training without skip_bad would stop on it)
PROBLEMS: dict[str, tuple[str, bool]] = {
    "missing": ("listed file does not exist", True),
    "image": ("unreadable image (missing bytes, truncated, undecodable)", True),
    "label": ("label or list line does not parse", True),
    "size": ("label of the wrong size", True),
    "split": ("split with no usable sample", True),
    "slots": ("more lanes than lane slots (extra lanes dropped)", False),
    "rows": ("lane reaches fewer than 2 sampled rows (never decoded)", False),
}
FIRST = 3          # files listed per kind
_ROW_SLACK = 2.0   # px: CULane writes y = 590 on 590-row frames


@dataclass
class Report:
    """What one walk (or one training run's skips) found."""

    title: str
    splits: dict[str, int] = field(default_factory=dict)     # split -> samples listed
    checked: int = 0
    skipped: bool = False                                      # a skip_bad summary, not a walk
    problems: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in PROBLEMS})

    def add(self, kind: str, message: str) -> None:
        self.problems[kind].append(message)

    def count(self, kind: str) -> int:
        return len(self.problems[kind])

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.problems.values())

    @property
    def fatal(self) -> int:
        return sum(len(v) for k, v in self.problems.items() if PROBLEMS[k][1])

    def to_dict(self, first: int = FIRST) -> dict[str, Any]:
        return {"title": self.title, "splits": dict(self.splits), "checked": self.checked,
                "total": self.total, "fatal": self.fatal,
                "problems": {k: {"what": PROBLEMS[k][0], "fatal": PROBLEMS[k][1], "count": len(v),
                                 "first": v[:first]} for k, v in self.problems.items()}}


def classify(message: str, image: str | Path | None = None) -> str:
    """The problem kind of a reader's ``DataError`` message (``image``: the sample's image path)."""
    if "label is " in message and "but its image" in message:
        return "size"
    if image is not None and message.startswith(f"{image}:"):
        if message.endswith("file not found"):
            return "missing"
        return "label" if "label" in message[len(str(image)):] else "image"
    low = message.lower()
    if "not found" in low or "no label (" in low or "no such file" in low:
        return "missing"
    return "label"


def format_report(report: Report, first: int = FIRST) -> str:
    """The one table: a row per problem kind (zeros too), the first few messages under each."""
    lines = [report.title]
    if report.splits:
        lines.append("  " + ", ".join(f"{s}: {n} samples" for s, n in report.splits.items()))
    lines.append(f"  {'problem':<58}{'count':>7}  fatal")
    for kind, (what, fatal) in PROBLEMS.items():
        items = report.problems[kind]
        lines.append(f"  {what:<58}{len(items):>7}  {'yes' if fatal else 'no'}")
        lines.extend(f"      {m}" for m in items[:first])
        if len(items) > first:
            lines.append(f"      ... and {len(items) - first} more")
    if report.skipped:
        lines.append(f"  {report.total} sample(s) or list entries skipped; training went on without them")
    else:
        lines.append(f"  {report.checked} samples checked: {report.total} problem(s), {report.fatal} fatal")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Walking a dataset
# ---------------------------------------------------------------------------------------------

def default_splits(kind: str, root: Path) -> list[str]:
    """Every split of ``kind`` present under ``root`` (each list or label file once)."""
    from distill.data.reader import resolve_list

    if kind in ("culane", "apollo", "synthetic_marking"):
        if kind == "culane":
            from distill.data.culane import CULANE_SPLITS as table
        else:
            from distill.data.apollo import ApolloScapeMarking
            table = ApolloScapeMarking.SPLITS
        found: dict[Path, str] = {}
        for split in table:
            if split == "trainval":
                continue
            try:
                found.setdefault(resolve_list(root, split, table).resolve(), split)
            except DataError:
                pass
        return list(found.values())
    if kind == "tusimple":
        from distill.data.tusimple import TUSIMPLE_SPLITS
        files = dict.fromkeys(f for files in TUSIMPLE_SPLITS.values() for f in files)
        return [f for f in files if (root / f).is_file()]
    sub = {"llamas": "labels", "cityscapes": "leftImg8bit"}.get(kind)
    if sub is None:
        raise ValueError(f"unknown dataset kind {kind!r}")
    base = root / sub
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def _raw_lane_count(kind: str, sample: Sample, reader: Any) -> int | None:
    """Lanes in the label file before slot assignment (which drops those beyond the slots)."""
    meta = sample.meta
    if kind == "culane" and meta.get("lines_path"):
        from runtime.lane_io import read_culane_lines
        return sum(1 for lane in read_culane_lines(meta["lines_path"]) if len(lane))
    if kind == "tusimple":
        from distill.data.tusimple import tusimple_polylines
        return len(tusimple_polylines(meta["raw_lanes"], meta["h_samples"]))
    if kind == "llamas" and meta.get("label_path"):
        from distill.data.llamas import parse_llamas_label
        return len(parse_llamas_label(Path(meta["label_path"]), reader.min_lane_height))
    return None


def check_lanes(kind: str, sample: Sample, reader: Any, where: str) -> list[tuple[str, str]]:
    """The lane problems a reader does not raise for (slots, sampled rows, points below the image)."""
    from runtime.geometry import Geometry
    from runtime.postprocess import LaneDecodeConfig, sample_rows

    found: list[tuple[str, str]] = []
    h, w = sample.image.shape[:2]
    slots = sample.exist.size
    raw = _raw_lane_count(kind, sample, reader)
    if raw is not None and raw > slots:
        found.append(("slots", f"{where}: {raw} lanes for {slots} lane slots"))
    ys = sample_rows(Geometry(h, w, h, w), LaneDecodeConfig())[0]
    for slot, pts in sorted(sample.lanes.items()):
        if len(pts) == 0:
            continue
        lo, hi = float(pts[:, 1].min()), float(pts[:, 1].max())
        if hi > h - 1 + _ROW_SLACK:
            found.append(("size", f"{where}: lane {slot} reaches y={hi:.0f} in a {w}x{h} image "
                                  f"(labels made for a larger frame?)"))
            continue
        reached = int(np.count_nonzero((ys >= lo - 0.5) & (ys <= hi + 0.5)))
        if reached < 2:
            found.append(("rows", f"{where}: lane {slot} spans y={lo:.0f}..{hi:.0f} and reaches {reached} of "
                                  f"the sampled rows (every {LaneDecodeConfig.row_step} px from the bottom)"))
    return found


def check_sample(kind: str, reader: Any, i: int) -> list[tuple[str, str]]:
    """Every problem of sample ``i`` of a reader opened with ``skip_bad=False``: (kind, message)."""
    image = reader.root / reader.names[i]
    try:
        sample = reader[i]
    except DataError as exc:
        return [(classify(str(exc), image), str(exc))]
    if reader.spec.task != "lanes":
        return []
    try:
        return check_lanes(kind, sample, reader, str(image))
    except DataError as exc:
        return [("label", str(exc))]


_WORKER: dict[str, Any] = {}


def _init_worker(kind: str, root: Path, split: str, options: dict[str, Any]) -> None:
    import cv2

    cv2.setNumThreads(1)
    reader = _open(kind, root, split, options, Report(""))
    reader.skip_bad = False
    _WORKER.update(kind=kind, reader=reader)


def _check_chunk(indices: list[int]) -> list[list[tuple[str, str]]]:
    return [check_sample(_WORKER["kind"], _WORKER["reader"], i) for i in indices]


def _open(kind: str, root: Path, split: str, options: Mapping[str, Any], report: Report) -> Any:
    from distill.data.dataset import build_reader

    try:
        reader = build_reader(kind, root, split, **{**options, "skip_bad": True})
    except DataError as exc:
        report.add("split", f"split {split}: {exc}")
        return None
    for key, msg in reader.bad.items():
        report.add(classify(msg), msg)
    return reader


def check_dataset(kind: str, root: str | Path, splits: Sequence[str] | None = None,
                  options: Mapping[str, Any] | None = None, progress: bool = False, workers: int = 1) -> Report:
    """Walk every sample of ``splits`` (default: every split present) once; a sample listed in
    several splits is loaded once; ``workers`` processes share the loading. Raises ``DataError``
    when the root or every split is missing."""
    from distill.data.dataset import DATASET_KINDS
    from distill.data.reader import check_root

    if kind not in DATASET_KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; valid: {', '.join(DATASET_KINDS)}")
    root = check_root(root)
    options = dict(options or {})
    names = list(splits) if splits else default_splits(kind, root)
    if not names:
        raise DataError(f"{root}: no {kind} split found (lists, label files or split folders); "
                        f"is --kind right? name one with --split")
    report = Report(f"data check: {kind} dataset at {root}")
    seen: set[str] = set()
    for split in names:
        reader = _open(kind, root, split, options, report)
        if reader is None:
            report.splits[split] = 0
            continue
        report.splits[split] = len(reader)
        reader.skip_bad = False           # now every failure raises, and is classified here
        todo = []
        for i in range(len(reader)):
            image = str(reader.root / reader.names[i])
            if image not in seen:
                seen.add(image)
                todo.append(i)
        report.checked += len(todo)
        for problems in _walk(kind, reader, root, split, options, todo, workers, progress):
            for k, msg in problems:
                report.add(k, msg)
    return report


def _walk(kind: str, reader: Any, root: Path, split: str, options: dict[str, Any], todo: list[int],
          workers: int, progress: bool) -> Iterator[list[tuple[str, str]]]:
    """Each sample's problems, in ``todo`` order; ``workers > 1`` shares them out to processes."""
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc=f"check {split}", unit="sample")
    if workers <= 1 or len(todo) < 4 * workers:
        for i in todo:
            yield check_sample(kind, reader, i)
            if bar is not None:
                bar.update()
    else:
        import multiprocessing as mp

        # not fork: a forked copy of a process with library threads (ONNX Runtime, OpenVINO, torch)
        # can deadlock on a lock held by a thread that did not come along, and inherits its I/O
        ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        size = max(1, min(32, len(todo) // (4 * workers)))
        chunks = [todo[k:k + size] for k in range(0, len(todo), size)]
        with ctx.Pool(workers, initializer=_init_worker, initargs=(kind, root, split, options)) as pool:
            for res in pool.imap(_check_chunk, chunks):
                yield from res
                if bar is not None:
                    bar.update(len(res))
    if bar is not None:
        bar.close()


# ---------------------------------------------------------------------------------------------
# What skip_bad skipped during training
# ---------------------------------------------------------------------------------------------

def skip_report(records: Iterable[Mapping[str, Any]], title: str) -> Report:
    """A report of ``{"key", "reason", "image"}`` skip records (duplicates counted once)."""
    report = Report(title, skipped=True)
    seen: set[tuple[str, str]] = set()
    for rec in records:
        key = (str(rec.get("key")), str(rec.get("reason")))
        if key in seen:
            continue
        seen.add(key)
        report.add(classify(key[1], rec.get("image")), key[1])
    return report


def write_report(report: Report, path: str | Path) -> Path:
    """The report as JSON (every message, not only the first few)."""
    from runtime.sinks import write_json

    data = report.to_dict(first=max(1, max((len(v) for v in report.problems.values()), default=1)))
    return write_json(path, data)


def run_check(kind: str, root: str | Path, splits: Sequence[str] | None = None,
              options: Mapping[str, Any] | None = None, json_out: str | Path | None = None,
              first: int = FIRST, progress: bool = True, workers: int = 1) -> int:
    """Check, print the table (and write JSON); exit code 1 when any problem is fatal."""
    report = check_dataset(kind, root, splits, options, progress, workers)
    print(format_report(report, first))
    if json_out:
        print(f"wrote {write_report(report, json_out)}")
    if report.fatal:
        print(f"not ready: {report.fatal} fatal problem(s); fix them, or train with "
              f"data.options.skip_bad: true to skip those samples")
        return 1
    return 0


def parse_options(items: Sequence[str] | None) -> dict[str, Any]:
    """``--option line_width=16`` items -> reader keyword arguments (values parsed as JSON, else text)."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--option {item!r}: expected KEY=VALUE, e.g. line_width=16")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out
