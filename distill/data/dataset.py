"""The torch ``Dataset`` over a reader + transforms, its ``collate``, and ``build_dataset``.

Items are dicts: ``image`` float32 (3, H, W) normalised RGB, ``mask`` int64 (H, W) (255 ignore),
``exist`` float32 (L,), ``index`` int. Augmentation randomness comes from a numpy Generator seeded
by (seed, epoch, index): every sample draws its own augmentation, whichever DataLoader worker
loads it, so a resumed run sees exactly the augmentations an uninterrupted one would. The global
numpy RNG is never used; the Trainer calls ``set_epoch`` before each epoch.

Samples a ``skip_bad`` reader skips are also appended, one JSON line each, to a file per process
in the folder named by ``LANEKD_SKIP_LOG`` when it is set: DataLoader workers keep their own
reader state, so this is how the training command learns what was skipped (see
``distill.train_cli``).
"""
from __future__ import annotations

import json
import os
import inspect
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from distill.data.sample import IGNORE_INDEX, DataError, DataSpec, Sample
from distill.data.transforms import Compose, eval_transforms, train_transforms

DATASET_KINDS = ("culane", "tusimple", "llamas", "apollo", "cityscapes", "synthetic_marking")
_TRANSFORM_KEYS = ("flip", "rotate_deg", "rotate_p", "jitter", "interp")
SKIP_LOG_ENV = "LANEKD_SKIP_LOG"


def record_skips(reader: Any, done: int) -> int:
    """Append ``reader.bad`` entries from number ``done`` on to this process's skip log; the new count.

    Best effort: a skip log that cannot be written never stops training.
    """
    bad = getattr(reader, "bad", None)
    folder = os.environ.get(SKIP_LOG_ENV)
    if not bad or len(bad) <= done or not folder:
        return len(bad) if bad else done
    names = set(getattr(reader, "names", ()))
    root = Path(getattr(reader, "root", "."))
    rows = [{"key": key, "reason": reason, "image": str(root / key) if key in names else None}
            for key, reason in list(bad.items())[done:]]
    try:
        with open(Path(folder) / f"skipped-{os.getpid()}.jsonl", "a") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in rows))
    except OSError:
        pass
    return len(bad)


class SegDataset(Dataset):
    """A reader (``__len__``, ``__getitem__ -> Sample``, ``spec``, ``names``) plus transforms.

    ``transform`` must end in ``Normalize`` (as ``train_transforms`` / ``eval_transforms`` do).
    Augmentations depend only on (``seed``, epoch, index), never on worker scheduling.
    """

    def __init__(self, reader: Any, transform: Compose, seed: int = 0,
                 teacher_transform: Compose | None = None) -> None:
        self.reader = reader
        self.transform = transform
        self.teacher_transform = teacher_transform   # set: items also carry ``teacher_image``
        self.seed = int(seed)
        self.epoch = 0
        self._skips_logged = record_skips(reader, 0)     # list entries skipped while indexing

    @property
    def spec(self) -> DataSpec:
        return self.reader.spec

    @property
    def names(self) -> list[str]:
        return self.reader.names

    def __len__(self) -> int:
        return len(self.reader)

    def set_epoch(self, epoch: int) -> None:
        """Draw new augmentations for the next epoch (call before creating the loader iterator)."""
        self.epoch = int(epoch)

    def sample(self, index: int, epoch: int | None = None) -> Sample:
        """The transformed ``Sample`` (lanes, meta with geometry): what evaluators need."""
        return self._samples(index, epoch, teacher=False)[0]

    def _samples(self, index: int, epoch: int | None, teacher: bool) -> list[Sample]:
        """The frame through ``transform`` and, with ``teacher``, through ``teacher_transform`` too:
        both draw from the same (seed, epoch, index) generator, so they get the same flip, rotation
        and colour jitter, and differ only in their resize."""
        key = [self.seed, self.epoch if epoch is None else int(epoch), int(index)]
        raw = self.reader[index]
        self._skips_logged = record_skips(self.reader, self._skips_logged)
        transforms = [self.transform, self.teacher_transform] if teacher else [self.transform]
        return [t(raw, np.random.default_rng(key)) for t in transforms]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.item(index, self.epoch)

    def item(self, index: int, epoch: int) -> dict[str, Any]:
        """Item ``index`` with the augmentations of ``epoch`` (what persistent workers are asked for)."""
        s, *t = self._samples(index, epoch, teacher=self.teacher_transform is not None)
        for x in (s, *t):
            if x.image.ndim != 3 or x.image.shape[0] != 3 or x.image.dtype != np.float32:
                raise TypeError("SegDataset's transforms must end in Normalize (float32 (3, H, W) image)")
        h, w = s.image.shape[1:]
        mask = s.mask if s.mask is not None else np.full((h, w), IGNORE_INDEX, np.uint8)
        item = {"image": torch.from_numpy(s.image),
                "mask": torch.from_numpy(mask.astype(np.int64)),
                "exist": torch.from_numpy(np.asarray(s.exist, np.float32).copy()),
                "index": int(index)}
        if t:
            item["teacher_image"] = torch.from_numpy(t[0].image)
        return item


