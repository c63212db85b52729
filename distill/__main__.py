"""`python -m distill`: see `python -m distill --help`."""
import sys

from runtime.cli import main

COMMANDS: list[str] = []

if __name__ == "__main__":
    sys.exit(main("python -m distill", __doc__, COMMANDS))
