"""Schema sections of the LM recipes: architecture, lm, mixed_loss, and their clear errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from trainyard.spec import RunSpec

BASE = {"name": "r", "matrix": "m", "model": {"name": "slm"}, "data": {"source": "fixture:wikitext", "format": "text"}}


def spec(**over) -> RunSpec:
    return RunSpec.model_validate({**BASE, **over})


def test_pretrain_needs_an_architecture_and_rejects_lora():
    assert spec(recipe="pretrain", architecture={}).architecture.vocab_size == 32000
    with pytest.raises(ValidationError, match="needs an? `architecture:` section"):
        spec(recipe="pretrain")
    with pytest.raises(ValidationError, match="from-scratch model .* has none"):
        spec(recipe="pretrain", architecture={}, lora={"r": 8})


def test_architecture_outside_pretrain_is_rejected():
    with pytest.raises(ValidationError, match="only recipe pretrain"):
        spec(recipe="clm", architecture={})


def test_mixed_loss_section_goes_with_its_recipe():
    s = spec(recipe="mixed_loss", mixed_loss={"alpha": 0.5, "top_k": 256})
    assert (s.mixed_loss.alpha, s.mixed_loss.top_k, s.mixed_loss.temperature) == (0.5, 256, 1.0)
    with pytest.raises(ValidationError, match="needs a `mixed_loss:` section"):
        spec(recipe="mixed_loss")
    with pytest.raises(ValidationError, match="only recipe mixed_loss"):
        spec(recipe="clm", mixed_loss={})
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        spec(recipe="mixed_loss", mixed_loss={"alpha": 2})


def test_stride_longer_than_a_block_is_rejected():
    assert spec(recipe="clm", lm={"stride": 128}, train={"max_length": 256}).lm.stride == 128
    with pytest.raises(ValidationError, match="would skip tokens"):
        spec(recipe="clm", lm={"stride": 512}, train={"max_length": 256})