def collate(items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack a list of items into a batch (``index`` becomes an int64 tensor)."""
    if not items:
        raise ValueError("collate got an empty batch")
    batch = {"image": torch.stack([it["image"] for it in items]),
             "mask": torch.stack([it["mask"] for it in items]),
             "exist": torch.stack([it["exist"] for it in items]),
             "index": torch.tensor([it["index"] for it in items], dtype=torch.int64)}
    if "teacher_image" in items[0]:
        batch["teacher_image"] = torch.stack([it["teacher_image"] for it in items])
    return batch


def build_reader(kind: str, root: str | Path, split: str, **kw: Any) -> Any:
    """The reader for ``kind`` (one of ``DATASET_KINDS``); ``kw`` goes to its constructor.

    An option the reader does not take is a ``ValueError`` naming it and the valid ones.
    """
    cls = reader_class(kind)
    params = [n for n, p in inspect.signature(cls.__init__).parameters.items()
              if p.kind == p.KEYWORD_ONLY]
    unknown = sorted(set(kw) - set(params))
    if unknown:
        raise ValueError(f"the {kind} reader does not take option(s) {', '.join(unknown)} "
                         f"(data.options); it takes: {', '.join(params)}")
    if kind == "synthetic_marking":
        kw.setdefault("classes_file", Path(root) / kw.get("label_dir", "marking") / "classes.txt")
    try:
        return cls(root, split, **kw)
    except UnicodeDecodeError as exc:
        raise DataError(f"{root}: a list or label file of split {split!r} is not UTF-8 text "
                        f"({exc.reason} at byte {exc.start})") from None


def reader_class(kind: str) -> type:
    """The reader class of ``kind`` (one of ``DATASET_KINDS``)."""
    if kind == "culane":
        from distill.data.culane import CULane
        return CULane
    if kind == "tusimple":
        from distill.data.tusimple import TuSimple
        return TuSimple
    if kind == "llamas":
        from distill.data.llamas import LLAMAS
        return LLAMAS
    if kind in ("apollo", "synthetic_marking"):
        from distill.data.apollo import ApolloScapeMarking
        return ApolloScapeMarking
    if kind == "cityscapes":
        from distill.data.cityscapes import Cityscapes
        return Cityscapes
    raise ValueError(f"unknown dataset kind {kind!r}; valid: {', '.join(DATASET_KINDS)}")


def build_dataset(kind: str, root: str | Path, split: str, input_size: tuple[int, int],
                  crop_top: int | float = 0, train: bool = False, *, seed: int = 0,
                  teacher_size: tuple[int, int] | None = None, **kw: Any) -> SegDataset:
    """Reader + train or eval transforms for ``kind``.

    Transform options (``flip``, ``rotate_deg``, ``rotate_p``, ``jitter``, ``interp``) are taken
    from ``kw``; the rest goes to the reader (``line_width``, ``skip_bad``, ``classes_file``, ...).
    ``teacher_size`` (h, w): items also carry ``teacher_image``, the same frame with the same
    augmentations resized to that size, for a teacher that reads a larger input than its student.
    """
    t_kw = {k: kw.pop(k) for k in _TRANSFORM_KEYS if k in kw}
    reader = build_reader(kind, root, split, **kw)

    def transforms(hw: tuple[int, int]) -> Compose:
        size = (int(hw[0]), int(hw[1]))
        if train:
            return train_transforms(size, crop_top, **t_kw)
        return eval_transforms(size, crop_top, **{k: v for k, v in t_kw.items() if k == "interp"})

    teacher = transforms(teacher_size) if teacher_size is not None else None
    return SegDataset(reader, transforms(input_size), seed=seed, teacher_transform=teacher)
