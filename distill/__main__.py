"""`python -m distill`: see `python -m distill --help`."""
import sys

from runtime.cli import main

COMMANDS: list[str] = ["distill.data.cli", "distill.train_cli", "distill.eval.cli", "distill.models.cli",
                      "distill.qat_cli"]

if __name__ == "__main__":
    sys.exit(main("python -m distill", __doc__, COMMANDS))
