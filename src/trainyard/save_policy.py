"""No checkpoint at the last step: final/ is written right after it and holds the same
weights, so a step-cadence or epoch-end save there would only cost time and disk.
A canceled run (SIGTERM) still saves, since it stops before its last step."""

from __future__ import annotations

from transformers import TrainerCallback


class SkipFinalCheckpoint(TrainerCallback):
    """Runs after transformers' DefaultFlowCallback, which sets should_save on the cadence."""

    def __init__(self, ctx):
        self.ctx = ctx

    def _skip(self, state, control):
        if state.global_step >= state.max_steps and not self.ctx.cancel_requested:
            control.should_save = False

    def on_step_end(self, args, state, control, **kwargs):
        self._skip(state, control)

    def on_epoch_end(self, args, state, control, **kwargs):
        self._skip(state, control)
