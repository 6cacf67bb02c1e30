"""The run directory: the only place run outputs are written (layout, status, atomic writes).

    runs/<matrix>/<run>/
      spec.json  status.json  metrics.json  history.json  logs/  checkpoints/  final/  README.md
      .lock  .queue.lock      (run_lock.py: who trains / who queued the run)

Every file here is written aside and renamed into place, so a reader (or a crash, or a
full disk) never leaves half a file; a failed write removes its temp file and raises an
OSError that names the path (`disk_fault_message` turns it into the user's fix).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
import time
from pathlib import Path
from typing import Any

from trainyard.contract import RunState, Status, fold_legacy_error


def json_safe(value: Any) -> Any:
    """JSON has no inf/nan: non-finite floats become strings ("inf", "nan") so readers see them."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# ----------------------------------------------------------------------------- atomic writes
def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a temp file beside `path`, then rename it over `path`.

    Readers see the old file or the new one, never half of it. On any failure (disk full,
    read-only, Ctrl-C) the temp file is removed and the OSError carries `path`.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.filename in (None, str(tmp)):  # name the file the user knows
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(json_safe(data), indent=2, sort_keys=True) + "\n")


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: bad JSON / not UTF-8
        return default


# Disk faults users can fix: what to say, by errno. {path} is the file or folder that failed.
_DISK_FAULTS = {
    errno.EROFS: "{path} is on a read-only file system",
    errno.ENOSPC: "no space left on the device holding {path}",
    errno.EDQUOT: "disk quota exceeded for {path}",
    errno.EACCES: "no permission to write {path}",
    errno.EPERM: "no permission to write {path}",
}
_FIXES = {
    errno.EROFS: "remount it read-write, or point {flag} at a writable directory",
    errno.ENOSPC: "free some space (old runs' checkpoints/ folders are the largest files) or point {flag} at a larger disk",
    errno.EDQUOT: "free some space or raise the quota, or point {flag} elsewhere",
    errno.EACCES: "fix its owner/permissions, or point {flag} at a directory you can write",
    errno.EPERM: "fix its owner/permissions, or point {flag} at a directory you can write",
}


def is_disk_fault(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _DISK_FAULTS


def disk_fault_message(exc: OSError, flag: str = "--runs-dir (or $TRAINYARD_RUNS_DIR)") -> str:
    """One line naming the path and the fix, e.g. 'no space left on the device holding
    runs/m/a/spec.json: free some space ... or point --runs-dir at a larger disk'."""
    path = exc.filename or "the run directory"
    if exc.errno not in _DISK_FAULTS:
        return f"cannot write {path}: {exc.strerror or exc}"
    return f"{_DISK_FAULTS[exc.errno].format(path=path)}: {_FIXES[exc.errno].format(flag=flag)}"


# ----------------------------------------------------------------------------- the run directory
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

    # -- status (contract.Status is the schema; these dicts are its JSON form)
    def read_status(self) -> Status | None:
        """The parsed status.json; None when the run has none yet (not started)."""
        data = read_json(self.status_file)
        return Status.from_dict(data) if isinstance(data, dict) else None

    def status(self) -> dict[str, Any]:
        """status.json as a dict ({} when missing); legacy `error` comes back as `reason`."""
        st = self.read_status()
        return st.to_dict() if st is not None else {}

    @property
    def state(self) -> str | None:
        st = self.read_status()
        return st.state.value if st is not None else None

    def set_status(self, state: RunState | str, **fields: Any) -> Status:
        state = RunState(state)  # a typo is a bug: ValueError
        now = time.time()
        data = {**self.status(), **fold_legacy_error(fields), "state": state.value, "updated_at": now}
        if state is RunState.RUNNING and data.get("started_at") is None:
            data["started_at"] = now
        if state.final:
            data["finished_at"] = now
        else:  # a new attempt: the last one's end time no longer describes the run
            data.pop("finished_at", None)
        return self._write_status(data)

    def update_progress(self, **fields: Any) -> Status:
        return self._write_status({**self.status(), **fold_legacy_error(fields), "updated_at": time.time()})

    def _write_status(self, data: dict[str, Any]) -> Status:
        status = Status.from_dict(json_safe(data))
        write_json_atomic(self.status_file, status.to_dict())
        return status

    # -- outputs
    def write_spec(self, spec_json: str) -> None:
        write_text_atomic(self.spec_file, spec_json)

    def write_card(self, markdown: str) -> None:
        write_text_atomic(self.card_file, markdown)

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
