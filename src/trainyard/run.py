"""Container entrypoint: one run from its spec.

    python -m trainyard.run --spec runs/<matrix>/<run>/spec.json [--run-dir DIR]
    TRAINYARD_SPEC='{...json...}' python -m trainyard.run --run-dir /output

The same code runs as a local subprocess, in the Docker image, on HF Jobs and on k8s.
Exit codes (contract.ExitCode): 0 completed, 1 failed, 2 bad spec/data, 3 diverged,
75 another process already trains this run directory (nothing written), 130 canceled.
One trainer per run directory: `<run>/.lock` is held for the whole run (run_lock.py).

Under torchrun (backends/launch.py) every worker runs this module: the main process
(global rank 0) holds the lock and alone writes the run directory, Trackio and the Hub;
the others train and exit 0 once training has ended, leaving the run's outcome (and the
exit code) to rank 0, unless they fail themselves (distributed.py).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import traceback
from pathlib import Path

from pydantic import ValidationError

from trainyard import distributed
from trainyard.checkpoints import resume_point
from trainyard.contract import SEGMENTS, WALL_TIME, ExitCode, RunState
from trainyard.errors import BadInput, DataFormatError
from trainyard.hub_storage import ArtifactUploader, push_to_hub, remote_artifacts, resolve_repo_id
from trainyard.run_dir import RunDir, disk_fault_message, is_disk_fault
from trainyard.run_lock import PARENT_PID_ENV, TRAINER_WAIT_S, RunLock, RunLocked, die_with_parent
from trainyard.spec import RunSpec

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TRACEBACK = "Traceback (most recent call last)"


class ConsoleFormatter(logging.Formatter):
    """The console gets one line per error; the traceback stays in logs/run.log."""

    def __init__(self, fmt: str, log_file: Path):
        super().__init__(fmt)
        self.log_file = log_file

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        cut = text.find(TRACEBACK)
        return text if cut < 0 else f"{text[:cut].rstrip()} (traceback in {self.log_file})"


def setup_logging(rundir: RunDir) -> logging.Logger:
    """logs/run.log and stderr; other torchrun ranks log to stderr only, tagged with their rank."""
    main = distributed.is_main()
    fmt = logging.Formatter(LOG_FORMAT)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
    if not main:
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(logging.Formatter(f"[rank {distributed.rank()}] {LOG_FORMAT}"))
        root.addHandler(sh)
        return logging.getLogger("trainyard.run")
    rundir.logs.mkdir(parents=True, exist_ok=True)
    fh = logging.FileHandler(rundir.log_file)
    fh.setFormatter(fmt)
    sh = logging.StreamHandler(sys.stderr)
    sh.setFormatter(ConsoleFormatter(LOG_FORMAT, rundir.log_file))
    # A full disk makes every log write fail: never print a traceback per log line for it
    # (main() reports the disk fault once).
    logging.raiseExceptions = False
    root.addHandler(fh)
    root.addHandler(sh)
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return logging.getLogger("trainyard.run")


def load_spec(args: argparse.Namespace) -> RunSpec:
    if args.spec:
        return RunSpec.from_json(Path(args.spec).read_text())
    text = os.environ.get("TRAINYARD_SPEC")
    if not text:
        raise ValueError("pass --spec FILE or set TRAINYARD_SPEC to the spec JSON")
    return RunSpec.from_json(text)


def localize_smoke_model(spec: RunSpec) -> RunSpec:
    """A tiny-model path (--smoke) on a remote backend: the launcher's cache path does not
    exist in the job's container, so build the same deterministic tiny model here."""
    from trainyard.fixtures.tiny_model import TINY_VERSION, ensure_tiny_model

    name = Path(spec.model.name)
    if name.exists() or not name.name.startswith(TINY_VERSION):
        return spec

    return spec.model_copy(update={"model": spec.model.model_copy(update={"name": str(ensure_tiny_model())})})


