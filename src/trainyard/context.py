"""What a recipe gets besides its spec: where to write, how to report progress, when to stop."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from trainyard import callback_state, distributed
from trainyard.checkpoints import checkpoint_problem
from trainyard.divergence import DivergenceGuard
from trainyard.run_dir import RunDir, read_json, write_json_atomic
from trainyard.spec import RunSpec
from trainyard.step_loss import StepLoss


@dataclass
class RunContext:
    spec: RunSpec
    rundir: RunDir
    precision: str
    device: str
    resume_from: str | None = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("trainyard.run"))
    tracker: Any = None  # TrackioLogger | None
    divergence: str | None = None  # the reason, set when the guard stopped the run
    divergence_detail: dict[str, Any] | None = None  # {step, metric, value} for status.json
    cancel_requested: bool = False  # a SIGTERM/SIGINT reached this process, or (torchrun) any rank
    signaled: bool = False  # a SIGTERM/SIGINT reached this very process
    extra_metrics: dict[str, float] = field(default_factory=dict)
    # set when a remote artifacts repo takes checkpoints (hf-jobs, hub.upload_checkpoints):
    # called with each complete checkpoint folder the trainer saves
    on_checkpoint: Callable[[Path], None] | None = None
    segments: Segments | None = None
    final_step: int | None = None  # the trainer's global step when training ended
    # torchrun: only the main process (global rank 0) writes the run dir, Trackio and the Hub
    is_main: bool = field(default_factory=distributed.is_main)

    def __post_init__(self) -> None:
        self.clock = TrainClock()
        self.step_loss = StepLoss()
        self.guard = DivergenceGuard(self)

    def warn(self, *messages: str) -> None:
        """Log and keep in status.json, so `status` and the live table show them."""
        if not messages:
            return
        for m in messages:
            self.log.warning(m)
        if not self.is_main:
            return
        warnings = self.rundir.status().get("warnings") or []
        self.rundir.update_progress(warnings=[*warnings, *messages])

    def diverged(self, step: int, metric: str, value: float, why: str) -> None:
        if self.divergence is None:
            self.divergence = f"step {step}: {metric} = {value:.6g} ({why})"
            self.divergence_detail = {"step": step, "metric": metric, "value": value}
            self.log.error("diverged: %s; stopping without saving", self.divergence)

    def callbacks(self, eval_names: list[str]) -> list[TrainerCallback]:
        """The run's callbacks. Order matters: the step-loss ledger first (the guard reads
        the step's loss from it); the guard last, so that its veto of a save/evaluation
        wins over every callback that asked for one (the Trainer's own DefaultFlowCallback
        always runs first); the saved-checkpoint check runs before the uploader sees the
        folder."""
        cbs: list[TrainerCallback] = [self.step_loss, ProgressCallback(self), CancelCallback(self)]
        if self.tracker is not None:
            self.tracker.eval_names = eval_names
            cbs.append(self.tracker)
        # the clock starts after Trackio's init (not training time), before a finished
        # checkpoint ends train() in StopIfAlreadyTrained (its seconds must be read)
        cbs += [self.clock, StopIfAlreadyTrained(self), SavedCheckpointCheck(self)]
        if self.on_checkpoint is not None:
            cbs.append(CheckpointUploadCallback(self))
        cbs.append(self.guard)
        return cbs

    def install_signal_handlers(self) -> None:
        """SIGTERM (from the launcher / the cluster) asks for a checkpoint and a clean stop."""

        def handler(signum, frame):
            if self.signaled:  # second signal: stop now
                raise KeyboardInterrupt
            self.signaled = self.cancel_requested = True
            self.log.warning("received signal %s: saving a checkpoint and stopping", signum)

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


class ProgressCallback(TrainerCallback):
    """Keeps status.json's step / loss current for `launch.py status` and the live table."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if not self.ctx.is_main:
            return
        fields: dict[str, Any] = {"step": state.global_step, "max_steps": state.max_steps}
        if "loss" in logs:
            fields["loss"] = logs["loss"]
        self.ctx.rundir.update_progress(**fields)
        # history.json while training too, so `report` can draw curves of unfinished runs
        self.ctx.rundir.write_history(state.log_history)
        if self.ctx.segments is not None:
            self.ctx.segments.touch()
        self.ctx.log.info("step %d/%d %s", state.global_step, state.max_steps, {k: round(v, 5) if isinstance(v, float) else v for k, v in logs.items()})


