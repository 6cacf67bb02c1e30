"""Mixed CE + cosine loss: definition, α = 0 equivalence, gradients, top-k."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainyard.losses import expected_embedding, mixed_ce_cosine_loss, shift_for_causal_lm

# Toy case: 2 target tokens, vocab 3, embedding dim 2 (shift=False: rows are already aligned).
E = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
Z = torch.tensor([[0.0, 0.0, 0.0], [0.0, math.log(2.0), 0.0]])
Y = torch.tensor([0, 1])
# Row 1: p = (1/3, 1/3, 1/3): CE = ln 3; ê = (2/3, 2/3); cos(ê, e_0) = 1/√2.
# Row 2: p = (1/4, 1/2, 1/4): CE = ln 2; ê = (1/2, 3/4); cos(ê, e_1) = 0.75 / √0.8125.
CE_1, CE_2 = math.log(3), math.log(2)
COS_1, COS_2 = 1 - 1 / math.sqrt(2), 1 - 0.75 / math.sqrt(0.8125)


def test_hand_computed_toy_case():
    out = mixed_ce_cosine_loss(Z, Y, E, alpha=0.5, shift=False)
    assert out.ce.item() == pytest.approx((CE_1 + CE_2) / 2, abs=1e-6)
    assert out.cos.item() == pytest.approx((COS_1 + COS_2) / 2, abs=1e-6)
    assert out.loss.item() == pytest.approx(0.5 * (CE_1 + CE_2) / 2 + 0.5 * (COS_1 + COS_2) / 2, abs=1e-6)
    assert out.loss.item() == pytest.approx(0.5631513, abs=1e-6)
    # argmax of row 1 is a tie resolved to index 0 (= label), row 2 argmax 1 (= label)
    assert out.n_tokens.item() == 2 and out.accuracy.item() == pytest.approx(1.0)


def test_top_k_renormalizes_over_the_k_largest_logits():
    z = torch.tensor([[0.0, math.log(2.0), -5.0]])
    out = mixed_ce_cosine_loss(z, torch.tensor([1]), E, alpha=1.0, top_k=2, shift=False)
    # top-2 = {1, 0} with p = (1/3, 2/3): ê = (1/3, 2/3); cos(ê, e_1) = (2/3) / √(5/9)
    assert out.cos.item() == pytest.approx(1 - (2 / 3) / math.sqrt(5 / 9), abs=1e-6)
    assert out.loss.item() == pytest.approx(out.cos.item())


def test_temperature_shapes_only_the_cosine_term():
    hot = mixed_ce_cosine_loss(Z, Y, E, alpha=0.5, temperature=2.0, shift=False)
    cold = mixed_ce_cosine_loss(Z, Y, E, alpha=0.5, temperature=0.5, shift=False)
    assert hot.ce.item() == pytest.approx(cold.ce.item())
    assert hot.cos.item() != pytest.approx(cold.cos.item())
    # T = 2 on row 2: p ∝ (1, √2, 1)
    p = torch.tensor([1.0, math.sqrt(2.0), 1.0])
    expected = (p / p.sum()) @ E
    assert torch.allclose(expected_embedding(Z[1:], E, temperature=2.0)[0], expected, atol=1e-6)


def test_top_k_unset_and_top_k_at_vocab_size_agree():
    torch.manual_seed(0)
    logits, labels, emb = torch.randn(2, 5, 11), torch.randint(0, 11, (2, 5)), torch.randn(11, 4)
    full = mixed_ce_cosine_loss(logits, labels, emb, alpha=0.5, top_k=None)
    at_v = mixed_ce_cosine_loss(logits, labels, emb, alpha=0.5, top_k=11)
    smaller = mixed_ce_cosine_loss(logits, labels, emb, alpha=0.5, top_k=3)
    assert torch.isfinite(full.loss) and full.loss.item() == pytest.approx(at_v.loss.item(), abs=1e-6)
    assert smaller.cos.item() != pytest.approx(full.cos.item())


def test_ignore_index_positions_are_excluded_from_both_terms():
    torch.manual_seed(1)
    logits, emb = torch.randn(1, 4, 7), torch.randn(7, 3)
    labels = torch.tensor([[-100, 3, -100, 5]])  # after the shift, targets at t=0 -> 3, t=2 -> 5
    out = mixed_ce_cosine_loss(logits, labels, emb, alpha=0.5)
    kept = mixed_ce_cosine_loss(logits[0, [0, 2]], torch.tensor([3, 5]), emb, alpha=0.5, shift=False)
    assert out.n_tokens.item() == 2
    assert out.ce.item() == pytest.approx(kept.ce.item(), abs=1e-6)
    assert out.cos.item() == pytest.approx(kept.cos.item(), abs=1e-6)
    assert shift_for_causal_lm(labels).tolist() == [[3, -100, 5, -100]]


def test_all_ignored_batch_gives_zero_cosine_not_nan():
    logits = torch.randn(1, 3, 5, requires_grad=True)
    out = mixed_ce_cosine_loss(logits, torch.full((1, 3), -100), torch.randn(5, 2), alpha=1.0)
    assert out.cos.item() == 0.0 and out.n_tokens.item() == 0


def test_alpha_zero_is_exactly_plain_cross_entropy():
    torch.manual_seed(2)
    logits, labels, emb = torch.randn(3, 6, 13), torch.randint(0, 13, (3, 6)), torch.randn(13, 8)
    labels[0, :2] = -100
    out = mixed_ce_cosine_loss(logits, labels, emb, alpha=0.0)
    ref = F.cross_entropy(logits.reshape(-1, 13), shift_for_causal_lm(labels).reshape(-1), ignore_index=-100)
    assert torch.equal(out.loss, ref)
    assert out.cos.item() > 0  # still reported for the baseline arm


def test_alpha_zero_equals_the_models_own_loss(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tiny_model_dir = tiny_model

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    batch = tok(["The river flows north through the valley.", "Revenue rose in the third quarter."],
                return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    out = model(**batch, labels=labels)
    ours = mixed_ce_cosine_loss(out.logits, labels, model.get_output_embeddings().weight, alpha=0.0)
    assert torch.equal(ours.loss, out.loss)
    # and with the trainer's token count, as under gradient accumulation
    n = int((shift_for_causal_lm(labels) != -100).sum())
    out_n = model(**batch, labels=labels, num_items_in_batch=n)
    ours_n = mixed_ce_cosine_loss(out_n.logits, labels, model.get_output_embeddings().weight, alpha=0.0,
                                  num_items_in_batch=n)
    assert ours_n.loss.item() == pytest.approx(out_n.loss.item(), rel=1e-6)


def test_gradients_flow_through_both_terms():
    torch.manual_seed(3)
    logits = torch.randn(2, 5, 9, requires_grad=True)
    emb = torch.randn(9, 4, requires_grad=True)
    labels = torch.randint(0, 9, (2, 5))
    out = mixed_ce_cosine_loss(logits, labels, emb, alpha=0.5, top_k=4)
    out.loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert emb.grad is not None and emb.grad.abs().sum() > 0  # only the cosine term reaches E

    # the cosine term alone moves the logits too (through the softmax weights of ê)
    logits.grad = None
    mixed_ce_cosine_loss(logits, labels, emb.detach(), alpha=1.0, top_k=4).loss.backward()
    assert logits.grad.abs().sum() > 0


def test_bad_alpha_and_temperature_are_rejected():
    with pytest.raises(ValueError, match="alpha"):
        mixed_ce_cosine_loss(Z, Y, E, alpha=1.5, shift=False)
    with pytest.raises(ValueError, match="temperature"):
        mixed_ce_cosine_loss(Z, Y, E, alpha=0.5, temperature=0.0, shift=False)
