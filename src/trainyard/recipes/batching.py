"""How SFT / DPO batches are formed: length grouping, packing that keeps examples apart, and
the padding fraction of the batches actually trained on.

- Length grouping (`train.group_by_length`, unpacked runs): transformers'
  `LengthGroupedSampler` puts examples of similar length in the same batch, from a `length`
  column computed once here (DPO rows have prompt/chosen/rejected ids, no `input_ids`).
- Packing (`train.packing`): TRL's best-fit-decreasing packing, never "wrapped": whole
  examples share a row and every example restarts its position ids. With FlashAttention
  (varlen kernels) the batch is padding-free; on SDPA / eager each packed row stays a row
  and the model builds a block-diagonal causal mask from the position ids (transformers
  does so when there is no attention mask and no KV cache; TRL's compute_loss passes
  use_cache=False). Either way no token attends to another example.
"""

from __future__ import annotations

from typing import Any

from trainyard.contract import PADDING_FRACTION

LENGTH_COLUMN = "length"
VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3")


def uses_varlen_attention(model) -> bool:
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None) or ""
    return impl in VARLEN_ATTENTION or "flash" in impl


def batching_kwargs(spec) -> dict[str, Any]:
    """TrainingArguments for the sampler: length-grouped unless packing or turned off."""
    if spec.train.group_by_length and not spec.train.packing:
        return {"train_sampling_strategy": "group_by_length", "length_column_name": LENGTH_COLUMN}
    return {}


def sft_packing_kwargs(packing: bool) -> dict[str, Any]:
    """SFTConfig arguments: bfd packing (examples kept whole and apart) or none."""
    return {"packing": packing, "packing_strategy": "bfd"}


def _row_length(row: dict[str, Any]) -> int:
    if "input_ids" in row:
        return len(row["input_ids"])
    # DPO: the longer of prompt+chosen and prompt+rejected
    return len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"]))


def _with_lengths(ds):
    from datasets import Dataset

    if not isinstance(ds, Dataset) or LENGTH_COLUMN in ds.column_names:
        return ds
    return ds.map(lambda b: {LENGTH_COLUMN: [_row_length(dict(zip(b, v, strict=True))) for v in zip(*b.values(), strict=True)]},
                  batched=True, desc="Computing lengths")


def enable_length_grouping(trainer) -> None:
    """Length-grouped training batches (megabatches of batch_size × grad_accum, shuffled).

    The trainer's args must have train_sampling_strategy="group_by_length"; this adds the
    `length` column to the train and eval datasets and keeps it through the trainer's
    unused-column removal (its collators ignore extra keys)."""
    trainer.train_dataset = _with_lengths(trainer.train_dataset)
    if isinstance(trainer.eval_dataset, dict):
        trainer.eval_dataset = {k: _with_lengths(v) for k, v in trainer.eval_dataset.items()}
    elif trainer.eval_dataset is not None:
        trainer.eval_dataset = _with_lengths(trainer.eval_dataset)
    trainer._set_signature_columns_if_needed()
    if LENGTH_COLUMN not in trainer._signature_columns:
        trainer._signature_columns = [*trainer._signature_columns, LENGTH_COLUMN]


class PackedRowsCollator:
    """Packed SFT rows for SDPA / eager attention: one row per packed sequence, position ids
    restarting at every example, no attention mask (so transformers masks block-diagonally),
    and no label where one example would be predicted from the previous one."""

    def __init__(self, pad_token_id: int):
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        self.inner = DataCollatorForLanguageModeling(pad_token_id=pad_token_id, padding_free=False, return_position_ids=True)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        out = self.inner(examples)
        out.pop("attention_mask", None)
        out["labels"][out["position_ids"] == 0] = -100
        return out


def configure_packing(trainer) -> None:
    """Packed SFT without FlashAttention: keep rows apart instead of one padding-free row
    (whose dense block-diagonal mask costs (batch × max_length)² per layer)."""
    if not uses_varlen_attention(trainer.model):
        trainer.data_collator = PackedRowsCollator(trainer.data_collator.pad_token_id)


class PaddingCounter:
    """Wraps the training collator: counts real tokens and padded slots of every batch."""

    def __init__(self, inner):
        self.inner = inner
        self.real = 0
        self.slots = 0

    def __call__(self, examples):
        out = self.inner(examples)
        ids = out["input_ids"]
        self.slots += int(ids.numel())
        mask = out.get("attention_mask")
        if mask is not None:
            self.real += int(mask.sum())
        else:  # packed rows / padding-free: every example's own tokens
            self.real += sum(len(e["input_ids"]) for e in examples)
        return out

    @property
    def fraction(self) -> float | None:
        return 1.0 - self.real / self.slots if self.slots else None

    def to_metrics(self) -> dict[str, float]:
        return {PADDING_FRACTION: self.fraction} if self.fraction is not None else {}


def count_padding(trainer) -> PaddingCounter:
    """The training dataloader's collator, counted (evaluation batches are not)."""
    counter = PaddingCounter(trainer.data_collator)
    build = trainer.get_train_dataloader

    def get_train_dataloader():
        plain, trainer.data_collator = trainer.data_collator, counter
        try:
            return build()
        finally:
            trainer.data_collator = plain

    trainer.get_train_dataloader = get_train_dataloader
    return counter
