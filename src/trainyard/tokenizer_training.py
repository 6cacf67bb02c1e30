"""Train a byte-level BPE tokenizer on a corpus (GPT-2 style) for from-scratch pretraining.

Byte-level: every string is encodable (no unknown token), so the tokenizer trained on
WikiText also handles the financial eval sets. ``<|endoftext|>`` separates documents and
``<|pad|>`` is separate from it because the LM collator masks padding out of the labels,
which would otherwise also hide every document boundary from the loss.
"""

from __future__ import annotations

from collections.abc import Iterable

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2,
                        model_max_length: int = 2048):
    """A ``PreTrainedTokenizerFast`` with at most ``vocab_size`` entries (fewer on a small corpus)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + 2:
        raise ValueError(f"vocab_size {vocab_size} is below the byte alphabet ({len(alphabet)}) + {EOS} + {PAD}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS, PAD],
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        bos_token=EOS,
        pad_token=PAD,
        unk_token=None,
        model_max_length=model_max_length,
    )
