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

from trainyard.backends.launch import SHUTDOWN_TIMEOUT_ENV, LaunchShapeError, launch_command
from trainyard.contract import DONE_STATES, FINAL_STATES, ExitCode, RunState
from trainyard.run_dir import RunDir, disk_fault_message
from trainyard.run_lock import (
    PARENT_PID_ENV,
    QUEUE_LOCK,
    TRAINER_WAIT_S,
    Holder,
    RunLock,
    holder,
    try_lock,
)
from trainyard.spec import RunSpec

GRACE_SECONDS = 60


@dataclass
class LocalJob:
    spec: RunSpec
    rundir: RunDir
    proc: subprocess.Popen | None = None
    skipped: bool = False
    note: str = ""
    started: float = field(default=0.0)
    # another process (a second launcher's trainer, or the child of a launcher that died)
    # trains this run: we wait for it to let go instead of starting a second trainer
    waiting_on: Holder | None = None
    queue_lock: RunLock | None = None  # held while this launcher owes the run a start
    unwritten: RunState | None = None  # the state status.json should say but could not (disk fault)

    @property
    def state(self) -> str:
        return self.rundir.state or "queued"


def prepare(specs: list[RunSpec], runs_root: Path) -> list[LocalJob]:
    """Write spec.json / status.json for each run; mark finished ones as skipped, and runs
    another process is training as waiting (their files are left alone)."""
    jobs = []
    for spec in specs:
        rundir = RunDir.for_run(runs_root, spec.matrix, spec.name)
        job = LocalJob(spec, rundir)
        existing = _saved_spec(rundir)
        if existing and rundir.state in DONE_STATES and existing.training_fingerprint() == spec.training_fingerprint():
            job.skipped, job.note = True, f"already {rundir.state}"
        else:
            try:
                rundir.path.mkdir(parents=True, exist_ok=True)
                job.queue_lock = RunLock(rundir.path, QUEUE_LOCK, shared=True).acquire(wait_s=TRAINER_WAIT_S)
                queue(job)
            except OSError as exc:  # a disk fault: nothing starts; the runs queued so far say why
                for done in jobs:
                    if not done.skipped and done.waiting_on is None:
                        _set_status(done, RunState.CANCELED, f"not started: {disk_fault_message(exc)}")
                raise
        jobs.append(job)
    return jobs


def _saved_spec(rundir: RunDir) -> RunSpec | None:
    return RunSpec.from_json(rundir.spec_file.read_text()) if rundir.spec_file.is_file() else None


def queue(job: LocalJob) -> bool:
    """Mark the run queued by this launcher, unless another process trains it (then wait)."""
    rundir = job.rundir
    with try_lock(rundir.path) as free:
        if not free:
            job.waiting_on = holder(rundir.path) or Holder()
            job.note = f"{job.waiting_on.describe()} is training it; waiting for it (no second trainer)"
            return False
        before = rundir.read_status()
        rundir.create()
        rundir.write_spec(job.spec.to_json())
        resume = rundir.last_checkpoint()
        notes = []
        if before is not None and before.state is RunState.RUNNING:  # its trainer is gone (we hold .lock)
            notes.append(f"was running (pid {before.pid} gone)")
        if resume:
            notes.append(f"resumes from {Path(resume).name}")
        job.note = "; ".join(notes)
        job.waiting_on = None
        rundir.set_status(
            RunState.QUEUED, note=job.note, reason=None, job=None, pid=None,  # job: no remote job any more
            host=os.uname().nodename, launcher_pid=os.getpid(),
        )
        return True


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
        if rundir.state in DONE_STATES:
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


def run_command(spec: RunSpec, rundir: RunDir) -> list[str]:
    """`python -m trainyard.run`, or with `resources.processes: K` (> 1) torchrun's
    `--standalone --nproc-per-node K` around it (backends/launch.py): its rendezvous takes a
    free port, so parallel local runs never collide; the Trainer uses gloo on CPU."""
    cmd = launch_command(spec, str(rundir.path))
    return [sys.executable, *cmd[1:], "--spec", str(rundir.spec_file)]


def shape_problems(specs: list[RunSpec]) -> list[str]:
    """Launch shapes this backend cannot start (several nodes), found before any run starts."""
    problems = []
    for spec in specs:
        try:
            launch_command(spec, "-")
        except LaunchShapeError as exc:
            problems.append(str(exc))
    return problems


def _start(job: LocalJob) -> None:
    log = open(job.rundir.logs / "stdout.log", "ab")  # noqa: SIM115 - owned by the child
    # The child asks for SIGTERM when we die (run_lock.die_with_parent). Linux sends it when
    # the forking *thread* exits, so run_local runs on the main thread. Under torchrun the
    # wrapper asks for it, and its workers in turn die with it (launch.main).
    env = {**os.environ, "PYTHONUNBUFFERED": "1", PARENT_PID_ENV: str(os.getpid())}
    # torchrun forwards our SIGTERM to its workers and SIGKILLs them after this long: before
    # _cancel's own SIGKILL of the wrapper, so the workers' checkpoint has all the time left
    env.setdefault(SHUTDOWN_TIMEOUT_ENV, str(GRACE_SECONDS - 10))
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        job.proc = subprocess.Popen(
            run_command(job.spec, job.rundir),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # our Ctrl-C handling decides what the children get
        )
    finally:
        log.close()  # the child has its own copy
    job.started = time.time()


