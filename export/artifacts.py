"""Writing an artefact (model file + ``model.json``) so that a failure leaves nothing behind.

Every export stage writes under hidden temporary names in the output folder, verifies, and only
then renames both files into place. Any exception, Ctrl-C included, removes the temporaries, so the
previous artefact (if any) stays as it was. Temporaries of a run that was killed outright (kill -9,
power loss) are recognised by the dead process id in their name and removed by the next run: the
naming and clean-up are ``runtime.partial``'s, shared with every other writing command.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from runtime import partial
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
    tmp = partial.temp_path(out)
    return tmp, sidecar_path(tmp)


def commit(tmp_model: Path, tmp_side: Path, out: Path) -> Path:
    """Move a verified model and its sidecar to their final names (sidecar first)."""
    os.replace(tmp_side, sidecar_path(out))
    os.replace(tmp_model, out)
    return out


def discard(*paths: Path) -> None:
    for p in paths:
        partial.remove(p)


@contextmanager
def staged(out: Path) -> Iterator[tuple[Path, Path]]:
    """Temporary (model, sidecar) paths for ``out`` (``runtime.partial``'s staging, which removes a
    killed run's leftovers first and this run's temporaries on any exception, Ctrl-C included).

    The body writes both, verifies, and calls ``commit``.
    """
    with partial.staged(out) as tmp:
        yield tmp, sidecar_path(tmp)


def read_meta(path: str | Path) -> ModelMeta:
    """The sidecar of an exported model (``model.json`` beside it)."""
    side = sidecar_path(path)
    if not side.is_file():
        raise MetadataError(f"{path}: no sidecar {side.name} beside it (export writes one)")
    return ModelMeta.load(side)
