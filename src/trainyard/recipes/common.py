"""Steps every recipe shares after it has built its trainer: train, summarize, save."""

from __future__ import annotations

import math

from trainyard.context import RunContext
from trainyard.metrics import canonical_dict


def train_and_summarize(trainer, ctx: RunContext, eval_names: list[str]) -> dict[str, float]:
    """Train (resuming from ctx.resume_from), write history.json, return training metrics.

    `train/loss` is the last logged training loss; the trainer's own `train_loss` is a
    whole-run average, kept as `train/mean_loss`. Throughput comes from the tokens the
    trainer counted (non-padding, include_num_input_tokens_seen) over its runtime.
    """
    result = trainer.train(resume_from_checkpoint=ctx.resume_from)
    history = trainer.state.log_history
    ctx.rundir.write_history(history)
    metrics = canonical_dict(result.metrics, eval_names, ctx.spec.eval.held_out_name)
    if "train/loss" in metrics:
        metrics["train/mean_loss"] = metrics["train/loss"]
    last = [e["loss"] for e in history if "loss" in e]
    metrics["train/loss"] = float(last[-1]) if last else metrics.get("train/loss", math.nan)
    runtime = result.metrics.get("train_runtime")
    tokens = trainer.state.num_input_tokens_seen
    if runtime:
        metrics["train/runtime_s"] = float(runtime)
        if tokens:
            metrics["train/tokens"] = float(tokens)
            metrics["train/tokens_per_second"] = tokens / runtime
    return metrics


def log_final(ctx: RunContext, metrics: dict[str, float], step: int, prefixes: tuple[str, ...] = ("eval/",)) -> None:
    """Send the final evaluation to Trackio next to the curves."""
    if ctx.tracker is not None:
        ctx.tracker.log({k: v for k, v in metrics.items() if k.startswith(prefixes) and isinstance(v, float)}, step=step)


def save_final(trainer, tokenizer, ctx: RunContext) -> None:
    """final/: the adapter (LoRA) or the full model, plus the tokenizer."""
    trainer.save_model(str(ctx.rundir.final))
    tokenizer.save_pretrained(str(ctx.rundir.final))
