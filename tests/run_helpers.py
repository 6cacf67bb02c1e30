"""Launching real launcher / trainer processes from tests (one-run matrices on the tiny model)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = {"PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}


def smoke_matrix(path: Path, tiny_model: str, runs: dict[str, dict], name: str = "lockm") -> Path:
    """A matrix YAML of smoke runs of rust_sft/5k, each {run name: train overrides}."""
    from trainyard.matrix import load_matrix
    from trainyard.smoke import smoke_spec

    spec = smoke_spec(load_matrix(ROOT / "jobs/rust_sft.yaml").run("5k"), tiny_model)
    base = spec.model_dump(mode="json")
    base.pop("name"), base.pop("matrix")
    if base["train"].get("max_steps") or any("max_steps" in train for train in runs.values()):
        base["train"].pop("epochs")  # writing both epochs and max_steps is a config error
    variants = [{"name": run, **{f"train.{k}": v for k, v in train.items()}} for run, train in runs.items()]
    path.write_text(yaml.safe_dump({"name": name, "variants": variants, "base": base}))
    return path


def launcher(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args], cwd=ROOT, env={**os.environ, **ENV, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def launch(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=ROOT, env={**os.environ, **ENV, **(env or {})}, capture_output=True, text=True, timeout=timeout)


def wait_for(predicate, timeout: float = 300, what: str = "condition") -> None:
    """Poll until predicate() is true; a generous deadline only guards against hangs."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def gone(pid: int) -> bool:
    from trainyard.run_lock import pid_alive

    return not pid_alive(pid)


def files_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def temp_files(root: Path) -> list[str]:
    return [str(p) for p in root.rglob(".*.tmp")]
