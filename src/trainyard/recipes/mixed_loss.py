"""Causal-LM training with the mixed CE + cosine loss (trainyard.losses), on text blocks.

A small Trainer subclass overrides ``compute_loss`` (PITFALLS: no compute_loss_func).
Besides ``eval_loss`` (the mixed total, a per-batch mean as Trainer reports it) each eval
logs ``eval_ce_loss``, ``eval_cos_loss`` and ``eval_token_accuracy`` (token-weighted) and
``eval_perplexity = exp(eval_ce_loss)``: perplexity from CE only, so runs with different
α / T compare on the same footing. Training logs ``ce_loss`` / ``cos_loss`` likewise.
"""

from __future__ import annotations

from transformers import Trainer

from trainyard.context import RunContext
from trainyard.evaluation.trainer_eval import whole_set_loader
from trainyard.losses import mixed_ce_cosine_loss
from trainyard.metrics import safe_exp
from trainyard.models import count_parameters, load_tokenizer
from trainyard.recipes._lm import blocks, load_texts, make_trainer, train_and_finish
from trainyard.recipes.clm import build_model
from trainyard.recipes.common import evaluates_here
from trainyard.spec import MixedLossSpec, RunSpec


class _Sums:
    """Token-weighted running sums of the loss parts between two reports."""

    def __init__(self) -> None:
        self.ce = self.cos = 0.0
        self.correct = self.tokens = 0

    def add(self, parts) -> None:
        self.ce += float(parts.ce_sum)
        self.cos += float(parts.cos_sum)
        self.correct += int(parts.correct)
        self.tokens += int(parts.n_tokens)

    def report(self, prefix: str) -> dict[str, float]:
        if not self.tokens:
            return {}
        ce = self.ce / self.tokens
        return {
            f"{prefix}ce_loss": ce,
            f"{prefix}cos_loss": self.cos / self.tokens,
            f"{prefix}perplexity": safe_exp(ce),
            f"{prefix}token_accuracy": self.correct / self.tokens,
        }


class MixedLossTrainer(Trainer):
    def __init__(self, *args, mixed_loss: MixedLossSpec, **kwargs):
        super().__init__(*args, **kwargs)
        self.mixed = mixed_loss
        self._train_sums, self._eval_sums = _Sums(), _Sums()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
        embeddings = self.accelerator.unwrap_model(model).get_output_embeddings().weight
        parts = mixed_ce_cosine_loss(
            outputs.logits, labels, embeddings,
            alpha=self.mixed.alpha, temperature=self.mixed.temperature, top_k=self.mixed.top_k,
            num_items_in_batch=num_items_in_batch,
        )
        # Normalized by the accumulated batch's token count when the trainer gives it, so
        # the trainer must not divide by the accumulation steps again.
        self.loss_is_scaled_for_ga = num_items_in_batch is not None
        (self._train_sums if model.training else self._eval_sums).add(parts)
        return (parts.loss, outputs) if return_outputs else parts.loss

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        self._eval_sums = _Sums()
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        output.metrics.update(self._eval_sums.report(f"{metric_key_prefix}_"))
        return output

    def loss_parts(self, dataset) -> dict[str, float]:
        """Token-weighted ce_loss / cos_loss / mixed_loss / token_accuracy over a dataset."""
        import torch

        self._eval_sums = _Sums()
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            for batch in whole_set_loader(self, dataset):
                self.compute_loss(self.model, self._prepare_inputs(batch))
        self.model.train(was_training)
        out = self._eval_sums.report("")
        out.pop("perplexity", None)  # reported by the final eval as eval/<name>/perplexity
        if out:
            a = self.mixed.alpha
            out["mixed_loss"] = (1 - a) * out["ce_loss"] + a * out["cos_loss"]
        return out

    def log(self, logs, start_time=None):
        if "loss" in logs:  # a training log: add the parts since the last one
            logs = {**logs, **self._train_sums.report("")}
            self._train_sums = _Sums()
        super().log(logs, start_time)


def train(spec: RunSpec, ctx: RunContext) -> dict[str, float]:
    assert spec.mixed_loss is not None  # the schema guarantees it for this recipe
    tokenizer = load_tokenizer(spec)
    train_texts, eval_texts = load_texts(spec, ctx)
    data = blocks(spec, tokenizer, train_texts, eval_texts)
    model = build_model(spec, ctx)
    ctx.extra_metrics.update(count_parameters(model))
    trainer = make_trainer(MixedLossTrainer, spec, ctx, model, tokenizer, data, mixed_loss=spec.mixed_loss)
    metrics = train_and_finish(spec, ctx, trainer, tokenizer, data)
    if ctx.divergence is None and not ctx.cancel_requested and evaluates_here(ctx):
        # Final eval/<name>/loss is CE (comparable across α, T); add the objective's parts.
        for name, ds in data.eval_blocks.items():
            metrics.update({f"eval/{name}/{k}": v for k, v in trainer.loss_parts(ds).items()})
    return metrics
