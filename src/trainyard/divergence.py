"""The divergence guard: stops a run whose training went bad, on every optimizer step.

Configured by `train.divergence` (spec.DivergenceSpec). It watches what the trainer really
computes, before the optimizer applies it: each step's loss (step_loss.StepLoss: the sum
of its micro-batch losses, taken from the trainer's `training_step`, so neither
`logging_steps` nor the NaN filter hides it) and the gradient norm the trainer computed;
and the trained weights before every save.

Under torchrun every rank takes the same decision from the same numbers: the step loss is
averaged over the ranks, the trainer's gradient norm is global, and a non-finite weight on
any rank counts on all (distributed.py), so no rank stops while another waits in the next
step.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from trainyard import distributed
from trainyard.contract import TRAIN_LOSS

if TYPE_CHECKING:
    from trainyard.context import RunContext


class DivergenceGuard(TrainerCallback):
    """Stops a run whose training went bad, on every optimizer step (train.divergence).

    Checks what the trainer really computed, before the optimizer applies it: the step's
    loss (step_loss.StepLoss: the sum of its micro-batch losses, read from `training_step`,
    so neither the logging cadence nor the NaN filter hides it) and the gradient norm the
    trainer computed (read from its `_get_grad_norm`); and the weights
    before every save. A tripped guard vetoes the save and evaluation of that step, so the
    last checkpoint on disk is the last good one, and no final/ is written.
    """

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.cfg = ctx.spec.train.divergence
        self.losses: deque[float] = deque(maxlen=self.cfg.window)
        self.spiking = 0  # consecutive spiking steps so far
        self.tripped = False
        self._norm = None  # the gradient norm the trainer computed for the step being taken

    def watch(self, trainer) -> None:
        """Read the gradient norm the trainer computes each step (before clipping), so the
        guard costs no second pass over the gradients. A Trainer without that hook gets
        the norm recomputed in on_pre_optimizer_step."""
        if not self.cfg.enabled or getattr(trainer, "_trainyard_guarded", False):
            return
        trainer._trainyard_guarded = True
        inner = getattr(trainer, "_get_grad_norm", None)
        if inner is None:
            return

        def get_grad_norm(*args, **kwargs):
            self._norm = norm = inner(*args, **kwargs)
            return norm

        trainer._get_grad_norm = get_grad_norm

    def on_train_begin(self, args, state, control, **kwargs):
        # a resumed run's running median starts from the losses it logged before
        self.losses.extend(float(e["loss"]) for e in state.log_history if _finite(e.get("loss")))

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        norm, self._norm = self._norm, None
        if not self.cfg.enabled or self.tripped:
            return
        step = state.global_step + 1  # the step being taken
        last = self.ctx.step_loss.last  # StepLoss ran first and took this step's loss
        if last is not None and last[0] == step:
            self._judge_loss(step, last[1], control)
        if self.tripped:
            return
        value = _as_float(norm)
        if value is not None:  # the trainer's: one value on every rank (grads were all-reduced)
            if not math.isfinite(value):
                self._trip(control, step, "train/grad_norm", value, "not finite")
        elif model is not None:
            value = _grad_norm(model)
            bad = value is not None and not math.isfinite(value)
            if distributed.any_rank(bad):
                self._trip(control, step, "train/grad_norm", value if bad else math.nan, "not finite")

    def _judge_loss(self, step: int, loss: float, control) -> None:
        if not math.isfinite(loss):
            self._trip(control, step, TRAIN_LOSS, loss, "not finite")
            return
        if len(self.losses) >= self.cfg.grace_steps:
            median = statistics.median(self.losses)
            if loss > self.cfg.spike_factor * median and loss - median > self.cfg.spike_min_increase:
                self.spiking += 1
                if self.spiking >= self.cfg.patience:
                    run = f", {self.spiking} steps in a row" if self.spiking > 1 else ""
                    self._trip(control, step, TRAIN_LOSS, loss, f"a spike: above {self.cfg.spike_factor:g} x the running median {median:.4g}{run}")
                return  # a spiking loss never joins the median
        self.spiking = 0
        self.losses.append(loss)

    def on_log(self, args, state, control, logs=None, **kwargs):
        # a value only the logs carry (e.g. a norm that overflowed while its parts were finite)
        if not self.cfg.enabled or self.tripped:
            return
        for key, metric in (("loss", TRAIN_LOSS), ("grad_norm", "train/grad_norm")):
            value = (logs or {}).get(key)
            if isinstance(value, float) and not math.isfinite(value):
                self._trip(control, state.global_step, metric, value, "not finite")
                return

    def on_step_end(self, args, state, control, **kwargs):
        self._veto_or_check_weights(state, control, kwargs.get("model"))

    def on_epoch_end(self, args, state, control, **kwargs):
        self._veto_or_check_weights(state, control, kwargs.get("model"))

    def _veto_or_check_weights(self, state, control, model) -> None:
        if not self.cfg.enabled:
            return
        if not self.tripped and control.should_save and model is not None:
            bad, total = nonfinite_tensors(model)
            if distributed.any_rank(bad > 0):  # sharded weights (FSDP): any rank's shard
                bad = bad or 1
                self._trip(control, state.global_step, "weights", math.nan, f"{bad} of {total} trained tensors not finite before saving checkpoint-{state.global_step}")
        if self.spiking and not self.tripped and control.should_save:
            control.should_save = False  # a spiking step's weights may be the bad ones: no checkpoint
            self.ctx.log.warning("step %d: loss spike (%d of %d before stopping): not saving this checkpoint", state.global_step, self.spiking, self.cfg.patience)
        if self.tripped:
            control.should_save = False  # keep the last good checkpoint as the newest one
            control.should_evaluate = False
            control.should_training_stop = True

    def _trip(self, control, step: int, metric: str, value: float, why: str) -> None:
        self.tripped = True
        self.ctx.diverged(step, metric, value, why)
        # tripped in on_log, the Trainer would still evaluate and save this very step
        control.should_save = control.should_evaluate = False
        control.should_training_stop = True


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _as_float(norm) -> float | None:
    """The trainer's norm as a number (a tensor, a DTensor under FSDP2, a float), or None."""
    if norm is None:
        return None
    try:
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    except (TypeError, ValueError, RuntimeError):
        return None


def _grad_norm(model) -> float | None:
    """Total norm of the (already clipped) gradients: non-finite iff the trainer's was, since
    clipping a NaN/inf norm leaves NaN in the gradients."""
    import torch

    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return None  # e.g. DeepSpeed keeps them elsewhere: the logged grad_norm is checked in on_log
    try:
        return float(torch.nn.utils.get_total_norm(grads))
    except (RuntimeError, TypeError):  # sharded gradients a plain norm cannot combine: as above
        return None


def nonfinite_tensors(model) -> tuple[int, int]:
    """(non-finite, all) among the trained parameters (all of them if none is trainable)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad] or list(model.parameters())
    if not params:
        return 0, 0
    finite = torch.stack([torch.isfinite(p.detach()).all() for p in params])
    return int((~finite).sum()), len(params)
