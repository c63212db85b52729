"""Writing an artefact (model file + ``model.json``) so that a failure leaves nothing behind.

Every export stage writes under hidden temporary names in the output folder, verifies, and only
then renames both files into place. Any exception, Ctrl-C included, removes the temporaries, so the
previous artefact (if any) stays as it was. Temporaries of a run that was killed outright (kill -9,
power loss) are recognised by the dead process id in their name and removed by the next run.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from runtime.metadata import MetadataError, ModelMeta, sidecar_path


class ExportError(RuntimeError):
    """An export that cannot be done or did not verify; nothing was written."""


def check_out(out: str | Path, *suffixes: str) -> Path:
    """``out`` as a Path, refused unless it ends in one of ``suffixes`` and its folder exists."""
    out = Path(out)
    if out.suffix.lower() not in suffixes:
        raise ExportError(f"output must end in {' or '.join(suffixes)}: {out}")
    if not out.parent.is_dir():
        raise ExportError(f"output folder does not exist: {out.parent}")
    return out


def temp_paths(out: Path) -> tuple[Path, Path]:
    """Hidden temporary names for a model and its sidecar in the output folder (pid-stamped)."""
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp{out.suffix}")
    return tmp, sidecar_path(tmp)


def commit(tmp_model: Path, tmp_side: Path, out: Path) -> Path:
    """Move a verified model and its sidecar to their final names (sidecar first)."""
    os.replace(tmp_side, sidecar_path(out))
    os.replace(tmp_model, out)
    return out


def discard(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:        # someone else's live process
        return True
    return True


def clean_stale(out: Path) -> list[Path]:
    """Remove temporaries of ``out`` left by runs whose process is gone; return what was removed."""
    pattern = re.compile(rf"^\.{re.escape(out.stem)}\.(\d+)\.tmp")
    removed = []
    for p in out.parent.glob(f".{out.stem}.*.tmp*"):
        m = pattern.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            discard(p)
            removed.append(p)
    return removed


@contextmanager
def staged(out: Path) -> Iterator[tuple[Path, Path]]:
    """Temporary (model, sidecar) paths for ``out``; removed on any exception, Ctrl-C included.

    The body writes both, verifies, and calls ``commit``; stale temporaries from killed runs are
    cleaned first (and named on stdout, so a user sees where disk space went).
    """
    for p in clean_stale(out):
        print(f"removed a temporary file left by a killed run: {p}")
    tmp, tmp_side = temp_paths(out)
    try:
        yield tmp, tmp_side
    except BaseException:
        discard(tmp, tmp_side)
        raise


def read_meta(path: str | Path) -> ModelMeta:
    """The sidecar of an exported model (``model.json`` beside it)."""
    side = sidecar_path(path)
    if not side.is_file():
        raise MetadataError(f"{path}: no sidecar {side.name} beside it (export writes one)")
    return ModelMeta.load(side)
