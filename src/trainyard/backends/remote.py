"""What the CLI does with a remote backend: submit, refresh states, logs, cancel.

The local run directory is the launcher's record of a remote run: spec.json, and
status.json with the JobRef under "job". `refresh` asks the backend for each unfinished
job's state and copies the run's result files (status/metrics/history JSON, model card)
back, so `status` and `report` read remote runs exactly like local ones.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from trainyard.artifacts import FINAL_STATES, RunDir
from trainyard.backends import get_backend
from trainyard.backends.base import Backend, JobRef
from trainyard.spec import RunSpec

SKIP_STATES = ("completed", "diverged")
LIVE_STATES = ("queued", "running")


def job_of(rundir: RunDir) -> JobRef | None:
    """The remote job recorded in a run directory (None: local or never submitted)."""
    job = rundir.status().get("job")
    return JobRef(**job) if isinstance(job, dict) and job.get("backend") not in (None, "local") else None


def dry_run(backend: Backend, specs: list[RunSpec], console: Console) -> int:
    """Print every payload as YAML (stdout: `| kubectl apply -f -` works) and check it."""
    problems: list[str] = []
    docs = []
    for spec in specs:
        payload = backend.render(spec)
        problems += backend.check(payload)
        docs.append(payload)
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False, width=120))
    for p in problems:
        console.print(f"[red]invalid[/]: {p}", highlight=False)
    console.print(f"dry run ({backend.name}): {len(specs)} run(s) rendered{', with problems' if problems else ' and validated'}; nothing submitted")
    return 2 if problems else 0


def submit(backend: Backend, specs: list[RunSpec], runs_root: Path, console: Console) -> int:
    """Submit every run that is not finished or already live; record its JobRef."""
    rows: list[tuple[str, str, str]] = []
    failed = 0
    for spec in specs:
        rd = RunDir.for_run(runs_root, spec.matrix, spec.name)
        same = rd.spec_file.is_file() and RunSpec.from_json(rd.spec_file.read_text()).fingerprint() == spec.fingerprint()
        job = job_of(rd)
        if same and rd.state in SKIP_STATES:
            rows.append((spec.name, job.id if job else "", f"already {rd.state}"))
            continue
        if same and job is not None and rd.state in LIVE_STATES:
            state, _ = get_backend(job.backend).state(job)
            if state in LIVE_STATES:
                rows.append((spec.name, job.id, f"already {state}"))
                continue
        rd.create()
        rd.spec_file.write_text(spec.to_json())
        try:
            ref = backend.submit(spec)
        except Exception as exc:
            failed += 1
            rd.set_status("failed", error=f"submit failed: {exc}")
            rows.append((spec.name, "", f"[red]submit failed[/]: {exc}"))
            continue
        rd.set_status("queued", job=asdict(ref), submitted_at=time.time(), error=None, reason=None, detail=None)
        rows.append((spec.name, ref.id, "submitted"))
    t = Table(title=f"{specs[0].matrix if specs else ''}: {backend.name}")
    for c in ("run", "job", "note"):
        t.add_column(c)
    for r in rows:
        t.add_row(*r)
    console.print(t)
    if specs:
        console.print(f"follow with: python launch.py status --matrix ... ; logs: python launch.py logs --matrix ... RUN --follow ({specs[0].matrix})", highlight=False)
    return 1 if failed else 0


def refresh(specs: list[RunSpec], runs_root: Path, console: Console | None = None) -> None:
    """Update the local status of every unfinished remote run; fetch results back."""
    todo: dict[str, list[tuple[RunDir, JobRef, str, str | None]]] = {}
    for spec in specs:
        rd = RunDir.for_run(runs_root, spec.matrix, spec.name)
        job = job_of(rd)
        # done: results fetched, or canceled here (the job is gone, nothing to wait for)
        if job is None or rd.state == "canceled" or (rd.state in FINAL_STATES and rd.status().get("synced_at")):
            continue
        try:
            state, detail = get_backend(job.backend).state(job)
        except Exception as exc:  # one unreachable cluster must not hide the others
            if console:
                console.print(f"[yellow]{spec.name}: cannot read job {job.id}: {exc}[/]", highlight=False)
            continue
        todo.setdefault(job.backend, []).append((rd, job, state, detail))
    for name, items in todo.items():
        # queued runs have nothing to fetch yet; running ones have progress (step, loss)
        wanted = [job for _, job, state, _ in items if state != "queued"]
        try:
            files = get_backend(name).fetch_results(wanted) if wanted else {}
        except Exception as exc:
            files = {}
            if console:
                console.print(f"[yellow]{name}: results not fetched: {exc}[/]", highlight=False)
        for rd, job, state, detail in items:
            apply_results(rd, job, state, detail, files.get(job.id))


def apply_results(rd: RunDir, job: JobRef, state: str, detail: str | None, files: dict[str, bytes] | None) -> None:
    """Merge the backend's view (state, detail) with the run's own files from the job.

    The run's status.json knows more (diverged, canceled, its error, step and loss); the
    backend knows when a pod died without writing it (OOM kill, deadline, deleted Job).
    """
    remote: dict[str, Any] = {}
    if files:
        if "status.json" in files:
            remote = _loads(files["status.json"]) or {}
        if "metrics.json" in files:
            rd.write_metrics(_loads(files["metrics.json"]) or {})
        if "history.json" in files:
            rd.write_history(_loads(files["history.json"]) or [])
        if "README.md" in files:
            rd.card_file.write_bytes(files["README.md"])
    fields = {k: v for k, v in remote.items() if k not in ("state", "job", "pid", "updated_at", "finished_at")}
    remote_state = remote.get("state")
    final = state not in LIVE_STATES
    if final and remote_state in FINAL_STATES:
        state = remote_state  # the run said how it ended
    elif final and state == "failed":
        fields["error"] = fields.get("error") or detail
    fields["detail"] = detail
    if final and files is not None:
        fields["synced_at"] = time.time()
    rd.set_status(state, job=asdict(job), **fields)


def _loads(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def logs(rundir: RunDir, follow: bool) -> int:
    job = job_of(rundir)
    assert job is not None
    try:
        for line in get_backend(job.backend).logs(job, follow=follow):
            print(line, flush=True)
    except RuntimeError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return 0


def cancel(rundir: RunDir) -> bool:
    """Delete the run's job; True when there was a live one to stop."""
    job = job_of(rundir)
    if job is None or rundir.state in FINAL_STATES:
        return False
    get_backend(job.backend).cancel(job)
    # the pod gets SIGTERM and checkpoints; the next submit resumes from there
    rundir.set_status("canceled", reason=f"canceled by user (job {job.id} deleted)")
    return True
