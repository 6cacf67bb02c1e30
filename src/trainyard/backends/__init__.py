"""Backends submit runs as jobs. Only this package talks to clusters / job APIs.

Each backend turns one RunSpec into one job that runs `python -m trainyard.run` on the
spec; `local` executes them as subprocesses on this machine, the remote ones implement
`base.Backend` and are looked up by name (imported lazily: their clients are optional).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainyard.backends.base import Backend

# name -> "module:Class" of each remote backend (`--backend NAME`)
REMOTE_BACKENDS = {
    "k8s": "trainyard.backends.kubernetes:KubernetesBackend",
}
BACKENDS = ("local", *REMOTE_BACKENDS)


_INSTANCES: dict[str, Backend] = {}  # one client per backend per process (tests put fakes here)


def get_backend(name: str) -> Backend:
    """The remote backend instance for a `--backend` name (or a JobRef's backend)."""
    if name not in REMOTE_BACKENDS:
        raise ValueError(f"unknown remote backend {name!r}; choose one of {sorted(REMOTE_BACKENDS)}")
    if name not in _INSTANCES:
        module, cls = REMOTE_BACKENDS[name].split(":")
        _INSTANCES[name] = getattr(importlib.import_module(module), cls)()
    return _INSTANCES[name]
