"""Small LM from scratch: architecture from the YAML, random init, transformers Trainer.

setup (texts -> tokenizer trained on the corpus, or model.tokenizer from the Hub -> model
from `architecture:` -> blocks) -> train -> per-set loss / perplexity -> final/.
Reports model/parameters, model/memory_mb, train/tokens_per_second and train/runtime_s.
`model.name` only names the model (model card, final/); nothing is downloaded for it.
"""

from __future__ import annotations

from trainyard import distributed
from trainyard.arch import build_model, describe, model_memory_mb
from trainyard.context import RunContext
from trainyard.errors import DataFormatError
from trainyard.models import count_parameters
from trainyard.recipes._lm import blocks, load_texts, make_trainer, train_and_finish
from trainyard.spec import RunSpec


def get_tokenizer(spec: RunSpec, ctx: RunContext, texts: list[str]):
    """model.tokenizer if named; else a byte-level BPE trained on the training texts, saved
    in the run directory so a resumed run reuses exactly the same vocabulary."""
    from transformers import AutoTokenizer

    from trainyard.tokenizer_training import train_bpe_tokenizer

    arch = spec.architecture
    if spec.model.tokenizer:
        tok = AutoTokenizer.from_pretrained(spec.model.tokenizer, trust_remote_code=spec.model.trust_remote_code)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
    else:
        saved = ctx.rundir.path / "tokenizer"
        if not ctx.is_main:  # torchrun: rank 0 trains and saves it, the others load that one
            distributed.barrier()
            tok = AutoTokenizer.from_pretrained(saved)
        elif (saved / "tokenizer.json").is_file():
            tok = AutoTokenizer.from_pretrained(saved)
        else:
            vocab = spec.lm.tokenizer_vocab_size or arch.vocab_size
            tok = train_bpe_tokenizer(texts, vocab, model_max_length=arch.max_position_embeddings)
            tok.save_pretrained(saved)
            ctx.log.info("trained a byte-level BPE tokenizer on %d texts: %d tokens", len(texts), len(tok))
        if ctx.is_main:
            distributed.barrier()
    if len(tok) > arch.vocab_size:
        raise DataFormatError(
            f"architecture.vocab_size {arch.vocab_size} is smaller than the tokenizer "
            f"({spec.model.tokenizer or 'trained on the corpus'}: {len(tok)} tokens); raise vocab_size"
        )
    return tok


def train(spec: RunSpec, ctx: RunContext) -> dict[str, float]:
    from transformers import Trainer

    arch = spec.architecture
    assert arch is not None  # the schema guarantees it, and max_length <= its positions (recipes/descriptors.py)
    train_texts, eval_texts = load_texts(spec, ctx)
    tokenizer = get_tokenizer(spec, ctx, train_texts)
    data = blocks(spec, tokenizer, train_texts, eval_texts)
    model = build_model(arch, seed=spec.train.seed, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    ctx.log.info("from scratch: %s", describe(arch))
    ctx.extra_metrics.update(count_parameters(model))
    ctx.extra_metrics.update({
        "model/memory_mb": model_memory_mb(model),
        "data/train_blocks": float(len(data.train)),
    })
    trainer = make_trainer(Trainer, spec, ctx, model, tokenizer, data)
    return train_and_finish(spec, ctx, trainer, tokenizer, data)
