"""Causal-LM (continued) training: transformers Trainer on text blocks, full or LoRA.

setup (tokenizer, texts -> blocks of train.max_length, model [+ LoRA]) -> train with an
eval loss per named eval set (eval_<name>_loss, logged as eval/<name>/loss) -> exact
token-weighted loss / perplexity per set -> final/ (full model or adapter + tokenizer).
"""

from __future__ import annotations

from trainyard.context import RunContext
from trainyard.data.lm import lm_collator
from trainyard.models import count_parameters, load_model, load_tokenizer, lora_config
from trainyard.recipes._lm import blocks, load_texts, train_and_finish, trainer_args
from trainyard.spec import RunSpec


def build_model(spec: RunSpec, ctx: RunContext):
    model = load_model(spec, ctx.precision)
    peft_config = lora_config(spec.lora)
    if peft_config is not None:
        from peft import get_peft_model

        if spec.train.gradient_checkpointing:
            model.enable_input_require_grads()  # LoRA + checkpointing needs grads on inputs
        model = get_peft_model(model, peft_config)
    return model


def train(spec: RunSpec, ctx: RunContext) -> dict[str, float]:
    from transformers import Trainer

    tokenizer = load_tokenizer(spec)
    train_texts, eval_texts = load_texts(spec, ctx)
    data = blocks(spec, tokenizer, train_texts, eval_texts)
    model = build_model(spec, ctx)
    ctx.extra_metrics.update(count_parameters(model))
    trainer = Trainer(
        model=model,
        args=trainer_args(spec, ctx, has_eval=bool(data.eval_blocks)),
        train_dataset=data.train,
        eval_dataset=data.eval_blocks or None,
        data_collator=lm_collator(tokenizer),
        processing_class=tokenizer,
        callbacks=ctx.callbacks(list(data.eval_blocks)),
    )
    return train_and_finish(spec, ctx, trainer, tokenizer, data)
