"""`python -m demo`: see `python -m demo --help`."""
import sys

from runtime.cli import main

COMMANDS: list[str] = ["demo.video"]

if __name__ == "__main__":
    sys.exit(main("python -m demo", __doc__, COMMANDS))
