"""Argparse plumbing shared by the four ``python -m`` entry points, and their one error boundary.

Each command module exposes ``add_parser(subparsers)``, which adds its subcommand and sets
``func`` (a thin wrapper over one public function) as the parser default.

The boundary (:func:`guarded`) turns an *expected* failure -- bad input the user can fix -- into
one or two lines on stderr and exit code 2; a bug (any other exception) ends with a one-line
"internal error" and exit code 70. ``--debug`` or ``LANEKD_DEBUG=1`` re-raises instead, so the
Python traceback shows. Ctrl-C exits with 130. Option values are validated while parsing with the
small ``argparse`` types below (``positive_int``, ``non_negative_int``, ...), so a bad value is
refused before any work starts, with the valid range in the message.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import warnings
from typing import Any, Callable, Sequence

DEBUG_ENV = "LANEKD_DEBUG"
EXIT_ERROR = 2          # expected failure: bad input, missing file, failed check
EXIT_BUG = 70           # internal error (EX_SOFTWARE)
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGINT
DEBUG_HELP = f"show the Python traceback of any error (same as {DEBUG_ENV}=1)"

# Our own packages: every exception class they define is a message meant for the user.
_OWN_PACKAGES = ("distill", "export", "runtime", "demo")
# Libraries whose exceptions mean "this input file is malformed", not "lanekd has a bug".
_INPUT_LIBRARIES = ("yaml", "onnx", "onnxruntime", "google.protobuf")
_DISK_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                errno.EPERM: "operation not permitted"}
_BUG_NAMES = {"TypeError", "AttributeError", "IndexError", "KeyError", "NameError", "AssertionError",
              "ZeroDivisionError", "RuntimeError", "UnboundLocalError", "RecursionError", "NotImplementedError"}
# The factories that build what a recipe names: a KeyError (unknown name) or TypeError (unknown
# keyword) raised right there is the recipe's mistake, not a bug.
_FACTORY_FILES = tuple(os.path.join("distill", *p) for p in (("registry.py",), ("models", "base.py"),
                                                             ("methods", "base.py")))
_WORKER_MARK = "Original Traceback (most recent call last):"


# ---------------------------------------------------------------------------------------------
# Option types: validated where they are parsed, the valid range in the message
# ---------------------------------------------------------------------------------------------

def _number(kind: type, text: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None
    if kind is float and not abs(value) < float("inf"):       # nan, inf
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def bounded(kind: type, lo: float | None = None, hi: float | None = None, *,
            lo_open: bool = False) -> Callable[[str], Any]:
    """An argparse ``type`` for ``kind`` (int or float) within [lo, hi] ((lo, hi] when ``lo_open``)."""
    low = "" if lo is None else f"{'>' if lo_open else '>='} {lo}"
    high = "" if hi is None else f"<= {hi}"
    what = " and ".join(p for p in (low, high) if p)

    def parse(text: str) -> Any:
        value = _number(kind, text)
        if (lo is not None and (value <= lo if lo_open else value < lo)) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    parse.__name__ = f"{kind.__name__} {what}".strip()    # argparse names the type in some errors
    return parse


positive_int = bounded(int, 1)
non_negative_int = bounded(int, 0)
positive_float = bounded(float, 0, lo_open=True)
non_negative_float = bounded(float, 0)
fraction = bounded(float, 0, 1)


# ---------------------------------------------------------------------------------------------
# The error boundary
# ---------------------------------------------------------------------------------------------

def debug_requested(argv: Sequence[str] | None = None) -> bool:
    """``--debug`` on the command line or ``LANEKD_DEBUG`` set to anything but 0/empty."""
    env = os.environ.get(DEBUG_ENV, "").strip().lower()
    return env not in ("", "0", "false", "no") or "--debug" in (argv or ())


def unwrap_worker_error(exc: BaseException) -> tuple[str, str] | None:
    """(original type name, original message) of an error re-raised from a DataLoader worker.

    torch re-raises a worker's exception in the main process as the same type with a message
    ``Caught X in DataLoader worker process N.`` followed by the worker's whole traceback text
    (or as a ``RuntimeError`` when the type cannot be rebuilt). The last lines of that text are
    ``module.Type: message``: that is what the user would have seen in a single process.
    """
    text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    if not text.startswith("Caught ") or _WORKER_MARK not in text:
        return None
    head, tb = text.split(_WORKER_MARK, 1)
    name = head[len("Caught "):].split(" ", 1)[0]
    lines = tb.rstrip("\n").split("\n")
    last_frame = max((k for k, line in enumerate(lines) if line.startswith("  ")), default=-1)
    tail = "\n".join(lines[last_frame + 1:]).strip()
    _, sep, msg = tail.partition(": ")
    return name, (msg if sep else tail).strip()


def _own(cls: type) -> bool:
    return any(c.__module__.split(".")[0] in _OWN_PACKAGES for c in cls.__mro__)


def _from_library(cls: type) -> bool:
    mod = cls.__module__ or ""
    return any(mod == lib or mod.startswith(lib + ".") for lib in _INPUT_LIBRARIES)


def _raised_in(exc: BaseException, filename: str) -> bool:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.endswith(filename)


def _os_message(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    reason = _DISK_ERRNOS.get(exc.errno or 0) or exc.strerror or str(exc)
    hint = {errno.ENOSPC: "free some space or write elsewhere", errno.EDQUOT: "free some space or write elsewhere",
            errno.EROFS: "write somewhere writable", errno.EACCES: "fix its permissions or choose another path",
            errno.EPERM: "fix its permissions or choose another path",
            errno.ENOENT: "check the path", errno.EEXIST: "remove it or choose another path"}.get(exc.errno or 0)
    if not where:      # our own OSError("could not write X") style messages carry the path already
        if exc.errno in _DISK_ERRNOS or exc.strerror:
            return reason + (f" ({hint})" if hint else "")
        return str(exc) or reason
    return f"{where}: {reason}" + (f" ({hint})" if hint else "")


def _yaml_message(exc: BaseException) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f"YAML error: {problem}"
    return f"{mark.name}:{mark.line + 1}:{mark.column + 1}: YAML syntax error: {problem}"


def describe_error(exc: BaseException) -> str | None:
    """The user-facing message for an expected failure, or None when ``exc`` looks like a bug."""
    worker = unwrap_worker_error(exc)
    if worker is not None:
        name, msg = worker
        if type(exc).__name__ == name:          # torch rebuilt the original type: judge it as usual
            expected = _own(type(exc)) or isinstance(exc, (ValueError, OSError)) or _from_library(type(exc))
        else:                                   # it fell back to RuntimeError: judge by the name
            expected = name not in _BUG_NAMES
        return msg if expected else None
    cls = type(exc)
    if isinstance(exc, OSError):        # the file system or the OS said no: not a lanekd bug
        return _os_message(exc)
    if isinstance(exc, UnicodeDecodeError):     # the reader did not say which file: say what it means
        return (f"a file that should be text is not UTF-8 ({exc.reason} at byte {exc.start}); is a path "
                f"pointing at a binary file? --debug shows where it was read")
    if cls.__module__.startswith("yaml"):
        return _yaml_message(exc)
    if isinstance(exc, MemoryError) or cls.__name__ == "OutOfMemoryError":
        first = str(exc).strip().split("\n")[0]
        return f"out of memory{': ' + first if first else ''} (try a smaller batch, input size or model)"
    if isinstance(exc, (KeyError, TypeError)) and any(_raised_in(exc, f) for f in _FACTORY_FILES):
        msg = str(exc.args[0]) if exc.args else str(exc)
        if isinstance(exc, KeyError) or "argument" in msg:     # an unknown name, or a misspelt option
            return msg + (" (check the model's kwargs / the method's parameters in the recipe)"
                          if isinstance(exc, TypeError) else "")
    if _own(cls) or isinstance(exc, ValueError) or _from_library(cls):
        msg = str(exc).strip()
        return msg or cls.__name__
    return None


def report_error(prog: str, exc: BaseException) -> int:
    """Print the one-line message for ``exc`` and return the exit code."""
    msg = describe_error(exc)
    if msg is not None:
        lines = [line.rstrip() for line in msg.strip().splitlines() if line.strip()]
        if len(lines) > 2:              # a library's raw multi-line text: its first lines say what
            lines = lines[:2] + [f"  ... ({len(lines) - 2} more lines with --debug)"]
        print(f"{prog}: error: " + "\n".join(lines), file=sys.stderr)
        return EXIT_ERROR
    name, first = type(exc).__name__, str(exc).strip().split("\n")[0]
    worker = unwrap_worker_error(exc)
    if worker is not None:
        name, first = worker[0], f"{worker[1]} (in a DataLoader worker)"
    print(f"{prog}: internal error: {name}{': ' + first if first else ''}\n"
          f"{prog}: this is a bug in lanekd; rerun with --debug (or {DEBUG_ENV}=1) for the traceback "
          f"and report it", file=sys.stderr)
    return EXIT_BUG


_HANDLER_PID: list[int] = []


def _stop_like_ctrl_c(signum: int, frame: Any) -> None:
    """SIGTERM as Ctrl-C -- in the process that asked for it only: a forked worker (a Pool being
    terminated, a DataLoader worker) inherits the handler and must simply die as before."""
    import signal

    if _HANDLER_PID and os.getpid() != _HANDLER_PID[0]:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt


def catch_stop_signals() -> dict[int, Any]:
    """Ctrl-C, ``kill -INT`` and ``kill`` (SIGTERM) all raise ``KeyboardInterrupt``, so writers
    clean their temporaries. SIGINT is set explicitly: ``cmd &`` in a script inherits it ignored.
    Returns the previous handlers (empty off the main thread, where signals cannot be set)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    _HANDLER_PID[:] = [os.getpid()]
    return {signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
            signal.SIGTERM: signal.signal(signal.SIGTERM, _stop_like_ctrl_c)}


