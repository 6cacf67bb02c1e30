"""Right-padded causal batches run without their (redundant) padding mask, on the real tiny
model: the same outputs at every real position, and every other kind of batch untouched."""

from __future__ import annotations

import pytest
import torch

from trainyard.causal_mask import (
    applies_to,
    is_right_padded,
    skip_redundant_masks,
    without_redundant_mask,
)


@pytest.fixture(scope="module")
def model(tiny_model):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation="sdpa").eval()


def _batch(lengths: list[int], width: int, left: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 500, (len(lengths), width), generator=g)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        if left:
            mask[i, width - n:] = 1
        else:
            mask[i, :n] = 1
    return {"input_ids": ids * mask, "attention_mask": mask}


def test_right_padded_batch_scores_the_same_without_the_mask(model):
    batch = _batch([37, 12, 25, 37], 37)
    with torch.inference_mode():
        masked = model(**batch).logits
        handle = skip_redundant_masks(model)
        seen = []  # what the model's forward gets, after the hook (pre-hooks run in order)
        spy = model.register_forward_pre_hook(lambda m, a, kw: seen.append(sorted(kw)), with_kwargs=True)
        try:
            unmasked = model(**batch).logits
        finally:
            handle.remove()
            spy.remove()
    real = batch["attention_mask"].bool()
    assert seen == [["input_ids"]]
    assert torch.allclose(masked[real], unmasked[real], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(masked, unmasked)  # the pads' own outputs differ: the mask really went


def test_the_hook_drops_the_mask_only_where_it_is_redundant(model):
    right, left = _batch([9, 4], 9), _batch([9, 4], 9, left=True)
    assert "attention_mask" not in without_redundant_mask(right)
    assert without_redundant_mask(left) is left  # generation / DPO prompts: left padding keeps it
    holed = {**right, "attention_mask": torch.tensor([[1, 1, 0, 1, 1, 1, 1, 1, 1], [1] * 9])}
    assert not is_right_padded(holed["attention_mask"]) and without_redundant_mask(holed) is holed
    positioned = {**right, "position_ids": torch.arange(9).expand(2, 9)}  # packed rows set positions
    assert without_redundant_mask(positioned) is positioned
    cached = {**right, "past_key_values": object()}
    assert without_redundant_mask(cached) is cached
    assert without_redundant_mask({"input_ids": right["input_ids"]}) == {"input_ids": right["input_ids"]}


def test_kernels_that_need_the_mask_are_left_alone(model):
    assert applies_to(model)
    cfg = model.config
    try:
        cfg._attn_implementation = "flash_attention_2"  # unpads with the mask: dropping it computes the pads
        assert not applies_to(model) and skip_redundant_masks(model) is None
    finally:
        cfg._attn_implementation = "sdpa"
    cfg.output_router_logits = True  # MoE: the router's aux loss averages over the mask's tokens
    try:
        assert not applies_to(model)
    finally:
        del cfg.output_router_logits
