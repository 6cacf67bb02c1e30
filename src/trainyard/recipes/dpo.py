"""Direct preference optimization: TRL DPOTrainer (+ PEFT LoRA, optionally on a 4-bit base).

setup (quantization check, tokenizer, preference pairs, prompt truncation, model) -> TAT-QA
generation eval before -> train (resumable) -> held-out DPO eval (reward accuracy / margins)
-> TAT-QA generation eval after -> save final/ (adapter or full model + tokenizer).

With LoRA the reference model is the same network with the adapter disabled (TRL's default
for a PEFT model), so no second copy of the base is loaded.
"""

from __future__ import annotations

import math

from trainyard.context import RunContext
from trainyard.data.loading import load_examples
from trainyard.data.prompt_truncation import truncate_prompts
from trainyard.errors import DataFormatError
from trainyard.evaluation.post_train import generation_evals
from trainyard.metrics import canonical_dict
from trainyard.models import (
    count_parameters,
    load_model,
    load_tokenizer,
    lora_config,
    quantization_config,
)
from trainyard.recipes.batching import batching_kwargs, count_padding, enable_length_grouping
from trainyard.recipes.common import evaluates_here, save_final, train_and_summarize
from trainyard.spec import RunSpec
from trainyard.training_args import common_trainer_kwargs


def train(spec: RunSpec, ctx: RunContext) -> dict[str, float]:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    assert spec.dpo is not None  # the schema requires it for recipe dpo (recipes/descriptors.py)
    # Fail before loading any data: 4-bit needs CUDA + bitsandbytes (--smoke drops quantization).
    quantization_config(spec.quantization)
    tokenizer = load_tokenizer(spec)
    train_ds, held_out, stats = load_examples(spec.data)
    ctx.extra_metrics.update(stats.as_metrics())
    ctx.warn(*stats.warnings)
    if spec.dpo.max_prompt_length:
        train_ds = _truncate(train_ds, tokenizer, spec.dpo.max_prompt_length, "train", ctx)
        if held_out is not None:
            held_out = _truncate(held_out, tokenizer, spec.dpo.max_prompt_length, spec.eval.held_out_name, ctx)
    eval_name = spec.eval.held_out_name
    ctx.log.info("data: %d train / %s eval pairs, %d skipped %s", len(train_ds), len(held_out) if held_out is not None else 0, sum(stats.skipped.values()), dict(stats.skipped))

    model = load_model(spec, ctx.precision)
    d = spec.dpo
    args = DPOConfig(
        **common_trainer_kwargs(spec, str(ctx.rundir.checkpoints), ctx.precision, has_eval=held_out is not None, model=model),
        max_length=spec.train.max_length,
        truncation_mode=d.truncation_mode,
        beta=d.beta,
        loss_type=[d.loss_type],
        label_smoothing=d.label_smoothing,
        precompute_ref_log_probs=d.precompute_ref_log_probs,
        **batching_kwargs(spec),
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=train_ds,
        eval_dataset=held_out if isinstance(held_out, Dataset) else None,
        processing_class=tokenizer,
        peft_config=lora_config(spec.lora),
        callbacks=ctx.callbacks([eval_name]),
    )
    if spec.train.group_by_length:
        enable_length_grouping(trainer)
    padding = count_padding(trainer)
    ctx.extra_metrics.update(count_parameters(trainer.model))

    metrics: dict[str, float] = {}
    if ctx.resume_from is None and evaluates_here(ctx):
        if spec.eval.tatqa is not None:
            metrics.update(_tatqa_generation(trainer.model, tokenizer, spec, ctx, prefix="tatqa_before"))
        metrics.update(generation_evals(trainer.model, tokenizer, spec, ctx, before=True))
    metrics.update(train_and_summarize(trainer, ctx, [eval_name]))
    metrics.update(padding.to_metrics())
    metrics.update(_last_train_logs(trainer.state.log_history, eval_name))
    if ctx.cancel_requested:
        return metrics
    if ctx.divergence is None and trainer.eval_dataset is not None:
        metrics.update(_final_eval(trainer, eval_name))  # trainer.evaluate(): every rank, gathered
    if not evaluates_here(ctx):
        return metrics
    if ctx.divergence is None:
        if spec.eval.tatqa is not None:
            metrics.update(_tatqa_generation(trainer.model, tokenizer, spec, ctx, prefix="tatqa"))
        metrics.update(generation_evals(trainer.model, tokenizer, spec, ctx))
    save_final(trainer, tokenizer, ctx)
    return metrics


def _truncate(ds, tokenizer, max_prompt_length: int, name: str, ctx: RunContext):
    from datasets import Dataset

    rows, stats = truncate_prompts(ds.to_list(), tokenizer, max_prompt_length)
    ctx.extra_metrics.update(stats.as_metrics(f"data/{name}/prompt"))
    ctx.log.info(
        "dpo.max_prompt_length=%d (%s): %d of %d prompts truncated from the left (%d tokens removed), %d dropped (did not fit)",
        max_prompt_length, name, stats.truncated, stats.examples, stats.tokens_removed, stats.dropped,
    )
    if not rows:
        raise DataFormatError(f"dpo.max_prompt_length={max_prompt_length}: no {name} prompt fits; raise it")
    return Dataset.from_list(rows)


def _last_train_logs(history: list[dict], eval_name: str) -> dict[str, float]:
    """The last logged value of every training metric (loss, rewards/*, logps/*, ...);
    train/mean_loss over the whole run comes from recipes.common."""
    out: dict[str, float] = {}
    for entry in history:
        if "loss" in entry and not any(k.startswith("eval_") for k in entry):
            out.update(canonical_dict({k: v for k, v in entry.items() if k not in ("epoch", "step")}, [eval_name], eval_name))
    return out


def _final_eval(trainer, eval_name: str) -> dict[str, float]:
    """DPO loss + reward accuracy / margins on the held-out pairs. DPOTrainer adds its reward
    metrics in `log()`, not to `evaluate()`'s return value, so they are read from the log; an
    evaluation already logged at the final step is reused rather than run twice."""
    history = trainer.state.log_history
    last = next((e for e in reversed(history) if "eval_loss" in e), None)
    if last is None or last.get("step") != trainer.state.global_step:
        trainer.evaluate()
        last = history[-1]
    return canonical_dict({k: v for k, v in last.items() if k.startswith("eval_")}, [eval_name], eval_name)


def _tatqa_generation(model, tokenizer, spec: RunSpec, ctx: RunContext, prefix: str) -> dict[str, float]:
    """TAT-QA exact match / F1 of greedy replies (metrics '<prefix>/...')."""
    from trainyard.data.tatqa_pairs import read_contexts, resolve_source
    from trainyard.evaluation.tatqa_generation import evaluate_tatqa_generation, tatqa_metrics

    settings = spec.eval.tatqa
    split = spec.data.eval_split or "dev"
    contexts = read_contexts(resolve_source(spec.data.source, split))
    result = evaluate_tatqa_generation(
        model,
        tokenizer,
        contexts,
        max_new_tokens=settings.max_new_tokens,
        batch_size=settings.batch_size or spec.train.eval_batch_size or 8,
        limit=settings.limit,
    )
    metrics = {k: v for k, v in tatqa_metrics(result, prefix=prefix).items() if not math.isnan(v)}
    ctx.log.info("%s: exact_match %.4f f1 %.4f (%d questions)", prefix, metrics.get(f"{prefix}/exact_match", math.nan), metrics.get(f"{prefix}/f1", math.nan), int(metrics.get(f"{prefix}/questions", 0)))
    return metrics

