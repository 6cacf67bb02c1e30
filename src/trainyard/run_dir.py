"""The run directory: the only place run outputs are written (layout, status, atomic writes).

    runs/<matrix>/<run>/
      spec.json  status.json  metrics.json  history.json  logs/  checkpoints/  final/  README.md
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from trainyard.contract import FINAL_STATES, RunState  # noqa: F401  (re-exported for callers)

STATES = tuple(s.value for s in RunState)


def json_safe(value: Any) -> Any:
    """JSON has no inf/nan: non-finite floats become strings ("inf", "nan") so readers see them."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json_atomic(path: Path, data: Any) -> None:
    """Write then rename, so a reader polling the file never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(json_safe(data), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def for_run(cls, runs_root: str | Path, matrix: str, run: str) -> RunDir:
        return cls(Path(runs_root) / matrix / run)

    spec_file = property(lambda self: self.path / "spec.json")
    status_file = property(lambda self: self.path / "status.json")
    metrics_file = property(lambda self: self.path / "metrics.json")
    history_file = property(lambda self: self.path / "history.json")
    logs = property(lambda self: self.path / "logs")
    log_file = property(lambda self: self.path / "logs" / "run.log")
    checkpoints = property(lambda self: self.path / "checkpoints")
    final = property(lambda self: self.path / "final")
    card_file = property(lambda self: self.path / "README.md")

    def create(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.checkpoints.mkdir(parents=True, exist_ok=True)

    # -- status
    def status(self) -> dict[str, Any]:
        return read_json(self.status_file, default={}) or {}

    @property
    def state(self) -> str | None:
        return self.status().get("state")

    def set_status(self, state: str, **fields: Any) -> dict[str, Any]:
        assert state in STATES, state
        status = self.status()
        now = time.time()
        status.update(fields)
        status["state"] = state
        status["updated_at"] = now
        if state == "running" and "started_at" not in fields:
            status.setdefault("started_at", now)
        if state in FINAL_STATES:
            status["finished_at"] = now
        write_json_atomic(self.status_file, status)
        return status

    def update_progress(self, **fields: Any) -> None:
        status = self.status()
        status.update(fields, updated_at=time.time())
        write_json_atomic(self.status_file, status)

    # -- outputs
    def metrics(self) -> dict[str, Any]:
        return read_json(self.metrics_file, default={}) or {}

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_json_atomic(self.metrics_file, dict(sorted(metrics.items())))

    def write_history(self, history: list[dict[str, Any]]) -> None:
        write_json_atomic(self.history_file, history)

    def history(self) -> list[dict[str, Any]]:
        return read_json(self.history_file, default=[]) or []

    def last_checkpoint(self) -> str | None:
        """The newest *complete* checkpoint-N folder (torch-free: the launcher calls it)."""
        from trainyard.checkpoints import last_complete_checkpoint

        return last_complete_checkpoint(self.checkpoints)
