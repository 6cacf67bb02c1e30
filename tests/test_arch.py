"""From-scratch architecture: parameter counts, config translation, tokenizer training."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from trainyard.arch import (
    build_config,
    build_model,
    count_config_parameters,
    describe,
    model_memory_mb,
    smoke_architecture,
)
from trainyard.models import count_parameters
from trainyard.spec import ArchitectureSpec

# The study's model (issue 3, section 3).
STUDY = ArchitectureSpec(
    hidden_size=384, num_layers=6, num_heads=6, num_kv_heads=2, intermediate_size=1536,
    vocab_size=32000, tie_embeddings=True, attention_bias=False, max_position_embeddings=256,
)


def test_study_config_has_exactly_25_269_120_parameters():
    assert count_config_parameters(STUDY) == 25_269_120
    model = build_model(STUDY)
    assert count_parameters(model)["model/parameters"] == 25_269_120
    # fp32 weights: 4 bytes per parameter, plus the small rotary buffer
    assert model_memory_mb(model) == pytest.approx(25_269_120 * 4 / 2**20, rel=1e-3)
    assert describe(STUDY).startswith("25,269,120 params (llama h384 L6 H6/KV2 ffn1536 V32000, tied)")


def test_config_carries_every_yaml_option():
    cfg = build_config(STUDY.model_copy(update={"rope_theta": 500000.0, "rms_norm_eps": 1e-5}))
    assert cfg.model_type == "llama"
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (384, 6, 6, 2)
    assert cfg.head_dim == 64 and cfg.intermediate_size == 1536 and cfg.vocab_size == 32000
    assert cfg.tie_word_embeddings and not cfg.attention_bias and cfg.max_position_embeddings == 256
    assert cfg.rope_parameters["rope_theta"] == 500000.0 and cfg.rms_norm_eps == 1e-5


@pytest.mark.parametrize("model_type", ["llama", "qwen3"])
@pytest.mark.parametrize("bias,tied", [(False, True), (True, False)])
def test_config_count_matches_the_built_model(model_type, bias, tied):
    arch = smoke_architecture(STUDY).model_copy(
        update={"model_type": model_type, "attention_bias": bias, "tie_embeddings": tied}
    )
    assert count_parameters(build_model(arch))["model/parameters"] == count_config_parameters(arch)


def test_random_init_is_seeded():
    arch = smoke_architecture(STUDY)
    a, b = build_model(arch, seed=1), build_model(arch, seed=1)
    c = build_model(arch, seed=2)
    wa, wb, wc = (m.model.embed_tokens.weight for m in (a, b, c))
    assert wa.equal(wb) and not wa.equal(wc)


def test_bad_head_counts_are_clear_errors():
    with pytest.raises(ValidationError, match="multiple of num_kv_heads"):
        ArchitectureSpec(num_heads=6, num_kv_heads=4)
    with pytest.raises(ValidationError, match="divisible by num_heads"):
        ArchitectureSpec(hidden_size=100, num_heads=6)


def test_bpe_tokenizer_trains_on_a_corpus_and_round_trips():
    from trainyard.tokenizer_training import train_bpe_tokenizer

    corpus = ["The Valley of the Kings lies on the west bank of the Nile."] * 50 + ["Net income rose 12%."] * 50
    tok = train_bpe_tokenizer(corpus, vocab_size=400)
    assert 257 < len(tok) <= 400
    text = "The Nile rose 12% — naïve café"  # unseen characters still encode (byte-level)
    assert tok.decode(tok(text)["input_ids"]) == text
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>"
    with pytest.raises(ValueError, match="byte alphabet"):
        train_bpe_tokenizer(corpus, vocab_size=100)
