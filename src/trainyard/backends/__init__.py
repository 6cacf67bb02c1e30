"""Backends submit runs as jobs. Only this package talks to clusters / job APIs.

Each backend turns one RunSpec into one job that runs `python -m trainyard.run` on the
spec; `local` executes them as subprocesses on this machine. Remote backends implement
`base.Backend` and register here as "module:Class" (imported only when used, so the
Kubernetes client is not needed to run HF Jobs and vice versa).
"""

from __future__ import annotations

import importlib

from trainyard.backends.base import Backend

REMOTE_BACKENDS: dict[str, str] = {
    "hf-jobs": "trainyard.backends.hf_jobs:HfJobsBackend",
    "k8s": "trainyard.backends.kubernetes:KubernetesBackend",
}
BACKENDS = ("local", *REMOTE_BACKENDS)


def get_backend(name: str) -> Backend:
    """A fresh instance of the remote backend called `name` (as recorded in a JobRef)."""
    if name not in REMOTE_BACKENDS:
        raise KeyError(f"unknown remote backend {name!r}; known: {sorted(REMOTE_BACKENDS)}")
    module, cls = REMOTE_BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)()
