"""`python -m runtime`: see `python -m runtime --help`."""
import sys

from runtime.cli import main

COMMANDS: list[str] = ["runtime.commands"]

if __name__ == "__main__":
    sys.exit(main("python -m runtime", __doc__, COMMANDS))