def execute(spec: RunSpec, rundir: RunDir, uploader: ArtifactUploader | None = None) -> ExitCode:
    """Run the recipe; write metrics, history, model card, status. Returns the exit code.

    With a remote artifacts `uploader` (hf-jobs), a run dir without a checkpoint first gets
    the run's uploaded one back (same spec only), and every new checkpoint is uploaded.
    Resume takes the newest *complete* checkpoint; newer incomplete ones are named in a
    warning and removed (the trainer would save into the same folders).
    """
    from trainyard.context import RunContext, Segments
    from trainyard.models import device_kind, pick_precision
    from trainyard.recipes import load_recipe
    from trainyard.tracking import TrackioLogger

    log = setup_logging(rundir)
    main = distributed.is_main()
    if not main:
        return _execute_worker(spec, rundir, log)
    rundir.create()
    rundir.write_spec(spec.to_json())
    if uploader is not None:
        uploader.restore_checkpoint(spec)
    point = resume_point(rundir.checkpoints)
    resume = str(point.path) if point.path else None
    distributed.from_main(resume)  # the other ranks resume from the same checkpoint (_execute_worker)
    try:
        precision = pick_precision(spec.train.precision)
    except BadInput as exc:  # e.g. fp16 on a machine without a GPU: a retry cannot fix it
        log.error("bad input: %s", exc)
        rundir.set_status(RunState.FAILED, reason=f"bad input: {exc}")
        return ExitCode.BAD_INPUT
    ctx = RunContext(spec=spec, rundir=rundir, precision=precision, device=device_kind(), resume_from=resume, log=log)
    if uploader is not None and uploader.checkpoints:
        ctx.on_checkpoint = uploader.request_checkpoint
    ctx.install_signal_handlers()
    rundir.set_status(RunState.RUNNING, pid=os.getpid(), host=os.uname().nodename, resumed_from=resume, reason=None, divergence=None)
    if point.skipped:  # the trainer would save into these very folders again: remove them
        ctx.warn(*(f"{m}; removed it" for m in point.messages()))
        for folder, _ in point.skipped:
            shutil.rmtree(folder, ignore_errors=True)
    ctx.segments = Segments(rundir)
    ctx.segments.start(resume)
    log.info("run %s/%s: recipe=%s model=%s device=%s precision=%s%s%s", spec.matrix, spec.name, spec.recipe, spec.model.name, ctx.device, ctx.precision,
             f" world size {distributed.world_size()}" if distributed.is_distributed() else "", f" resuming from {resume}" if resume else "")
    if spec.tracking.enabled:
        ctx.tracker = TrackioLogger(spec, eval_names=[], rundir=rundir, resumed=resume is not None)
    try:
        metrics = load_recipe(spec.recipe).train(spec, ctx)
        metrics = {**metrics, **ctx.extra_metrics}
        ctx.segments.touch()
        metrics.update({WALL_TIME: ctx.segments.wall_time_s(), SEGMENTS: float(len(ctx.segments.records))})
        if ctx.tracker is not None:
            ctx.tracker.log_summary(metrics, step=ctx.final_step)
    except BadInput as exc:  # the spec or the data is wrong (DataFormatError, ConfigError): never retried
        what = "bad data" if isinstance(exc, DataFormatError) else "bad input"
        log.error("%s: %s", what, exc)
        rundir.set_status(RunState.FAILED, reason=f"{what}: {exc}")
        _failed_card(spec, rundir, f"{what}: {exc}", log)
        return ExitCode.BAD_INPUT
    except KeyboardInterrupt:
        rundir.set_status(RunState.CANCELED, reason="interrupted")
        return ExitCode.CANCELED
    except Exception as exc:
        log.error("run failed:\n%s", traceback.format_exc())
        rundir.set_status(RunState.FAILED, reason=failure_reason(exc))
        _failed_card(spec, rundir, failure_reason(exc), log)
        return ExitCode.FAILED
    finally:
        if ctx.tracker is not None:
            ctx.tracker.finish()
    rundir.write_metrics(metrics)
    if ctx.divergence:
        state, fields = RunState.DIVERGED, {"reason": ctx.divergence, "divergence": ctx.divergence_detail}
    elif ctx.cancel_requested:
        rundir.set_status(RunState.CANCELED, reason="canceled; resumes from the last checkpoint on the next launch")
        return ExitCode.CANCELED
    else:
        state, fields = RunState.COMPLETED, {}
    _write_card_and_push(spec, rundir, metrics, state, log, reason=fields.get("reason"))
    rundir.set_status(state, **fields)
    log.info("run %s: %s", state, {k: v for k, v in metrics.items() if k.startswith(("train/loss", "eval/"))})
    return ExitCode.for_state(state)


def _execute_worker(spec: RunSpec, rundir: RunDir, log: logging.Logger) -> ExitCode:
    """A torchrun rank other than 0: train in step with the others, write nothing. It exits 0
    once training has ended however the run ended (rank 0 reports canceled / diverged and
    exits with that code; a worker exiting 130 first would make torchrun stop rank 0 before
    it has written status.json), and non-zero only for its own failures."""
    from trainyard.context import RunContext
    from trainyard.models import device_kind, pick_precision
    from trainyard.recipes import load_recipe

    resume = distributed.from_main(None)  # rank 0's pick of the newest complete checkpoint
    if resume is not None and not Path(resume).is_dir():
        log.error("rank %d cannot see %s: every node needs the run directory on shared storage to resume", distributed.rank(), resume)
        return ExitCode.FAILED
    if resume:
        log.info("rank %d: resuming from %s", distributed.rank(), resume)
    ctx = RunContext(spec=spec, rundir=rundir, precision=pick_precision(spec.train.precision), device=device_kind(), resume_from=resume, log=log)
    ctx.install_signal_handlers()
    try:
        load_recipe(spec.recipe).train(spec, ctx)
    except DataFormatError as exc:
        log.error("bad data: %s", exc)
        return ExitCode.BAD_INPUT
    except KeyboardInterrupt:
        return ExitCode.CANCELED
    except Exception:
        log.error("rank %d failed:\n%s", distributed.rank(), traceback.format_exc())
        return ExitCode.FAILED
    return ExitCode.COMPLETED


