#!/usr/bin/env python
"""Thin shim so `python launch.py ...` works from a checkout: see trainyard.cli."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from trainyard.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
