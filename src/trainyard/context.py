"""What a recipe gets besides its spec: where to write, how to report progress, when to stop."""

from __future__ import annotations

import logging
import math
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from trainyard.run_dir import RunDir
from trainyard.spec import RunSpec


@dataclass
class RunContext:
    spec: RunSpec
    rundir: RunDir
    precision: str
    device: str
    resume_from: str | None = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("trainyard.run"))
    tracker: Any = None  # TrackioLogger | None
    divergence: str | None = None  # set when the loss went non-finite
    cancel_requested: bool = False
    extra_metrics: dict[str, float] = field(default_factory=dict)
    # set when a remote artifacts repo takes checkpoints (hf-jobs, hub.upload_checkpoints):
    # called with each complete checkpoint folder the trainer saves
    on_checkpoint: Callable[[Path], None] | None = None

    def warn(self, *messages: str) -> None:
        """Log and keep in status.json, so `status` and the live table show them."""
        if not messages:
            return
        for m in messages:
            self.log.warning(m)
        warnings = self.rundir.status().get("warnings") or []
        self.rundir.update_progress(warnings=[*warnings, *messages])

    def callbacks(self, eval_names: list[str]) -> list[TrainerCallback]:
        from trainyard.save_policy import SkipFinalCheckpoint

        cbs: list[TrainerCallback] = [ProgressCallback(self), DivergenceCallback(self), CancelCallback(self), SkipFinalCheckpoint(self)]
        if self.on_checkpoint is not None:
            cbs.append(CheckpointUploadCallback(self))
        if self.tracker is not None:
            self.tracker.eval_names = eval_names
            cbs.append(self.tracker)
        return cbs

    def install_signal_handlers(self) -> None:
        """SIGTERM (from the launcher / the cluster) asks for a checkpoint and a clean stop."""

        def handler(signum, frame):
            if self.cancel_requested:  # second signal: stop now
                raise KeyboardInterrupt
            self.cancel_requested = True
            self.log.warning("received signal %s: saving a checkpoint and stopping", signum)

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


class ProgressCallback(TrainerCallback):
    """Keeps status.json's step / loss current for `launch.py status` and the live table."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        fields: dict[str, Any] = {"step": state.global_step, "max_steps": state.max_steps}
        if "loss" in logs:
            fields["loss"] = logs["loss"]
        self.ctx.rundir.update_progress(**fields)
        # history.json while training too, so `report` can draw curves of unfinished runs
        self.ctx.rundir.write_history(state.log_history)
        self.ctx.log.info("step %d/%d %s", state.global_step, state.max_steps, {k: round(v, 5) if isinstance(v, float) else v for k, v in logs.items()})


class DivergenceCallback(TrainerCallback):
    """A non-finite training loss ends the run as `diverged` instead of burning GPU hours."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if isinstance(loss, float) and not math.isfinite(loss):
            self.ctx.divergence = f"non-finite training loss ({loss}) at step {state.global_step}"
            self.ctx.log.error("diverged: %s", self.ctx.divergence)
            control.should_training_stop = True


class CancelCallback(TrainerCallback):
    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def on_step_end(self, args, state, control, **kwargs):
        if self.ctx.cancel_requested:
            control.should_save = True
            control.should_training_stop = True


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
