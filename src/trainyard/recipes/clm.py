"""Causal-LM (continued) training: transformers Trainer on text blocks, full or LoRA.

setup (tokenizer, texts -> blocks of train.max_length, model [+ LoRA]) -> train with an
eval loss per named eval set (eval_<name>_loss, logged as eval/<name>/loss) -> exact
token-weighted loss / perplexity per set -> final/ (full model or adapter + tokenizer).
"""

from __future__ import annotations

from trainyard.context import RunContext
from trainyard.models import count_parameters, load_model, load_tokenizer, lora_config
from trainyard.recipes._lm import blocks, load_texts, make_trainer, train_and_finish
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
    trainer = make_trainer(Trainer, spec, ctx, model, tokenizer, data)
    return train_and_finish(spec, ctx, trainer, tokenizer, data)