def _set_status(job: LocalJob, state: RunState, reason: str) -> None:
    """The launcher's status writes: only while no trainer holds the run, never fatal.
    (A disk fault is shown in the table; the run is not completed, so the exit code says so.)"""
    try:
        with try_lock(job.rundir.path) as free:
            if free and job.rundir.state not in FINAL_STATES:
                job.rundir.set_status(state, reason=reason)
    except OSError as exc:
        job.unwritten, job.note = state, f"status.json not written: {disk_fault_message(exc)}; {reason}"


def table(jobs: list[LocalJob], title: str) -> Table:
    t = Table(title=title, expand=False)
    for col in ("run", "state", "step", "loss", "elapsed", "note"):
        t.add_column(col)
    colors = {"completed": "green", "running": "cyan", "failed": "red", "diverged": "magenta", "canceled": "yellow", "queued": "white"}
    for j in jobs:
        st = j.rundir.status()
        state = j.unwritten.value if j.unwritten else st.get("state", "queued")
        step = f"{st.get('step', '')}/{st.get('max_steps', '')}" if st.get("step") is not None else ""
        loss = st.get("loss")
        loss_s = f"{loss:.4f}" if isinstance(loss, (int, float)) else ""
        elapsed = f"{time.time() - j.started:.0f}s" if j.started and state == "running" else ""
        note = j.note if j.waiting_on is not None or j.unwritten else (st.get("reason") or j.note)
        t.add_row(j.spec.name, f"[{colors.get(state, 'white')}]{state}[/]", step, loss_s, elapsed, escape(str(note or "")[:160]))
    return t


def run_local(specs: list[RunSpec], runs_root: Path, parallel: int = 1, console: Console | None = None) -> int:
    """Run every spec; return 0 only if every run ends completed (by us or by a trainer we
    waited for). Raises OSError (with the path) when a run directory cannot be written."""
    console = console or Console(stderr=True)
    jobs = prepare(specs, runs_root)
    pending = [j for j in jobs if not j.skipped and j.waiting_on is None]
    waiting = [j for j in jobs if j.waiting_on is not None]
    running: list[LocalJob] = []
    title = f"{specs[0].matrix if specs else ''}: {len(jobs)} run(s), {sum(j.skipped for j in jobs)} already finished"
    interrupted = False

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with Live(table(jobs, title), console=console, refresh_per_second=2, transient=not console.is_terminal) as live:
            try:
                while pending or running or waiting:
                    while pending and len(running) < parallel:
                        job = pending.pop(0)
                        if job.rundir.state == RunState.CANCELED.value:  # `launch.py cancel` before it started
                            continue
                        _start(job)
                        running.append(job)
                    for job in list(running):
                        if job.proc.poll() is None:
                            continue
                        running.remove(job)
                        if job.proc.returncode == ExitCode.LOCKED:  # lost the race to another launcher's trainer
                            job.waiting_on = holder(job.rundir.path) or Holder()
                            job.note = f"{job.waiting_on.describe()} is training it; waiting for it (no second trainer)"
                            waiting.append(job)
                        else:  # died without saying why (killed, out of memory, disk)
                            _set_status(job, RunState.FAILED, f"process exited with code {job.proc.returncode}; see {job.rundir.logs}")
                    for job in list(waiting):
                        if holder(job.rundir.path) is not None:
                            continue
                        waiting.remove(job)
                        other = job.waiting_on.describe()
                        if job.rundir.state in DONE_STATES:
                            job.waiting_on, job.note = None, f"{job.rundir.state} by {other} (waited for it)"
                        elif queue(job):  # it stopped short (canceled, killed): resume it here
                            job.note = f"{other} stopped it; " + (job.note or "starting it")
                            pending.insert(0, job)
                        else:
                            waiting.append(job)
                    live.update(table(jobs, title))
                    time.sleep(0.5)
            except KeyboardInterrupt:
                interrupted = True
                _cancel(running, pending, waiting, console)
            live.update(table(jobs, title))
    finally:
        signal.signal(signal.SIGTERM, old)
        for job in jobs:
            if job.queue_lock is not None:
                job.queue_lock.release()
    console.print(table(jobs, title))
    for job in jobs:  # the table cuts long notes: a disk fault's path and fix in full
        if job.unwritten:
            console.print(f"[red]{escape(job.spec.name)}[/]: {escape(job.note)}", highlight=False, soft_wrap=True)
    if interrupted:
        return 130
    return 0 if all(j.state == "completed" for j in jobs) else 1


def _cancel(running: list[LocalJob], pending: list[LocalJob], waiting: list[LocalJob], console: Console) -> None:
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
        _set_status(job, RunState.CANCELED, "canceled by user")
    for job in pending:
        _set_status(job, RunState.CANCELED, "canceled before it started")
    for job in waiting:  # not ours: its own launcher decides
        job.note = f"left to {job.waiting_on.describe()}"
