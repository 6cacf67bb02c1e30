"""Supervised fine-tuning: TRL SFTTrainer (+ PEFT LoRA), completion-only loss.

setup (tokenizer, data, model) -> train (resumable) -> evaluate (token-weighted, every eval
set) -> save final/ (adapter or full model + tokenizer). Metrics follow the contract.
"""

from __future__ import annotations

from typing import Any

from trainyard.context import RunContext
from trainyard.data.loading import load_examples
from trainyard.evaluation.post_train import generation_evals
from trainyard.evaluation.trainer_eval import token_weighted_loss
from trainyard.models import count_parameters, load_model, load_tokenizer, lora_config
from trainyard.recipes.batching import (
    batching_kwargs,
    configure_packing,
    count_padding,
    enable_length_grouping,
    sft_packing_kwargs,
)
from trainyard.recipes.common import evaluates_here, save_final, train_and_summarize
from trainyard.spec import DataSpec, RunSpec
from trainyard.training_args import common_trainer_kwargs


def named_eval_sets(spec: RunSpec) -> dict[str, Any]:
    """Every `eval.datasets` entry, loaded and converted with its own format."""
    sets = {}
    for ev in spec.eval.datasets:
        data = DataSpec(source=ev.source, config=ev.config, split=ev.split, format=ev.format, text_field=ev.text_field, limit=ev.limit, eval_size=0, shuffle=False)
        ds, _, _ = load_examples(data, where=f"eval.datasets[{ev.name}]")
        sets[ev.name] = ds
    return sets


def train(spec: RunSpec, ctx: RunContext) -> dict[str, float]:
    from trl import SFTConfig, SFTTrainer

    tokenizer = load_tokenizer(spec)
    train_ds, held_out, stats = load_examples(spec.data)
    eval_sets = ({spec.eval.held_out_name: held_out} if held_out is not None else {}) | named_eval_sets(spec)
    ctx.extra_metrics.update(stats.as_metrics())
    ctx.warn(*stats.warnings)
    ctx.log.info("data: %d train / %s eval examples, %d skipped %s", len(train_ds), {k: len(v) for k, v in eval_sets.items()}, sum(stats.skipped.values()), dict(stats.skipped))

    model = load_model(spec, ctx.precision)
    args = SFTConfig(
        **common_trainer_kwargs(spec, str(ctx.rundir.checkpoints), ctx.precision, has_eval=bool(eval_sets), model=model),
        max_length=spec.train.max_length,
        completion_only_loss=spec.train.completion_only_loss,
        **batching_kwargs(spec),
        **sft_packing_kwargs(spec.train.packing),
    )
    names = list(eval_sets)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_sets or None,
        processing_class=tokenizer,
        peft_config=lora_config(spec.lora),
        callbacks=ctx.callbacks(names),
    )
    if spec.train.packing:
        configure_packing(trainer)
    elif spec.train.group_by_length:
        enable_length_grouping(trainer)
    padding = count_padding(trainer)
    ctx.extra_metrics.update(count_parameters(trainer.model))
    before = generation_evals(trainer.model, tokenizer, spec, ctx, before=True) if ctx.resume_from is None and evaluates_here(ctx) else {}
    metrics = {**before, **train_and_summarize(trainer, ctx, names), **padding.to_metrics()}
    if ctx.cancel_requested or not evaluates_here(ctx):
        return metrics
    if ctx.divergence is None:
        for name, ds in trainer.eval_dataset.items() if isinstance(trainer.eval_dataset, dict) else []:
            metrics.update(token_weighted_loss(trainer, ds).to_metrics(name))
        metrics.update(generation_evals(trainer.model, tokenizer, spec, ctx))
    save_final(trainer, tokenizer, ctx)
    return metrics

