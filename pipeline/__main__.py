"""`python -m pipeline <stage> [item]`, what dvc.yaml calls: the `atelier` command under another
name (see pipeline/cli.py)."""

from __future__ import annotations

import sys

from pipeline.cli import main

__all__ = ["main"]


if __name__ == "__main__":
    sys.exit(main(prog="python -m pipeline"))
