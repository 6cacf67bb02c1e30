"""Pieces the causal-LM recipes (clm, pretrain, mixed_loss) share: block datasets for the
training corpus and every named eval set, the trainer arguments, the final per-set
evaluation, and the closing metrics / final/ save. Each recipe still builds its own model
and trainer."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from trainyard.context import RunContext
from trainyard.data.lm import lm_collator, load_eval_texts, load_train_texts, to_blocks
from trainyard.recipes.common import evaluates_here, save_final, train_and_summarize
from trainyard.spec import RunSpec
from trainyard.training_args import common_trainer_kwargs

log = logging.getLogger(__name__)


@dataclass
class LMData:
    train_texts: list[str]
    train: Any  # datasets.Dataset of blocks
    eval_texts: dict[str, list[str]] = field(default_factory=dict)
    eval_blocks: dict[str, Any] = field(default_factory=dict)


def load_texts(spec: RunSpec, ctx: RunContext):
    texts = load_train_texts(spec)
    ctx.extra_metrics.update(texts.stats.as_metrics())
    for w in texts.stats.warnings:
        ctx.log.warning(w)
    evals: dict[str, list[str]] = {}
    if texts.held_out:
        evals[spec.eval.held_out_name] = texts.held_out
    for ev in spec.eval.datasets:
        evals[ev.name] = load_eval_texts(ev)
    return texts.train, evals


def blocks(spec: RunSpec, tokenizer, train_texts: list[str], eval_texts: dict[str, list[str]]) -> LMData:
    """Eval sets are cut without overlap: every token is scored once."""
    size = spec.train.max_length
    data = LMData(train_texts, to_blocks(train_texts, tokenizer, size, spec.lm.stride), eval_texts)
    data.eval_blocks = {name: to_blocks(t, tokenizer, size) for name, t in eval_texts.items()}
    log.info("blocks of %d tokens: train %d, eval %s", size, len(data.train), {k: len(v) for k, v in data.eval_blocks.items()})
    return data


def trainer_args(spec: RunSpec, ctx: RunContext, has_eval: bool, model=None):
    from transformers import TrainingArguments

    # Our blocks carry no extra columns; keep input_ids/attention_mask for the collator.
    return TrainingArguments(**common_trainer_kwargs(spec, str(ctx.rundir.checkpoints), ctx.precision, has_eval=has_eval, model=model))


def final_eval(spec: RunSpec, trainer, tokenizer, data: LMData) -> dict[str, float]:
    """eval/<name>/{loss,perplexity,bits_per_byte,word_perplexity,tokens,token_accuracy}
    per set: exact token-weighted scores over the set's texts (lm.perplexity: block windows
    of train.max_length, or rolling windows as lm-evaluation-harness scores them)."""
    from trainyard.evaluation.perplexity import evaluate_texts

    out: dict[str, float] = {}
    for name, texts in data.eval_texts.items():
        result = evaluate_texts(trainer.model, tokenizer, texts, mode=spec.lm.perplexity,
                                max_length=spec.train.max_length,
                                batch_size=spec.train.eval_batch_size or spec.train.batch_size)
        out.update(result.to_metrics(name))
    return out


def make_trainer(trainer_cls, spec: RunSpec, ctx: RunContext, model, tokenizer, data: LMData, **extra):
    """A transformers Trainer (or subclass) on the blocks, one eval set per named dataset."""
    return trainer_cls(
        model=model,
        args=trainer_args(spec, ctx, has_eval=bool(data.eval_blocks), model=model),
        train_dataset=data.train,
        eval_dataset=data.eval_blocks or None,
        data_collator=lm_collator(tokenizer),
        processing_class=tokenizer,
        callbacks=ctx.callbacks(list(data.eval_blocks)),
        **extra,
    )


def train_and_finish(spec: RunSpec, ctx: RunContext, trainer, tokenizer, data: LMData) -> dict[str, float]:
    """Train (resumable), then history, metrics, final per-set evaluation and final/."""
    names = list(data.eval_blocks)
    metrics = train_and_summarize(trainer, ctx, names)
    if ctx.cancel_requested or not evaluates_here(ctx):
        return metrics
    if ctx.divergence is None and data.eval_texts:
        metrics.update(final_eval(spec, trainer, tokenizer, data))
    save_final(trainer, tokenizer, ctx)
    return metrics
