"""Outputs written under a pid-stamped temporary name and renamed into place only when complete.

``out`` is first written as ``.<stem>.<pid>.tmp<suffix>`` beside it (a file or a folder; the
suffix is kept so that e.g. OpenCV still picks the container from ``.mp4``). Any exception,
Ctrl-C included, removes every temporary of this process for ``out``, so a previous ``out`` stays
as it was. Temporaries of a run that was killed outright carry a dead pid: the next run removes
them and names them on stderr.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (someone else's live process counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_path(out: str | Path) -> Path:
    """This process's temporary name for ``out``."""
    out = Path(out)
    return out.with_name(f".{out.stem}.{os.getpid()}.tmp{out.suffix}")


def _temps(out: Path) -> list[tuple[Path, int]]:
    pattern = re.compile(rf"^\.{re.escape(out.stem)}\.(\d+)\.tmp")
    if not out.parent.is_dir():
        return []
    found = []
    for p in out.parent.glob(f".{glob_escape(out.stem)}.*.tmp*"):
        m = pattern.match(p.name)
        if m:
            found.append((p, int(m.group(1))))
    return found


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def remove(path: Path) -> None:
    """Delete a file or a folder tree; a missing path is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def clean_stale(out: str | Path) -> list[Path]:
    """Remove the temporaries of ``out`` left by processes that are gone; return them."""
    removed = []
    for p, pid in _temps(Path(out)):
        if pid != os.getpid() and not pid_alive(pid):
            remove(p)
            removed.append(p)
    return removed


def discard_own(out: str | Path) -> None:
    """Remove every temporary of ``out`` that this process made (the sidecars' too)."""
    for p, pid in _temps(Path(out)):
        if pid == os.getpid():
            remove(p)


@contextmanager
def staged(out: str | Path) -> Iterator[Path]:
    """The temporary path to write ``out`` under; the body renames it into place when done.

    Stale temporaries from killed runs are removed first (and named on stderr); on any exception
    (Ctrl-C included) this process's temporaries for ``out`` are removed and the error re-raised.
    """
    out = Path(out)
    for p in clean_stale(out):
        print(f"removed a temporary left by a killed run: {p}", file=sys.stderr)
    try:
        yield temp_path(out)
    except OSError as exc:
        discard_own(out)
        if exc.filename is None and exc.errno is not None:    # a write() that failed: say which output
            raise type(exc)(exc.errno, exc.strerror, str(out)) from None
        raise
    except BaseException:
        discard_own(out)
        raise
