"""Right-padded batches of a causal LM need no attention mask: run them without one.

In a causal decoder, token i attends to tokens 0..i only. With right padding every pad
comes after the last real token of its row, so no real token ever attends to a pad: the
padding mask changes nothing that is scored or trained (pads carry label -100 and their
outputs reach no loss), and the positions (0, 1, 2, ... from the left) are the same. What
the mask does change is the kernel: with a padding mask SDPA takes its masked (math /
memory-efficient) path and transformers builds a 4-D mask per layer call; without one it
runs the causal kernel (FlashAttention-style on CPU and CUDA). Measured on the SFT
benchmark (CPU): the same loss to every printed digit, the step time a few percent lower.

Kept as is: left or inner padding (generation, DPO prompts), explicit position_ids
(packed rows), a KV cache, FlashAttention-2/3 (it unpads with the mask: dropping it would
make it compute the pads), mixture-of-experts models whose router loss counts the mask's
tokens, and `train.torch_compile` runs (the per-batch check would break the graph).
"""

from __future__ import annotations

from typing import Any

MASKED_KERNELS = ("sdpa", "eager")


def applies_to(model) -> bool:
    """Whether the model's attention gains from a mask-free causal call and keeps its meaning."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    if getattr(config, "output_router_logits", False):  # MoE aux loss averages over the mask
        return False
    return (getattr(config, "_attn_implementation", None) or "eager") in MASKED_KERNELS


def is_right_padded(mask) -> bool:
    """Every row is 1...1 0...0 (no padding at all included)."""
    return bool((mask.cumprod(dim=-1) == mask).all())


def without_redundant_mask(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The forward kwargs without `attention_mask` where it is redundant (right padding, no
    explicit positions, no cache); otherwise the kwargs unchanged."""
    mask = kwargs.get("attention_mask")
    if mask is None or getattr(mask, "dim", lambda: 0)() != 2:
        return kwargs
    if kwargs.get("position_ids") is not None or kwargs.get("past_key_values") is not None:
        return kwargs
    if not is_right_padded(mask):
        return kwargs
    return {k: v for k, v in kwargs.items() if k != "attention_mask"}


def skip_redundant_masks(model):
    """Every forward call of `model` (training steps, in-training evaluation) without a
    redundant padding mask. Returns the hook handle (None where it does not apply)."""
    if not applies_to(model):
        return None

    def pre_hook(module, args, kwargs):
        return args, without_redundant_mask(kwargs)

    return model.register_forward_pre_hook(pre_hook, with_kwargs=True)
