"""Trainer arguments every recipe shares, derived from the spec in one place."""

from __future__ import annotations

from typing import Any

from trainyard.spec import RunSpec


def common_trainer_kwargs(spec: RunSpec, output_dir: str, precision: str, has_eval: bool) -> dict[str, Any]:
    """Kwargs valid for TrainingArguments and its TRL subclasses (SFTConfig, DPOConfig)."""
    t = spec.train
    kwargs: dict[str, Any] = dict(
        output_dir=output_dir,
        run_name=spec.name,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size or t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_steps if t.warmup_steps else t.warmup_ratio,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=t.optimizer,
        seed=t.seed,
        data_seed=spec.data.seed,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        # PITFALLS: the default True replaces a NaN/inf loss before anyone sees it; the
        # divergence guard (divergence.DivergenceGuard) and history.json must see the real value.
        logging_nan_inf_filter=False,
        save_total_limit=t.save_total_limit,
        gradient_checkpointing=t.gradient_checkpointing,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=precision == "fp32" and not _cuda(),
        report_to="none",  # Trackio is wired by trainyard.tracking with our spec as config
        disable_tqdm=True,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",  # tokens/s counts real tokens, not padding
    )
    if t.scheduler == "cosine_with_restarts" and t.scheduler_cycles:
        kwargs["lr_scheduler_kwargs"] = {"num_cycles": t.scheduler_cycles}
    if t.save_steps:
        kwargs.update(save_strategy="steps", save_steps=t.save_steps)
    else:
        kwargs.update(save_strategy="epoch")
    e = spec.eval
    if has_eval and e.strategy != "no":
        kwargs["eval_strategy"] = e.strategy
        if e.strategy == "steps":
            kwargs["eval_steps"] = e.steps
    else:
        kwargs["eval_strategy"] = "no"
    if t.max_steps and not t.save_steps:
        # max_steps runs may never finish an epoch: save on a step cadence so resume works.
        kwargs.update(save_strategy="steps", save_steps=max(1, t.max_steps // 2))
    return kwargs


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
