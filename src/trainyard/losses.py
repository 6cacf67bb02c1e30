"""Mixed cross-entropy + cosine-embedding loss for causal language models.

Definition (per target position t with label y ≠ ignore_index)::

    loss_t = (1 − α) · CE(z_t, y) + α · (1 − cos(ê_t, e_y))
    ê_t    = Σ_{i ∈ top-k(z_t)} softmax(z_t / T)_i · e_i

* ``z_t`` are the logits predicting token t (the usual causal shift: logits at position
  t − 1 predict the label at t), ``E`` is the output embedding matrix (the LM head weight,
  rows ``e_i``; tied to the input embeddings in GPT-2 / small Llamas), ``e_y`` the target's
  row.
* The softmax over the top-k logits is renormalized over those k entries; with ``top_k``
  unset (or ≥ vocab) it runs over the whole vocabulary.
* The temperature T only shapes the cosine term's expected embedding; CE always uses the
  raw logits, so ``ce`` (and the perplexity derived from it) compares across α and T.
* Positions whose label is ``ignore_index`` (-100) are excluded from both terms and from
  token accuracy.

Reduction: a mean over valid tokens, or ``sum / num_items_in_batch`` when the trainer
passes the token count of the whole accumulated batch (so gradient accumulation weighs
tokens, not micro-batches, the way transformers' own causal-LM loss does).

With α = 0 the total *is* the cross-entropy transformers computes for the same batch; the
cosine part is still computed (it just takes no part in the gradient) so baseline runs log
``cos_loss`` too and the arms of a study compare on both terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


@dataclass
class MixedLoss:
    """Scalar parts of one batch's loss; ``loss`` carries the gradient."""

    loss: torch.Tensor
    ce: torch.Tensor
    cos: torch.Tensor
    correct: torch.Tensor  # number of valid positions whose argmax is the label
    n_tokens: torch.Tensor  # number of valid positions
    ce_sum: torch.Tensor  # detached sums over valid positions, for token-weighted logging
    cos_sum: torch.Tensor

    @property
    def accuracy(self) -> torch.Tensor:
        return self.correct.float() / self.n_tokens.clamp(min=1).float()


def shift_for_causal_lm(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """labels[:, t] -> labels[:, t + 1], padding the last position with ignore_index.

    Same as transformers' ``ForCausalLMLoss`` (pad then slice, rather than slicing the
    logits), so the α = 0 loss reduces over exactly the same elements and matches bit for bit.
    """
    return F.pad(labels, (0, 1), value=ignore_index)[..., 1:].contiguous()


def expected_embedding(
    logits: torch.Tensor, embeddings: torch.Tensor, temperature: float = 1.0, top_k: int | None = None
) -> torch.Tensor:
    """ê = softmax(z/T) restricted to the top-k logits, times E: (N, V) x (V, H) -> (N, H)."""
    scaled = logits / temperature
    if top_k is None or top_k >= scaled.shape[-1]:
        weights = scaled.softmax(dim=-1)
    else:
        values, index = scaled.topk(top_k, dim=-1)
        # Scatter the renormalized top-k probabilities into a dense (N, V) row so one matmul
        # with E gives ê; gradients flow to the chosen logits and to every chosen row of E.
        weights = torch.zeros_like(scaled).scatter(-1, index, values.softmax(dim=-1))
    return weights @ embeddings.to(weights.dtype)


def mixed_ce_cosine_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    embeddings: torch.Tensor,
    *,
    alpha: float,
    temperature: float = 1.0,
    top_k: int | None = None,
    ignore_index: int = IGNORE_INDEX,
    shift: bool = True,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> MixedLoss:
    """The mixed loss of a batch (see the module docstring for the definition).

    Args:
        logits: (B, L, V) model outputs (or (N, V) with ``shift=False``).
        labels: (B, L) token ids, ``ignore_index`` where no loss is wanted; unshifted when
            ``shift`` (as passed to a Hugging Face causal LM).
        embeddings: (V, H) output embedding matrix (``model.get_output_embeddings().weight``).
        alpha: weight of the cosine term in [0, 1].
        temperature: softmax temperature of the expected embedding (cosine term only).
        top_k: restrict ê to the k largest logits; ``None`` uses the whole vocabulary.
        num_items_in_batch: token count of the accumulated batch; divides the summed loss.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"mixed_loss.alpha must be in [0, 1], got {alpha}")
    if temperature <= 0:
        raise ValueError(f"mixed_loss.temperature must be > 0, got {temperature}")
    vocab = logits.shape[-1]
    if embeddings.shape[0] < vocab:
        raise ValueError(f"embedding matrix has {embeddings.shape[0]} rows but logits have {vocab} classes")

    targets = shift_for_causal_lm(labels, ignore_index) if shift else labels
    flat_logits = logits.float().reshape(-1, vocab)  # upcast as transformers does
    flat_targets = targets.reshape(-1).to(flat_logits.device)
    valid = flat_targets != ignore_index
    n_valid = valid.sum()

    if num_items_in_batch is None:
        ce = F.cross_entropy(flat_logits, flat_targets, ignore_index=ignore_index, reduction="mean")
        denom = n_valid.clamp(min=1).float()
        ce_sum = ce.detach() * n_valid
    else:
        ce_sum = F.cross_entropy(flat_logits, flat_targets, ignore_index=ignore_index, reduction="sum")
        denom = torch.as_tensor(num_items_in_batch, device=ce_sum.device).float()
        ce = ce_sum / denom
        ce_sum = ce_sum.detach()

    # The cosine term only needs valid rows: select them first to keep the (N, V) work small.
    z = flat_logits[valid]
    y = flat_targets[valid]
    if z.shape[0] == 0:
        cos_sum = flat_logits.sum() * 0.0  # keeps the graph (and dtype/device) for an all-ignored batch
    else:
        e_hat = expected_embedding(z, embeddings, temperature=temperature, top_k=top_k)
        e_y = embeddings[y].to(e_hat.dtype)
        cos_sum = (1.0 - F.cosine_similarity(e_hat, e_y, dim=-1)).sum()
    cos = cos_sum / denom

    loss = ce if alpha == 0.0 else (1.0 - alpha) * ce + alpha * cos
    with torch.no_grad():
        correct = (z.argmax(dim=-1) == y).sum() if z.shape[0] else n_valid * 0
    return MixedLoss(loss=loss, ce=ce, cos=cos, correct=correct, n_tokens=n_valid,
                     ce_sum=ce_sum, cos_sum=cos_sum.detach())
