"""From-scratch model architecture: YAML `architecture:` -> transformers config -> random init.

Only the Llama family (``llama``, ``qwen3``): RMSNorm, rotary positions, SwiGLU MLP,
grouped-query attention. Counting parameters on the config (:func:`count_config_parameters`)
lets ``validate`` / ``--dry-run`` show a model's size without building it.
"""

from __future__ import annotations

from typing import Any

from trainyard.spec import ArchitectureSpec

# The tiny shape --smoke swaps in: same family and options, a few seconds per run on CPU.
SMOKE_SHAPE = dict(
    hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=None,
    intermediate_size=128, vocab_size=1024, max_position_embeddings=512,
)


def smoke_architecture(arch: ArchitectureSpec) -> ArchitectureSpec:
    """The --smoke version of an architecture: tiny, but the same family and flags."""
    return arch.model_copy(update=SMOKE_SHAPE)


def build_config(arch: ArchitectureSpec, *, bos_token_id: int | None = None,
                 eos_token_id: int | None = None, pad_token_id: int | None = None):
    """A transformers config (LlamaConfig / Qwen3Config) for the architecture."""
    from transformers import LlamaConfig, Qwen3Config

    heads = arch.num_heads
    head_dim = arch.head_dim or arch.hidden_size // heads
    common: dict[str, Any] = dict(
        vocab_size=arch.vocab_size,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=heads,
        num_key_value_heads=arch.num_kv_heads or heads,
        head_dim=head_dim,
        max_position_embeddings=arch.max_position_embeddings,
        rms_norm_eps=arch.rms_norm_eps,
        tie_word_embeddings=arch.tie_embeddings,
        attention_bias=arch.attention_bias,
        initializer_range=arch.initializer_range,
        rope_parameters={"rope_type": "default", "rope_theta": arch.rope_theta},
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )
    if arch.model_type == "qwen3":
        return Qwen3Config(**common)
    return LlamaConfig(mlp_bias=False, **common)


def build_model(arch: ArchitectureSpec, *, seed: int = 42, **token_ids: int | None):
    """A randomly initialized causal LM (fp32; the trainer casts for mixed precision)."""
    import torch
    from transformers import AutoModelForCausalLM

    config = build_config(arch, **token_ids)
    torch.manual_seed(seed)  # init depends on the seed only, not on what ran before
    return AutoModelForCausalLM.from_config(config)


def count_config_parameters(arch: ArchitectureSpec) -> int:
    """Exact parameter count of the Llama-family model the config describes (no model built)."""
    h, v, n = arch.hidden_size, arch.vocab_size, arch.num_layers
    head_dim = arch.head_dim or h // arch.num_heads
    q = arch.num_heads * head_dim
    kv = (arch.num_kv_heads or arch.num_heads) * head_dim
    bias = arch.attention_bias
    attn = h * q + 2 * h * kv + q * h + ((q + 2 * kv + h) if bias else 0)
    if arch.model_type == "qwen3":
        attn += 2 * head_dim  # q_norm / k_norm (per-head RMSNorm)
    mlp = 3 * h * arch.intermediate_size
    per_layer = attn + mlp + 2 * h  # + input / post-attention RMSNorm
    embed = v * h * (1 if arch.tie_embeddings else 2)
    return embed + n * per_layer + h  # + final norm


def model_memory_mb(model) -> float:
    """Bytes the weights and buffers occupy, in MiB (not activations or optimizer state)."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return (params + buffers) / 2**20


def describe(arch: ArchitectureSpec) -> str:
    """One line for --dry-run: '25,269,120 params (llama h384 L6 H6/KV2 ffn1536 V32000, tied)'."""
    kv = arch.num_kv_heads or arch.num_heads
    tied = ", tied" if arch.tie_embeddings else ""
    return (
        f"{count_config_parameters(arch):,} params ({arch.model_type} h{arch.hidden_size} "
        f"L{arch.num_layers} H{arch.num_heads}/KV{kv} ffn{arch.intermediate_size} V{arch.vocab_size}{tied})"
    )
