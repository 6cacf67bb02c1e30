"""Steps every recipe shares after it has built its trainer: train, summarize, save."""

from __future__ import annotations

import math
import shutil

from trainyard import distributed
from trainyard.causal_mask import skip_redundant_masks
from trainyard.checkpoints import final_from_checkpoint
from trainyard.context import AlreadyTrained, RunContext
from trainyard.contract import (
    TRAIN_LOSS,
    TRAIN_MEAN_LOSS,
    TRAIN_RUNTIME,
    TRAIN_TOKENS,
    TRAIN_TOKENS_PER_SECOND,
)
from trainyard.divergence import nonfinite_tensors


def train_and_summarize(trainer, ctx: RunContext, eval_names: list[str]) -> dict[str, float]:
    """Train (resuming from ctx.resume_from), write history.json, return whole-run metrics.

    Every number covers the whole run, however many times it was resumed: the trainer
    state (restored from the checkpoint) holds every logged loss and the tokens seen, and
    ctx.clock the training seconds of every segment. A resume from the final checkpoint
    trains nothing and goes straight on to the evaluation and save.
    """
    ctx.step_loss.watch(trainer)
    ctx.guard.watch(trainer)
    if not trainer.args.torch_compile:  # its data-dependent check would break a compiled graph
        skip_redundant_masks(trainer.model)  # right-padded batches: the causal attention kernel
    try:
        trainer.train(resume_from_checkpoint=ctx.resume_from)
    except AlreadyTrained as done:
        ctx.log.info("nothing left to train (%s): finishing the run", done)
    ctx.clock.stop()
    ctx.final_step = trainer.state.global_step
    if ctx.is_main:
        ctx.rundir.write_history(trainer.state.log_history)
    mean = ctx.step_loss.mean(trainer.state.global_step)
    if mean is None and trainer.state.global_step:
        ctx.log.warning("train/mean_loss from the logged losses (weighted by their steps): the checkpoint resumed from predates per-step loss sums")
    return whole_run_metrics(trainer.state, ctx.clock.seconds(), mean)


def whole_run_metrics(state, train_seconds: float, mean_loss: float | None = None) -> dict[str, float]:
    """train/loss (last logged), train/mean_loss (every optimizer step's loss once, from
    step_loss.StepLoss; without it the logged window means weighted by their steps),
    train/tokens (non-padding, include_num_input_tokens_seen), train/runtime_s, tokens/s."""
    logged = [(e["step"], float(e["loss"])) for e in state.log_history if isinstance(e.get("loss"), (int, float)) and "step" in e]
    if mean_loss is None:
        mean_loss = _window_weighted_mean(logged)
    metrics = {
        TRAIN_LOSS: logged[-1][1] if logged else math.nan,
        TRAIN_MEAN_LOSS: mean_loss,
        TRAIN_RUNTIME: float(train_seconds),
        "train/epoch": float(state.epoch or 0.0),
    }
    tokens = state.num_input_tokens_seen
    if tokens:
        metrics[TRAIN_TOKENS] = float(tokens)
        if train_seconds > 0:
            metrics[TRAIN_TOKENS_PER_SECOND] = tokens / train_seconds
    return metrics


def _window_weighted_mean(logged: list[tuple[int, float]]) -> float:
    """Each logged loss is the mean of the steps since the previous log: weigh it by them."""
    total = steps = 0.0
    previous = 0
    for step, loss in logged:
        width = max(1, step - previous)
        total, steps, previous = total + width * loss, steps + width, step
    return total / steps if steps else math.nan


def evaluates_here(ctx: RunContext) -> bool:
    """Whether this process runs the post-training evaluations and the final save. Under
    torchrun DDP only rank 0 does (whole sets, unsharded: the same numbers as one process;
    the others exit once training has ended). FSDP shards the weights, so there every rank
    runs them in step (same inputs, same results) and only rank 0 writes."""
    return ctx.is_main or ctx.spec.train.distributed == "fsdp"


def save_final(trainer, tokenizer, ctx: RunContext) -> None:
    """final/: the adapter (LoRA) or the full model, plus the tokenizer. Never for a
    diverged run, and never non-finite weights."""
    if ctx.divergence is not None:
        ctx.log.info("diverged: no final/ (the last good checkpoint stays in checkpoints/)")
        return
    if ctx.spec.train.divergence.enabled:
        bad, total = nonfinite_tensors(trainer.model)
        if bad:
            ctx.diverged(trainer.state.global_step, "weights", math.nan, f"{bad} of {total} trained tensors not finite before saving final/")
            return
    final = ctx.rundir.final
    last = ctx.rundir.checkpoints / f"checkpoint-{trainer.state.global_step}"
    # The Trainer saved the last step as a checkpoint (a kill during the evaluation resumes
    # from it): final/ shares its weight files instead of writing them again. Under torchrun
    # every rank must join save_model (FSDP gathers the shards), so there it always saves.
    if distributed.is_distributed() or not final_from_checkpoint(last, final):
        if ctx.is_main:
            shutil.rmtree(final, ignore_errors=True)  # never write through links into a checkpoint
        trainer.save_model(str(final))  # the Trainer writes on rank 0 only (FSDP: gathered first)
    if ctx.is_main:
        tokenizer.save_pretrained(str(final))
