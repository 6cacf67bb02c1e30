"""Texts for causal-LM recipes (clm, pretrain, mixed_loss): load, filter, cut into blocks.

Every dataset goes through its row format first (so instruction / QA / sentiment sets are
rendered to plain text, see ``formats/lm_text.py``), then texts are tokenized, joined with
EOS between them and cut into blocks of ``train.max_length`` tokens, a new block every
``lm.stride`` tokens (default: the block length, i.e. no overlap). The remainder shorter
than a block is dropped, except that a set too small for one block keeps what it has.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from trainyard.data.loading import DataStats, held_out_count, load_examples
from trainyard.errors import DataFormatError
from trainyard.spec import DataSpec, EvalSetSpec, RunSpec

log = logging.getLogger(__name__)


@dataclass
class LMTexts:
    train: list[str]
    held_out: list[str] | None
    stats: DataStats


def drop_short(texts: list[str], min_chars: int) -> list[str]:
    return [t for t in texts if len(t.strip()) >= min_chars] if min_chars else texts


def load_train_texts(spec: RunSpec) -> LMTexts:
    """The training corpus and its held-out part. `data.limit` counts texts kept after
    `lm.min_chars`, so "15,000 samples, under 50 characters dropped" means 15,000 kept."""
    min_chars = spec.lm.min_chars
    data = spec.data
    if min_chars and data.limit:
        # Read unlimited, filter, then take the limit (the held-out split is sized on the limit).
        update: dict = {"limit": None}
        if data.eval_split is None:  # a held-out part of the same split: fix its size now
            n_eval = held_out_count(data, n_rows=sys.maxsize)
            update.update(eval_size=n_eval, eval_limit=n_eval or None)
        data = data.model_copy(update=update)
    train, held_out, stats = load_examples(data)
    train_texts = drop_short(list(train["text"]), min_chars)
    held_texts = drop_short(list(held_out["text"]), min_chars) if held_out is not None else None
    if spec.data.limit:
        train_texts = train_texts[: spec.data.limit]
    dropped = len(train) - len(train_texts)
    if min_chars:
        stats.skipped[f"shorter than {min_chars} chars or over limit"] += dropped
    if not train_texts:
        raise DataFormatError(f"data {spec.data.source}: no text of at least lm.min_chars={min_chars} characters")
    stats.examples = len(train_texts)
    return LMTexts(train_texts, held_texts or None, stats)


def load_eval_texts(ev: EvalSetSpec) -> list[str]:
    """One named eval set as texts. A missing text field fails with the dataset, the field
    and the columns that exist (from `check_columns`)."""
    where = f"eval.datasets[{ev.name}]"
    data = DataSpec(source=ev.source, config=ev.config, split=ev.split, format=ev.format,
                    text_field=ev.text_field, limit=ev.limit, eval_size=0, shuffle=False)
    ds, _, _ = load_examples(data, where=where)
    return list(ds["text"])


def to_blocks(texts: list[str], tokenizer, block_size: int, stride: int | None = None):
    """Tokenize, join with EOS, cut into `block_size` windows every `stride` tokens."""
    from datasets import Dataset

    stride = stride or block_size
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for enc in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        if eos is not None:
            ids.append(eos)
    if not ids:
        raise DataFormatError("no tokens to train or evaluate on (all texts empty)")
    # A set too small for one full block still yields one (shorter) block.
    starts = [0] if len(ids) <= block_size else list(range(0, len(ids) - block_size + 1, stride))
    blocks = [ids[s : s + block_size] for s in starts]
    return Dataset.from_dict({"input_ids": blocks, "attention_mask": [[1] * len(b) for b in blocks]})


def lm_collator(tokenizer):
    """Causal-LM labels = input_ids (padding -> -100); the model shifts them itself."""
    from transformers import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False)
