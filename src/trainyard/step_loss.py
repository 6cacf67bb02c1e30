"""Every optimizer step's training loss, as the trainer computed it, over the whole run.

The Trainer only keeps *logged* losses: each is the mean over a logging window (step 1
alone with `logging_first_step`, then steps 2-10, ...), the window cut off by the end of
training is never logged, and on resume the window open at the checkpoint is lost. A mean
of logged values therefore weighs steps unequally and misses some. Here each step's loss
(the sum of its micro-batch losses, taken from `training_step`; under torchrun the mean
over ranks, as the Trainer logs it) is added to a float64 sum and a step count, and both
travel inside every checkpoint's trainer_state.json, so a resumed run's mean covers each
of its steps exactly once: `train/mean_loss` = Σ step losses / steps.

The divergence guard judges the same per-step value (`StepLoss.last`), so there is one
definition of "the step's loss" and one device sync per step.
"""

from __future__ import annotations

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from trainyard import callback_state, distributed


class StepLoss(TrainerCallback, ExportableState):
    """Sum and count of every optimizer step's loss, resumable through the checkpoints."""

    def __init__(self) -> None:
        self.loss_sum = 0.0  # float64 sum of the step losses (non-finite ones included)
        self.steps = 0  # optimizer steps summed, from step 1 (also those of earlier segments)
        self.last: tuple[int, float] | None = None  # (step, loss) of the step being taken
        self._partial = None  # device tensor: this step's micro-batch losses so far

    # -- capture -----------------------------------------------------------------------
    def watch(self, trainer) -> None:
        """Observe each micro-batch loss the trainer computes (its training_step's return)."""
        if getattr(trainer, "_trainyard_step_loss", None) is self:
            return
        inner = trainer.training_step

        def training_step(*args, **kwargs):
            loss = inner(*args, **kwargs)
            part = loss.detach()
            self._partial = part if self._partial is None else self._partial + part
            return loss

        trainer.training_step = training_step
        trainer._trainyard_step_loss = self

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        # runs before the guard's on_pre_optimizer_step (context.callbacks' order), which
        # reads `last` to decide before the optimizer applies this step
        loss, self._partial = self._partial, None
        if not distributed.any_rank(loss is not None):  # every rank joins (a world of 1: no-op)
            self.last = None
            return
        value = distributed.mean(float(loss) if loss is not None else 0.0)
        self.last = (state.global_step + 1, value)
        self.loss_sum += value
        self.steps += 1

    # -- the whole run ------------------------------------------------------------------
    def mean(self, global_step: int) -> float | None:
        """Σ step losses / steps, or None unless every step 1..global_step is counted (a
        run resumed from a checkpoint written before this ledger existed)."""
        if self.steps == 0 or self.steps != global_step:
            return None
        return self.loss_sum / self.steps  # nan / inf when a step's loss was

    def state(self) -> dict:
        return {"args": {}, "attributes": {"loss_sum": self.loss_sum, "steps": self.steps}}

    def on_train_begin(self, args, state, control, **kwargs):
        saved = callback_state.saved_attributes(self, state)
        self.loss_sum = float(saved.get("loss_sum", 0.0))
        self.steps = int(saved.get("steps", 0))
        self._partial, self.last = None, None
        callback_state.register(self, state)
