"""One trainer per run directory, and which queued/running states still have a live owner.

Liveness comes from locks the OS releases when a process dies (even on SIGKILL), never
from timestamps:

- `<run>/.lock`        flock LOCK_EX, held by the training process (run.py) its whole life.
                       `running` without a holder is stale: the trainer died unannounced.
- `<run>/.queue.lock`  flock LOCK_SH, held by each local launcher that queued the run until
                       it is done with it. `queued` without a holder: the launcher is gone.

Launchers and `status` take `.lock` for a moment (`try_lock`) before they write a run's
status, so they never overwrite a live trainer's. A trainer that finds `.lock` taken
waits `TRAINER_WAIT_S` for such a moment to pass, then gives up (ExitCode.LOCKED).

`die_with_parent`: local runs live in their own session (so Ctrl-C reaches only the
launcher), which means a SIGKILLed launcher would leave them training; the Linux
parent-death signal delivers SIGTERM instead, and the trainer checkpoints and stops.
Torch-free: the launcher imports it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from trainyard.contract import RunState, Status

TRAINER_LOCK = ".lock"
QUEUE_LOCK = ".queue.lock"
TRAINER_WAIT_S = 3.0  # longer than any launcher/`status` holds a lock for a look or one status.json
PARENT_PID_ENV = "TRAINYARD_PARENT_PID"  # set by the local launcher: die with it


@dataclass
class Holder:
    """Who holds a lock, as recorded in the lock file (unknown fields stay None)."""

    pid: int | None = None
    host: str | None = None
    role: str | None = None  # "trainer" | "launcher"
    since: float | None = None

    def describe(self) -> str:
        who = f"{self.role or 'process'} pid {self.pid}" if self.pid else "another process"
        return who + (f" on {self.host}" if self.host and self.host != os.uname().nodename else "")


class RunLocked(Exception):
    def __init__(self, path: Path, holder: Holder | None):
        self.path, self.holder = path, holder or Holder()
        super().__init__(f"{path.parent} is held by {self.holder.describe()}")


def _read_holder(path: Path) -> Holder:
    try:
        data = json.loads(path.read_text() or "{}")
        return Holder(**{k: data.get(k) for k in ("pid", "host", "role", "since")})
    except (OSError, ValueError, TypeError):
        return Holder()


class RunLock:
    """An flock on a file in the run directory. Exclusive (the trainer) or shared (launchers)."""

    def __init__(self, run_path: str | Path, name: str = TRAINER_LOCK, shared: bool = False):
        self.path = Path(run_path) / name
        self.shared = shared
        self._fd: int | None = None

    def acquire(self, wait_s: float = 0.0, role: str | None = None) -> RunLock:
        """Take the lock or raise RunLocked after `wait_s`. `role`: record pid/host/role in it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise RunLocked(self.path, _read_holder(self.path)) from None
                time.sleep(0.05)
        self._fd = fd
        if role is not None and not self.shared:
            record = json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "role": role, "since": time.time()})
            with contextlib.suppress(OSError):  # a full disk: the lock still holds, the holder is unnamed
                os.ftruncate(fd, 0)
                os.pwrite(fd, record.encode(), 0)
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (deleting it would race)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        if self._fd is None:
            self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def holder(run_path: str | Path, name: str = TRAINER_LOCK) -> Holder | None:
    """Who holds the lock now; None when nobody does (or it never existed). Creates nothing."""
    path = Path(run_path) / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        # exclusive, so shared holders (launchers) show too; held a moment only: see TRAINER_WAIT_S
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return _read_holder(path)
    finally:
        os.close(fd)


@contextlib.contextmanager
def try_lock(run_path: str | Path) -> Iterator[bool]:
    """Hold `.lock` for a moment if nobody trains the run: yields True (free, now ours) or False.

    On a read-only run dir the lock is still checked (flock works on a read-only fd), so
    callers can tell a live trainer from a stale status even where they cannot write.
    """
    path = Path(run_path) / TRAINER_LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.ENOENT):
            raise
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # no lock file and none can be made: nobody ever trained here
            yield True
            return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            free = True
        except BlockingIOError:
            free = False
        yield free
    finally:
        os.close(fd)


def pid_alive(pid: int | None) -> bool:
    """A process with this pid exists on this host and is not a zombie."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet still answers kill(0)
        return Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def stale_reason(run_path: str | Path, status: Status) -> tuple[RunState, str] | None:
    """Why a queued/running local status has no live owner, as (repaired state, reason).

    Call it holding `.lock` (try_lock), so no trainer can start meanwhile. None: the status
    is final, remote (its backend knows), on another host, or its owner is alive.
    """
    run_path = Path(run_path)
    here = os.uname().nodename
    if status.job or status.state not in (RunState.QUEUED, RunState.RUNNING):
        return None
    if status.host and status.host != here:  # another machine's process: we cannot see it
        return None
    if status.state is RunState.RUNNING:
        # the trainer held .lock its whole life; a legacy trainer (no lock) is judged by its pid
        recorded = _read_holder(run_path / TRAINER_LOCK).pid
        if recorded != status.pid and pid_alive(status.pid):
            return None
        return RunState.FAILED, f"its trainer (pid {status.pid}) is gone without a final status; re-run the matrix to resume from its last checkpoint"
    if holder(run_path, QUEUE_LOCK) is not None:
        return None
    if not (run_path / QUEUE_LOCK).exists() and (not status.launcher_pid or pid_alive(status.launcher_pid)):
        return None  # queued by a launcher that predates the queue lock: cannot tell
    who = f"launcher pid {status.launcher_pid}" if status.launcher_pid else "its launcher"
    return RunState.CANCELED, f"not started: {who} exited before starting it; re-run the matrix to start it"


def repair_stale(rundir) -> Status | None:
    """Repair a queued/running status whose owner is gone (see stale_reason); return the
    repaired status, or None when nothing was stale. Where status.json cannot be written
    (read-only disk) the repaired status is returned without being saved."""
    status = rundir.read_status()
    if status is None or stale_reason(rundir.path, status) is None:  # cheap check first
        return None
    with try_lock(rundir.path) as free:
        status = rundir.read_status()
        found = stale_reason(rundir.path, status) if free and status is not None else None
        if found is None:
            return None
        state, reason = found
        try:
            return rundir.set_status(state, reason=f"was {status.state.value}: {reason}")
        except OSError:
            return Status.from_dict({**status.to_dict(), "state": state.value, "reason": f"was {status.state.value}: {reason}"})


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send `sig` to this process when its parent dies (prctl PR_SET_PDEATHSIG).

    Done in the child itself after exec (not in a preexec_fn, which is unsafe in the
    launcher with its table-refresh thread); a parent that died before this call is
    caught by comparing getppid() with the pid it passed down.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(sig), 0, 0, 0)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)
