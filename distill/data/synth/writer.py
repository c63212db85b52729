"""Write a synthetic dataset to disk in the CULane layout (plus ApolloScape-style marking masks).

Layout under ``out``::

    driver_161_90frame/<video>.MP4/<frame>.jpg        image (JPEG quality 95)
    driver_161_90frame/<video>.MP4/<frame>.lines.txt  lanes in slot order, existing ones only
    laneseg_label_w16/<same path>.png                 uint8 slot mask (0 background, 1..4)
    marking/<same path without .jpg>_bin.png          ApolloScape label ids (``APOLLO_IDS``)
    marking/classes.txt                               "<train id> <name> <apollo id>" per class
    list/train_gt.txt, list/val_gt.txt                "/<img> /<label png> e1 e2 e3 e4"
    list/train.txt, list/val.txt, list/test.txt       "/<img>"
    list/test_split/test{0..8}_{category}.txt         "<img>" (no leading slash, as CULane)
    synth.json                                        how the dataset was generated

Everything is written into a hidden pid-stamped folder beside ``out`` (``runtime.partial``) and
moved into place only when complete, lists last: an interrupted run (Ctrl-C, an error) removes
that folder and leaves a previous dataset at ``out`` as it was; the folder of a killed run is
removed by the next run.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from tqdm import tqdm

from distill.data.synth.dataset import plan_scene, scene_name
from distill.data.synth.render import render
from distill.data.synth.scene import APOLLO_IDS, CULANE_CATEGORIES, MARKING_CLASSES, SceneConfig
from runtime.lane_io import write_culane_lines
from runtime.partial import staged

JPEG_QUALITY = 95
_APOLLO_LUT = np.zeros(256, np.uint8)
_APOLLO_LUT[: len(MARKING_CLASSES)] = [APOLLO_IDS[c] for c in MARKING_CLASSES]


def _imwrite(path: Path, img: np.ndarray, params: Sequence[int] = ()) -> None:
    """Encode with OpenCV, write with Python: a full disk is then an OSError with its errno."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, img, list(params))
    if not ok:
        raise ValueError(f"OpenCV cannot encode {path.suffix} images ({path})")
    path.write_bytes(buf.tobytes())


def write_scene(out: Path, seed: int, index: int, cfg: SceneConfig) -> tuple[int, str, list[int], tuple[str, ...]]:
    """Generate scene ``index`` and write its image and labels; returns (index, name, exist, tags)."""
    plan = plan_scene(seed, index, cfg)
    r = render(plan)
    name = scene_name(seed, index)
    stem = name[:-len(".jpg")]
    _imwrite(out / name, r.image, (cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY))
    write_culane_lines(out / f"{stem}.lines.txt", [r.lanes[s] for s in sorted(r.lanes)])
    _imwrite(out / "laneseg_label_w16" / f"{stem}.png", r.slot_mask)
    _imwrite(out / "marking" / f"{stem}_bin.png", cv2.LUT(r.marking_mask, _APOLLO_LUT))
    return index, name, [int(e) for e in r.exist], plan.tags


def _job(args: tuple[str, int, int, SceneConfig]) -> tuple[int, str, list[int], tuple[str, ...]]:
    out, seed, index, cfg = args
    return write_scene(Path(out), seed, index, cfg)


def _init_worker() -> None:
    cv2.setNumThreads(1)


def split_indices(num: int, seed: int, fractions: Sequence[float]) -> dict[str, np.ndarray]:
    """Deterministic train/val/test split of scene indices by ``fractions`` (summing to 1)."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {tuple(fractions)}")
    perm = np.random.default_rng([seed, 2 ** 32 - 1]).permutation(num)
    n_train = int(round(fractions[0] * num))
    n_val = min(int(round(fractions[1] * num)), num - n_train)
    return {"train": np.sort(perm[:n_train]), "val": np.sort(perm[n_train:n_train + n_val]),
            "test": np.sort(perm[n_train + n_val:])}


def _write_text(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    tmp.replace(path)


def _commit(stage: Path, out: Path) -> None:
    """Move the finished ``stage`` folder to ``out``: a rename, or a file-by-file merge into a
    non-empty ``out`` (``overwrite``) with the lists and ``synth.json`` moved last."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        if out.exists():
            out.rmdir()
        os.replace(stage, out)
        return
    files = sorted((p for p in stage.rglob("*") if p.is_file()),
                   key=lambda p: (p.relative_to(stage).parts[0] in ("list", "synth.json"), str(p)))
    for f in files:
        dest = out / f.relative_to(stage)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, dest)
    shutil.rmtree(stage, ignore_errors=True)


def write_culane(out: str | Path, num: int, seed: int = 0, cfg: SceneConfig = SceneConfig(),
                 splits: Sequence[float] = (0.8, 0.1, 0.1), workers: int = 1, overwrite: bool = False,
                 progress: bool = True) -> Path:
    """Generate ``num`` scenes into ``out`` in the CULane layout; returns ``out``.

    Refuses a non-empty ``out`` unless ``overwrite`` (files are then replaced in place).
    ``workers > 1`` renders in that many spawned processes; output is identical either way.
    """
    out = Path(out)
    if num <= 0:
        raise ValueError(f"num must be positive, got {num}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; pass overwrite=True (--overwrite) to write into it")
    parts = split_indices(num, seed, splits)
    out.parent.mkdir(parents=True, exist_ok=True)
    with staged(out) as stage:
        try:
            stage.mkdir()
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write a dataset here ({exc.strerror})", str(out)) from None
        _write_all(stage, num, seed, cfg, parts, splits, workers, progress)
        _commit(stage, out)
    return out


def _write_all(out: Path, num: int, seed: int, cfg: SceneConfig, parts: dict[str, np.ndarray],
               splits: Sequence[float], workers: int, progress: bool) -> None:
    """Render every scene into ``out`` (the staging folder), then the lists."""
    jobs = [(str(out), seed, i, cfg) for i in range(num)]
    results = []
    with tqdm(total=num, desc="synth", unit="scene", disable=not progress) as bar:   # closed before any error
        if workers == 1:
            for job in jobs:
                results.append(_job(job))
                bar.update()
        else:
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(workers, initializer=_init_worker) as pool:
                for res in pool.imap_unordered(_job, jobs, chunksize=4):
                    results.append(res)
                    bar.update()
    results.sort(key=lambda r: r[0])

    lists = out / "list"
    for part in ("train", "val"):
        rows = [results[i] for i in parts[part]]
        _write_text(lists / f"{part}_gt.txt",
                    [f"/{name} /laneseg_label_w16/{name[:-4]}.png {' '.join(map(str, ex))}" for _, name, ex, _ in rows])
        _write_text(lists / f"{part}.txt", [f"/{name}" for _, name, _, _ in rows])
    test = [results[i] for i in parts["test"]]
    _write_text(lists / "test.txt", [f"/{name}" for _, name, _, _ in test])
    for k, cat in enumerate(CULANE_CATEGORIES):
        _write_text(lists / "test_split" / f"test{k}_{cat}.txt", [name for _, name, _, tags in test if cat in tags])
    _write_text(out / "marking" / "classes.txt",
                [f"{i} {c} {APOLLO_IDS[c]}" for i, c in enumerate(MARKING_CLASSES)])
    _write_text(out / "synth.json", [json.dumps({
        "generator": "lanekd synthetic", "num": num, "seed": seed, "splits": list(splits),
        "config": asdict(cfg), "counts": {k: int(len(v)) for k, v in parts.items()}}, indent=2)])
