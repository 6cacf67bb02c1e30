"""Token-weighted loss / perplexity of a trainer's eval sets (what the recipes report).

`Trainer.evaluate()` averages per-batch means, so batches with few target tokens weigh as
much as full ones and exp() of it is not a perplexity. Here every target token (labels !=
-100, after the causal shift) counts once: ΣNLL in float64 / N tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainyard.evaluation.perplexity import (
    ScoredForward,
    eval_mode,
    loss_flag,
    token_budget_batches,
)
from trainyard.metrics import safe_exp


@dataclass
class TokenLoss:
    nll_sum: float
    tokens: int
    correct: int
    nonfinite_tokens: int = 0

    @property
    def loss(self) -> float:
        return self.nll_sum / self.tokens if self.tokens else math.nan

    def to_metrics(self, name: str) -> dict[str, float]:
        loss = self.loss
        out: dict[str, float | str] = {
            f"eval/{name}/loss": loss,
            f"eval/{name}/perplexity": safe_exp(loss),
            f"eval/{name}/tokens": float(self.tokens),
            f"eval/{name}/token_accuracy": self.correct / self.tokens if self.tokens else math.nan,
        }
        flag = loss_flag(loss, self.nonfinite_tokens, self.tokens) if self.tokens else "no target tokens"
        if flag:
            out[f"eval/{name}/flag"] = flag
        return out


def token_weighted_loss(trainer, dataset, batch_size: int | None = None) -> TokenLoss:
    """ΣNLL / N over every target token of `dataset` (the trainer's prepared eval set).

    Rows are scored longest first in token-budget batches (the trainer's eval batch size ×
    the longest row), collated by the trainer's own collator (padding, packed positions),
    and only target positions get logits (ScoredForward).
    """
    import torch

    columns = [c for c in ("input_ids", "labels", "seq_lengths") if c in dataset.column_names]
    if "labels" not in columns:
        raise ValueError("eval rows carry no labels; cannot compute a token-weighted loss")
    rows = dataset.select_columns(columns).to_list()
    lengths = [len(r["input_ids"]) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: lengths[i], reverse=True)
    budget = (batch_size or trainer.args.per_device_eval_batch_size) * (lengths[order[0]] if order else 0)
    result = TokenLoss(0.0, 0, 0, 0)
    with eval_mode(trainer.model) as model, torch.inference_mode():
        forward = ScoredForward(model)
        for idx in token_budget_batches(order, lengths, budget):
            batch = trainer.data_collator([rows[i] for i in idx])
            labels = batch.pop("labels")
            inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
            target_mask = labels[:, 1:] != -100  # position i predicts labels[i + 1]
            if not target_mask.any():
                continue
            r, c = target_mask.nonzero(as_tuple=True)
            nll, hits = forward(inputs, r, c, labels[r, c + 1])
            result.nll_sum += math.fsum(nll.tolist())
            result.tokens += len(nll)
            result.correct += hits
            result.nonfinite_tokens += int((~torch.isfinite(nll)).sum())
    return result


def whole_set_loader(trainer, dataset):
    """The trainer's eval loader; under torchrun an unsharded one over the whole set (the
    Trainer's own gives each rank a share padded with repeats), so the numbers equal a
    single process's."""
    from trainyard import distributed

    if not distributed.is_distributed():
        return trainer.get_eval_dataloader(dataset)
    from torch.utils.data import DataLoader

    dataset = trainer._remove_unused_columns(dataset, description="evaluation")
    return DataLoader(dataset, batch_size=trainer.args.per_device_eval_batch_size, collate_fn=trainer.data_collator)
