"""Base model / tokenizer loading, precision choice, LoRA and 4-bit configuration."""

from __future__ import annotations

import logging
from typing import Any

from trainyard.errors import ConfigError
from trainyard.spec import LoraSpec, QuantizationSpec, RunSpec

log = logging.getLogger(__name__)
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def device_kind() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_precision(requested: str) -> str:
    """'auto' -> bf16 on CUDA that supports it, fp16 on older CUDA, fp32 elsewhere."""
    import torch

    kind = device_kind()
    if requested != "auto":
        if requested in ("bf16", "fp16") and kind == "cpu":
            raise ConfigError(f"train.precision: {requested} needs a GPU; this machine has none. Use precision: auto")
        return requested
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def load_tokenizer(spec: RunSpec):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        spec.model.tokenizer or spec.model.name,
        revision=spec.model.revision,
        trust_remote_code=spec.model.trust_remote_code,
    )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def quantization_config(q: QuantizationSpec | None, smoke: bool = False):
    if q is None:
        return None
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            f"quantization: {q.bits}-bit loading needs a CUDA GPU and bitsandbytes; this machine has no CUDA. "
            "Run on a GPU backend, drop `quantization:`, or use --smoke (which drops it)."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("quantization needs bitsandbytes: pip install 'trainyard[quant]'")
    from transformers import BitsAndBytesConfig

    compute = getattr(torch, DTYPES[q.compute_dtype])
    if q.bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=q.quant_type,
            bnb_4bit_compute_dtype=compute,
            bnb_4bit_use_double_quant=q.double_quant,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def default_attention(precision: str) -> str | None:
    """FlashAttention 2 on CUDA in bf16/fp16 when flash-attn is installed (varlen kernels:
    packed batches stay padding-free); otherwise transformers' default (SDPA)."""
    import importlib.util

    if precision in ("bf16", "fp16") and device_kind() == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return None


def load_model(spec: RunSpec, precision: str, **extra: Any):
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = dict(
        revision=spec.model.revision,
        trust_remote_code=spec.model.trust_remote_code,
        dtype=getattr(torch, DTYPES[precision]),
    )
    attn = spec.model.attn_implementation or default_attention(precision)
    if attn:
        kwargs["attn_implementation"] = attn
    qconf = quantization_config(spec.quantization)
    if qconf is not None:
        kwargs["quantization_config"] = qconf
        kwargs["device_map"] = {"": 0}
    kwargs.update(extra)
    model = AutoModelForCausalLM.from_pretrained(spec.model.name, **kwargs)
    if qconf is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=spec.train.gradient_checkpointing
        )
    return model


def lora_config(lora: LoraSpec | None):
    if lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        bias=lora.bias,
        task_type="CAUSAL_LM",
    )


def count_parameters(model) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"model/parameters": total, "model/trainable_parameters": trainable}
