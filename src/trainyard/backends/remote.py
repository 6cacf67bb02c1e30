"""Remote runs seen from this machine: submit, record the job, refresh state and files.

The local run directory stays the one record of a run, whatever executes it: spec.json,
and status.json with "job" = the JobRef (backend, id, url, extra). `status`, `logs`,
`cancel` and `report` pick the backend from that record, so a matrix can mix backends
and any machine holding runs/ can follow its jobs. Works for every `base.Backend`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from trainyard.backends import get_backend
from trainyard.backends.base import Backend, JobRef
from trainyard.contract import ACTIVE_STATES, DONE_STATES, FINAL_STATES, RunState
from trainyard.errors import BackendError
from trainyard.hub_storage import artifacts_prefix, merge_run_files, sync_run
from trainyard.run_dir import RunDir
from trainyard.spec import RunSpec

# DONE_STATES: final results, re-submitting keeps them; ACTIVE_STATES: a job may still run.


def job_of(rundir: RunDir) -> JobRef | None:
    job = rundir.status().get("job")
    if not isinstance(job, dict) or not job.get("backend") or not job.get("id"):
        return None
    return JobRef(**{f.name: job.get(f.name) for f in dataclasses.fields(JobRef)})


class BackendCache:
    """One backend instance per name, so each API client (and its whoami) is made once."""

    def __init__(self, *preset: Backend):
        self._by_name = {b.name: b for b in preset}

    def __call__(self, name: str) -> Backend:
        if name not in self._by_name:
            self._by_name[name] = get_backend(name)
        return self._by_name[name]


@dataclass
class Submission:
    spec: RunSpec
    rundir: RunDir
    action: str  # submitted | skipped | failed
    note: str = ""
    job: JobRef | None = None


def validate_all(specs: list[RunSpec], backend: Backend) -> list[str]:
    """Every problem of every run, found before the first job is submitted."""
    problems = []
    for spec in specs:
        try:
            backend.render(spec)
        except (BackendError, ValueError) as err:
            problems.extend(str(err).splitlines())
    return problems


def submit_runs(
    specs: list[RunSpec],
    backend: Backend,
    runs_root: Path,
    backends: BackendCache | None = None,
    parallel: int | None = None,
    poll_s: float = 30.0,
    on_submit=None,
) -> list[Submission]:
    """Submit each run unless it already finished, or its job is still queued/running.

    With `parallel` N, at most N jobs of these runs are queued or running at once (jobs
    still active from an earlier launch count): the rest are submitted as earlier ones end,
    polling their state every `poll_s` seconds; it returns once the last one is submitted.
    `on_submit(submission)` is called as each one is decided (the CLI prints progress).
    """
    backends = backends or BackendCache(backend)
    out: list[Submission] = []
    waiting: list[tuple[RunSpec, RunDir]] = []
    active: list[JobRef] = []

    def record(sub: Submission) -> None:
        out.append(sub)
        if on_submit is not None:
            on_submit(sub)

    for spec in specs:
        rundir = RunDir.for_run(runs_root, spec.matrix, spec.name)
        state = rundir.state
        if state in DONE_STATES and rundir.spec_file.is_file() and RunSpec.from_json(rundir.spec_file.read_text()).training_fingerprint() == spec.training_fingerprint():
            record(Submission(spec, rundir, "skipped", f"already {state}"))
            continue
        job = job_of(rundir)
        if job is not None and state in ACTIVE_STATES:
            try:
                remote_state, _ = backends(job.backend).state(job)
            except Exception as err:  # unknown is not "gone": never start a second copy blindly
                record(Submission(spec, rundir, "failed", f"cannot check its job {job.id} ({err}); retry, or cancel it first", job))
                continue
            if remote_state in ACTIVE_STATES:
                record(Submission(spec, rundir, "skipped", f"still {remote_state} as {job.backend} job {job.id}", job))
                active.append(job)
                continue
        waiting.append((spec, rundir))

    while waiting:
        if parallel is not None and len(active) >= parallel:
            time.sleep(poll_s)
            active = [job for job in active if _still_active(job, backends)]
            continue
        spec, rundir = waiting.pop(0)
        sub = _submit_one(spec, rundir, backend)
        if sub.job is not None:
            active.append(sub.job)
        record(sub)
    return out


def _still_active(job: JobRef, backends: BackendCache) -> bool:
    try:
        return backends(job.backend).state(job)[0] in ACTIVE_STATES
    except Exception:  # cannot tell: keep its slot (never exceed the cap on a network blip)
        return True


def _submit_one(spec: RunSpec, rundir: RunDir, backend: Backend) -> Submission:
    try:
        ref = backend.submit(spec)
    except (BackendError, ValueError) as err:
        return Submission(spec, rundir, "failed", str(err))
    rundir.path.mkdir(parents=True, exist_ok=True)
    rundir.write_spec(spec.to_json())
    if rundir.status_file.exists():  # a new attempt: nothing of the last one's status carries over
        rundir.status_file.unlink()
    tracking = (ref.extra or {}).get("tracking_url")
    rundir.set_status(RunState.QUEUED, job=dataclasses.asdict(ref), backend=backend.name, submitted_at=time.time(), **({"tracking_url": tracking} if tracking else {}))
    return Submission(spec, rundir, "submitted", ref.url or ref.id, ref)


def refresh(rundir: RunDir, backends: BackendCache) -> str | None:
    """Bring a remote run's local directory up to date. Returns a warning, or None.

    The job's stage is read first, then the run's own files are synced: a job that ended
    has uploaded everything by then. The run's status.json is authoritative; the
    platform's stage only fills in when the run never reported an end (killed, out of
    memory, timeout, image not pulled).
    """
    job = job_of(rundir)
    status = rundir.status()
    if job is None or status.get("synced") == "final":
        return None
    try:
        remote_state, detail = backends(job.backend).state(job)
    except Exception as err:
        return f"{rundir.path.name}: cannot reach {job.backend} job {job.id}: {err}"
    warning = None
    repo = (job.extra or {}).get("artifacts_repo")
    if repo:
        try:
            sync_run(rundir, repo, artifacts_prefix(rundir.path.parent.name, rundir.path.name), since=status.get("submitted_at"))
        except Exception as err:
            warning = f"{rundir.path.name}: cannot sync its files from {repo}: {err}"
    elif remote_state != "queued":  # k8s: the files sit on a volume; the backend fetches them
        try:
            files = backends(job.backend).fetch_results([job]).get(job.id) or {}
            merge_run_files(rundir, files, since=status.get("submitted_at"))
        except Exception as err:
            warning = f"{rundir.path.name}: cannot fetch its files from {job.backend} job {job.id}: {err}"
    state = rundir.state
    if remote_state in FINAL_STATES:
        if state not in FINAL_STATES:
            where = f"{job.backend} job {job.id}"
            if remote_state == RunState.COMPLETED:
                rundir.set_status(RunState.COMPLETED, reason=f"{where} completed but the run's files did not come back" + (f" from {repo}" if repo else ""))
            elif remote_state == RunState.CANCELED:
                rundir.set_status(RunState.CANCELED, reason=f"{where} canceled" + (f": {detail}" if detail else ""))
            else:
                rundir.set_status(RunState.FAILED, reason=f"{where} ended as {remote_state} while the run was {state or 'starting'}" + (f": {detail}" if detail else ""))
        rundir.update_progress(synced="final")  # nothing changes any more: stop asking
    elif remote_state == RunState.RUNNING and state in (None, RunState.QUEUED):
        rundir.set_status(RunState.RUNNING)
    return warning


def refresh_all(specs: list[RunSpec], runs_root: Path, backends: BackendCache | None = None) -> list[str]:
    backends = backends or BackendCache()
    warnings = []
    for spec in specs:
        rundir = RunDir.for_run(runs_root, spec.matrix, spec.name)
        warning = refresh(rundir, backends)
        if warning:
            warnings.append(warning)
    return warnings
