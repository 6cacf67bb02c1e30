"""Trainer arguments every recipe shares, derived from the spec in one place."""

from __future__ import annotations

from typing import Any

from trainyard.spec import RunSpec

FSDP_AUTO_PARAMETERS = 3_000_000_000  # train.distributed auto: full fine-tunes above this shard


def common_trainer_kwargs(spec: RunSpec, output_dir: str, precision: str, has_eval: bool, model=None) -> dict[str, Any]:
    """Kwargs valid for TrainingArguments and its TRL subclasses (SFTConfig, DPOConfig).
    `model` (when built already) decides train.distributed: auto."""
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
        use_liger_kernel=t.use_liger_kernel,
        torch_compile=t.torch_compile,
    )
    kwargs.update(distributed_kwargs(spec, model))
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
    return kwargs


def distributed_mode(spec: RunSpec, model=None) -> str:
    """train.distributed resolved: 'ddp' or 'fsdp' (auto: fsdp for a full fine-tune of a model
    above FSDP_AUTO_PARAMETERS; LoRA/QLoRA train few weights, DDP fits them)."""
    mode = spec.train.distributed
    if mode != "auto":
        return mode
    if spec.lora is not None or model is None:
        return "ddp"
    return "fsdp" if sum(p.numel() for p in model.parameters()) > FSDP_AUTO_PARAMETERS else "ddp"


def distributed_kwargs(spec: RunSpec, model=None) -> dict[str, Any]:
    """TrainingArguments for a torchrun world of several processes (none for one): gloo on CPU
    (NCCL on GPUs is the Trainer's default), FSDP full sharding when chosen."""
    from trainyard import distributed

    if not distributed.is_distributed():
        return {}
    out: dict[str, Any] = {"ddp_find_unused_parameters": False}
    if not _cuda():
        out["ddp_backend"] = "gloo"
    if distributed_mode(spec, model) == "fsdp":
        # FSDP2 (fully_shard) around each transformer block, resharded after forward (full
        # sharding); final/ and checkpoints hold whole (unsharded) weights, as with DDP
        out["fsdp"] = True
        out["fsdp_config"] = {"version": 2, "reshard_after_forward": True, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "state_dict_type": "FULL_STATE_DICT"}
    return out


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
