"""Local backend: each run is a subprocess of the container entrypoint.

Sequential by default, `--parallel N` at most N at once. A live table shows run states.
Ctrl-C (or SIGTERM) asks every running run to checkpoint and stop, and marks runs canceled;
the next launch skips completed runs and resumes the others from their last checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from trainyard.run_dir import FINAL_STATES, RunDir
from trainyard.spec import RunSpec

GRACE_SECONDS = 60
SKIP_STATES = ("completed", "diverged")  # final results: re-running the matrix keeps them


@dataclass
class LocalJob:
    spec: RunSpec
    rundir: RunDir
    proc: subprocess.Popen | None = None
    skipped: bool = False
    note: str = ""
    started: float = field(default=0.0)

    @property
    def state(self) -> str:
        return self.rundir.state or "queued"


def prepare(specs: list[RunSpec], runs_root: Path) -> list[LocalJob]:
    """Write spec.json / status.json for each run; mark finished ones as skipped."""
    jobs = []
    for spec in specs:
        rundir = RunDir.for_run(runs_root, spec.matrix, spec.name)
        job = LocalJob(spec, rundir)
        existing = rundir.spec_file.is_file() and RunSpec.from_json(rundir.spec_file.read_text())
        if existing and rundir.state in SKIP_STATES and existing.training_fingerprint() == spec.training_fingerprint():
            job.skipped, job.note = True, f"already {rundir.state}"
        else:
            rundir.create()
            rundir.spec_file.write_text(spec.to_json())
            resume = rundir.last_checkpoint()
            job.note = f"resumes from {Path(resume).name}" if resume else ""
            rundir.set_status("queued", note=job.note, error=None, reason=None, job=None)  # job: no remote job any more
        jobs.append(job)
    return jobs


def stale_runs(specs: list[RunSpec], runs_root: Path) -> list[tuple[RunDir, str]]:
    """Run dirs whose results or checkpoints come from a spec that trains differently.

    Launching over them would mix two experiments under one name (or resume one spec from
    the other's weights), so the launch is refused until they are set aside (--restart).
    """
    out = []
    for spec in specs:
        rundir = RunDir.for_run(runs_root, spec.matrix, spec.name)
        if not rundir.spec_file.is_file():
            continue
        old = RunSpec.from_json(rundir.spec_file.read_text())
        if old.training_fingerprint() == spec.training_fingerprint():
            continue
        if rundir.state in SKIP_STATES:
            what = f"a {rundir.state} run"
        elif rundir.last_checkpoint():
            what = "checkpoints"
        else:
            continue
        out.append((rundir, f"{rundir.path} holds {what} of a different spec; pass --restart to set it aside and train again"))
    return out


def set_aside(rundir: RunDir) -> Path:
    """Rename a run dir out of the way (nothing is deleted): <run>.replaced-<time>."""
    target = rundir.path.with_name(f"{rundir.path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
    rundir.path.rename(target)
    return target


def _start(job: LocalJob) -> None:
    log = open(job.rundir.logs / "stdout.log", "ab")  # noqa: SIM115 - owned by the child
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    job.proc = subprocess.Popen(
        [sys.executable, "-m", "trainyard.run", "--spec", str(job.rundir.spec_file), "--run-dir", str(job.rundir.path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # our Ctrl-C handling decides what the children get
    )
    job.started = time.time()


def table(jobs: list[LocalJob], title: str) -> Table:
    t = Table(title=title, expand=False)
    for col in ("run", "state", "step", "loss", "elapsed", "note"):
        t.add_column(col)
    colors = {"completed": "green", "running": "cyan", "failed": "red", "diverged": "magenta", "canceled": "yellow", "queued": "white"}
    for j in jobs:
        st = j.rundir.status()
        state = st.get("state", "queued")
        step = f"{st.get('step', '')}/{st.get('max_steps', '')}" if st.get("step") is not None else ""
        loss = st.get("loss")
        loss_s = f"{loss:.4f}" if isinstance(loss, (int, float)) else ""
        elapsed = f"{time.time() - j.started:.0f}s" if j.started and state == "running" else ""
        note = st.get("error") or st.get("reason") or j.note
        t.add_row(j.spec.name, f"[{colors.get(state, 'white')}]{state}[/]", step, loss_s, elapsed, escape(str(note or "")[:120]))
    return t


def run_local(specs: list[RunSpec], runs_root: Path, parallel: int = 1, console: Console | None = None) -> int:
    """Run every spec; return 0 only if every run ends completed."""
    console = console or Console(stderr=True)
    jobs = prepare(specs, runs_root)
    pending = [j for j in jobs if not j.skipped]
    running: list[LocalJob] = []
    title = f"{specs[0].matrix if specs else ''}: {len(jobs)} run(s), {len(jobs) - len(pending)} already finished"
    interrupted = False

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with Live(table(jobs, title), console=console, refresh_per_second=2, transient=not console.is_terminal) as live:
            try:
                while pending or running:
                    while pending and len(running) < parallel:
                        job = pending.pop(0)
                        _start(job)
                        running.append(job)
                    for job in list(running):
                        if job.proc.poll() is not None:
                            running.remove(job)
                            if job.rundir.state not in FINAL_STATES:  # died without saying why
                                job.rundir.set_status("failed", error=f"process exited with code {job.proc.returncode}; see {job.rundir.logs}")
                    live.update(table(jobs, title))
                    time.sleep(0.5)
            except KeyboardInterrupt:
                interrupted = True
                _cancel(running, pending, console)
            live.update(table(jobs, title))
    finally:
        signal.signal(signal.SIGTERM, old)
    console.print(table(jobs, title))
    if interrupted:
        return 130
    return 0 if all(j.state == "completed" for j in jobs) else 1


def _cancel(running: list[LocalJob], pending: list[LocalJob], console: Console) -> None:
    console.print("[yellow]interrupted: asking running runs to checkpoint and stop...[/]")
    for job in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.proc.pid, signal.SIGTERM)
    deadline = time.time() + GRACE_SECONDS
    for job in running:
        try:
            job.proc.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(job.proc.pid, signal.SIGKILL)
            job.proc.wait()
        if job.rundir.state not in FINAL_STATES:
            job.rundir.set_status("canceled", reason="canceled by user")
    for job in pending:
        job.rundir.set_status("canceled", reason="canceled before it started")