class AlreadyTrained(Exception):
    """The checkpoint resumed from is the run's last step: nothing is left to train."""


class StopIfAlreadyTrained(TrainerCallback):
    """Resuming from the final checkpoint must not train step max_steps + 1: the Trainer
    would run one step of a new epoch before its end-of-training check. Raised in
    on_train_begin, after the Trainer loaded the checkpoint's weights and state, so the
    recipe goes on to the evaluation and final save it was doing when it stopped."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def on_train_begin(self, args, state, control, **kwargs):
        if self.ctx.resume_from and state.max_steps and state.global_step >= state.max_steps:
            raise AlreadyTrained(f"{Path(self.ctx.resume_from).name} is step {state.global_step} of {state.max_steps}")


class TrainClock(TrainerCallback, ExportableState):
    """Training seconds over every segment of the run (the first launch and each resume).

    The total so far travels inside each checkpoint's trainer_state.json (the Trainer stores
    ExportableState callbacks there), so a resumed run adds exactly the time of the steps
    its checkpoint holds: time lost after the last checkpoint of a killed segment is not
    counted, just as those steps are not.
    """

    def __init__(self) -> None:
        self.before = 0.0  # seconds of earlier segments (from the checkpoint)
        self.started: float | None = None

    def state(self) -> dict:
        return {"args": {}, "attributes": {"seconds": self.seconds()}}

    def seconds(self) -> float:
        return self.before + (time.monotonic() - self.started if self.started is not None else 0.0)

    def on_train_begin(self, args, state, control, **kwargs):
        self.before = float(callback_state.saved_attributes(self, state).get("seconds", 0.0))
        self.started = time.monotonic()
        callback_state.register(self, state)

    def on_train_end(self, args, state, control, **kwargs):
        self.stop()

    def stop(self) -> None:
        self.before, self.started = self.seconds(), None


class CancelCallback(TrainerCallback):
    """A cancel request stops training after this step with a checkpoint. Under torchrun
    the signal may reach one rank only (a preempted node, `kill` of one worker): the flag
    is combined over all ranks each step, so every rank saves and stops at the same step."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def on_step_end(self, args, state, control, **kwargs):
        if distributed.any_rank(self.ctx.cancel_requested):
            self.ctx.cancel_requested = True
            control.should_save = True
            control.should_training_stop = True


class SavedCheckpointCheck(TrainerCallback):
    """A checkpoint the Trainer just saved must be resumable (every file whole); one that is
    not is removed at once, so neither a resume nor the uploader ever takes it."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def on_save(self, args, state, control, **kwargs):
        # torchrun: each rank writes its own rng_state_<rank>.pth and the Trainer does not wait
        # for them; rank 0 checks (and the uploader takes) the folder once all are written
        distributed.barrier()
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        problem = checkpoint_problem(folder) if folder.is_dir() else None
        if problem:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
            self.ctx.warn(f"removed the checkpoint just saved, {folder.name}: {problem}")


class CheckpointUploadCallback(TrainerCallback):
    """Hands each saved checkpoint to the artifacts uploader. on_save fires after the
    Trainer has written the whole folder (trainer_state.json last) and rotated old ones."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or self.ctx.on_checkpoint is None:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            self.ctx.on_checkpoint(folder)


class Segments:
    """segments.json: one record per process that worked on the run (first launch, each
    resume), with its start and last sign of life, so wall time adds up over all of them,
    including a segment that was killed."""

    FILE = "segments.json"

    def __init__(self, rundir: RunDir):
        self.path = rundir.path / self.FILE
        self.records: list[dict[str, Any]] = [r for r in (read_json(self.path, default=[]) or []) if isinstance(r, dict)]

    def start(self, resumed_from: str | None) -> None:
        now = time.time()
        self.records.append({"started_at": now, "updated_at": now, "resumed_from": Path(resumed_from).name if resumed_from else None})
        self._write()

    def touch(self, **fields: Any) -> None:
        if self.records:
            self.records[-1].update(fields, updated_at=time.time())
            self._write()

    def wall_time_s(self) -> float:
        return sum(max(0.0, float(r.get("updated_at", 0)) - float(r.get("started_at", 0))) for r in self.records)

    def _write(self) -> None:
        write_json_atomic(self.path, self.records)