def _restore_signals(previous: dict[int, Any]) -> None:
    import signal

    for sig, handler in previous.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def guarded(prog: str, fn: Callable[[], Any], debug: bool = False) -> int:
    """Run ``fn()`` inside the error boundary; its return value (None = 0) becomes the exit code.

    Ctrl-C and SIGTERM end it with exit code 130 (after ``fn``'s own cleanup ran)."""
    previous = catch_stop_signals()
    try:
        with warnings.catch_warnings():
            if not debug:       # a warning is a line for the user, not a file:line and a source line
                warnings.showwarning = lambda message, category, *a, **k: print(
                    f"{prog}: warning: {message}", file=sys.stderr)
            rc = fn()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:                 # `... | head`: the reader went away; not an error
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except SystemExit:
        raise
    except Exception as exc:
        if debug:
            raise
        return report_error(prog, exc)
    finally:
        _restore_signals(previous)
    return int(rc or 0)


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)


def _strip_debug(argv: Sequence[str]) -> list[str]:
    """``--debug`` is accepted anywhere on the line (argparse only knows it before the command)."""
    return [a for a in argv if a != "--debug"]


def main(prog: str, description: str, modules: Sequence[str], argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(raw)
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     epilog=f"Errors end with a one-line message and exit code {EXIT_ERROR}; "
                                            f"--debug or {DEBUG_ENV}=1 shows the traceback instead.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_debug_flag(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in modules:
        importlib.import_module(name).add_parser(sub)
    args = parser.parse_args(_strip_debug(raw))
    args.debug = debug
    return guarded(prog, lambda: args.func(args), debug)