def _failed_card(spec: RunSpec, rundir: RunDir, reason: str, log: logging.Logger) -> None:
    """A failed run's card says so (and never hides the failure if the card itself fails)."""
    try:
        from trainyard.model_card import write_card

        write_card(rundir, spec, rundir.metrics(), RunState.FAILED, reason=reason)
    except Exception as err:
        log.warning("could not write the model card: %s", err)


def _write_card_and_push(spec: RunSpec, rundir: RunDir, metrics: dict, state: RunState, log: logging.Logger, reason: str | None = None) -> None:
    from trainyard.model_card import write_card

    write_card(rundir, spec, metrics, state, reason=reason)
    if spec.hub.push and state is RunState.COMPLETED:
        repo_id = resolve_repo_id(spec.hub.repo, spec.matrix, spec.name)
        where = push_to_hub(rundir, repo_id, spec.hub.private, smoke=spec.hub.push_to == "run_dir")
        rundir.update_progress(pushed_to=where)
        log.info("pushed final/ to %s", where)


def main(argv: list[str] | None = None) -> int:
    if os.environ.get(PARENT_PID_ENV, "").isdigit():  # started by the local launcher: die with it
        die_with_parent(int(os.environ[PARENT_PID_ENV]))
    p = argparse.ArgumentParser(prog="python -m trainyard.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", help="spec.json of the run (default: $TRAINYARD_SPEC)")
    p.add_argument("--run-dir", help="output directory (default: $TRAINYARD_RUN_DIR or runs/<matrix>/<run>)")
    args = p.parse_args(argv)
    try:
        spec = localize_smoke_model(load_spec(args))
    except (ValidationError, ValueError, OSError) as exc:  # json / schema errors: bad input, never retried
        detail = " ".join(line.strip() for line in str(exc).splitlines()[:6])
        _say(f"trainyard.run: bad spec: {detail}")
        return ExitCode.BAD_INPUT
    run_dir = args.run_dir or os.environ.get("TRAINYARD_RUN_DIR") or RunDir.for_run("runs", spec.matrix, spec.name).path
    rundir = RunDir(run_dir)
    if not distributed.is_main():  # torchrun: rank 0 holds the lock for the whole launch
        distributed.init()
        try:
            return int(execute(spec, rundir))
        finally:
            distributed.shutdown()
    # One trainer per run directory, taken before anything is written: a second trainer
    # leaves status.json, logs and checkpoints to the first.
    try:
        lock = RunLock(rundir.path).acquire(wait_s=TRAINER_WAIT_S, role="trainer")
    except RunLocked as exc:
        _say(f"trainyard.run: {rundir.path} is already being trained by {exc.holder.describe()}; not starting a second trainer (nothing was written)")
        return ExitCode.LOCKED
    except OSError as exc:
        _say(f"trainyard.run: {disk_fault_message(exc, flag='--run-dir')}")
        return ExitCode.FAILED
    with lock:
        try:
            # Remote backends (hf-jobs) set $TRAINYARD_ARTIFACTS_REPO: the job's disk dies with it, so
            # the run's files (and its latest checkpoint) are mirrored to the Hub while it runs, and
            # a re-submitted run resumes from that checkpoint. A no-op for local runs.
            distributed.init()
            with remote_artifacts(spec, rundir) as uploader:
                return int(execute(spec, rundir, uploader))
        except Exception as exc:  # execute() records expected failures itself; this is the rest
            return _unexpected(rundir, exc)
        finally:
            distributed.shutdown()


def _unexpected(rundir: RunDir, exc: Exception) -> int:
    """A fault outside the recipe (disk full / read-only while writing the run's files, ...):
    status `failed` with the reason if status.json can still be written, one line on stderr,
    the traceback only in logs/run.log."""
    reason = failure_reason(exc)
    with contextlib.suppress(OSError), open(rundir.log_file, "a") as fh:
        fh.write(f"run failed outside the recipe:\n{traceback.format_exc()}")
    try:
        rundir.set_status(RunState.FAILED, reason=reason)
    except OSError as err:
        reason += f" (status.json could not be updated either: {err.strerror})"
    _say(f"trainyard.run: failed: {reason}")
    return ExitCode.FAILED


def failure_reason(exc: BaseException) -> str:
    """status.json's reason: a disk fault names the path and the fix; anything else its type."""
    return disk_fault_message(exc, flag="--run-dir") if is_disk_fault(exc) else f"{type(exc).__name__}: {exc}"


def _say(message: str) -> None:
    """stderr may be a log file on the very disk that is full: never fail on saying so."""
    with contextlib.suppress(OSError):
        print(message, file=sys.stderr, flush=True)


def exit_fast(code: int) -> None:
    """Exit once everything is written, without the interpreter's teardown.

    Tearing down torch / transformers' modules and objects takes ~2 s per process (measured
    on the benchmark's SFT run), paid by every run of a sweep. Nothing is lost by skipping
    it: the run's files are written atomically and closed, non-daemon threads are joined
    and every atexit handler runs (logging's flush, Trackio's database close and Hub
    commit) exactly as at a normal exit; only the freeing of memory is left to the OS.
    Under a profiler or a coverage tracer the normal exit is kept: they write their
    results during the teardown.
    """
    import atexit
    import threading

    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)

    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_fast(main())
