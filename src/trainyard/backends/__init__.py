"""Backends submit runs as jobs. Only this package talks to clusters / job APIs.

Each backend turns one RunSpec into one job that runs `python -m trainyard.run` on the
spec; `local` executes them as subprocesses on this machine.
"""

from __future__ import annotations

BACKENDS = ("local",)
