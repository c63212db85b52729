"""`python -m export`: see `python -m export --help`."""
import sys

from runtime.cli import main

COMMANDS: list[str] = ["export.cli"]

if __name__ == "__main__":
    sys.exit(main("python -m export", __doc__, COMMANDS))
