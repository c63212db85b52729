"""Argparse plumbing shared by the four ``python -m`` entry points.

Each command module exposes ``add_parser(subparsers)``, which adds its subcommand and sets
``func`` (a thin wrapper over one public function) as the parser default.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence


def main(prog: str, description: str, modules: Sequence[str], argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in modules:
        importlib.import_module(name).add_parser(sub)
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)
