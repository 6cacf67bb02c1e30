"""Token-weighted loss / perplexity of a trainer's eval sets (what the recipes report).

`Trainer.evaluate()` averages per-batch means, so batches with few target tokens weigh as
much as full ones and exp() of it is not a perplexity. Here every target token (labels !=
-100, after the causal shift) counts once: ΣNLL in float64 / N tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainyard.evaluation.perplexity import loss_flag
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


def token_weighted_loss(trainer, dataset) -> TokenLoss:
    import torch

    model = trainer.model
    was_training = model.training
    model.eval()
    nll, tokens, correct, nonfinite = 0.0, 0, 0, 0
    loader = whole_set_loader(trainer, dataset)
    with torch.inference_mode():
        for batch in loader:
            batch = trainer._prepare_inputs(batch)
            labels = batch.get("labels")
            if labels is None:
                raise ValueError("eval batches carry no labels; cannot compute a token-weighted loss")
            inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
            logits = model(**inputs).logits.float()
            shift_logits = logits[:, :-1, :]
            shift_labels = labels[:, 1:]
            mask = shift_labels != -100
            if not mask.any():
                continue
            picked = shift_logits[mask]
            target = shift_labels[mask]
            per_token = torch.nn.functional.cross_entropy(picked, target, reduction="none").double()
            nonfinite += int((~torch.isfinite(per_token)).sum().item())
            nll += per_token.sum().item()
            tokens += int(mask.sum().item())
            correct += int((picked.argmax(-1) == target).sum().item())
    if was_training:
        model.train()
    return TokenLoss(nll, tokens, correct, nonfinite)


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
