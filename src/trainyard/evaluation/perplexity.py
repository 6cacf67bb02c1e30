"""Exact, token-weighted perplexity of a causal LM on a set of texts.

Why not `exp(Trainer.evaluate()["eval_loss"])`: that loss is a mean over batches, so short
and long sequences weigh the same, and `math.exp` of a diverged loss raises or prints "inf"
with no reason. Here the summed negative log-likelihood (float64) and the token count (int)
are accumulated over the whole set; loss = ΣNLL / N, and a non-finite or overflowing value
is reported as such with a `flag` naming the cause.

Modes:
- "rolling" (documents): lm-evaluation-harness `loglikelihood_rolling` semantics, so
  bits per byte and word perplexity are comparable with the harness's numbers.
- "block" (training-style): texts joined with EOS and cut into `max_length` blocks.

Command:
    python -m trainyard.evaluation.perplexity --model DIR --data FILE.jsonl [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from trainyard import causal_mask
from trainyard.evaluation.windows import Window, block_windows, rolling_windows
from trainyard.metrics import safe_exp
from trainyard.run_dir import json_safe

Mode = Literal["rolling", "block"]
MODES: tuple[str, ...] = ("rolling", "block")
# Elements of float32 logits materialized at once when scoring (32 MiB): bounds memory for
# large vocabularies (a chunk stays cache-friendly) without a Python loop per token.
_LOGIT_CHUNK_ELEMENTS = 2**23


def count_words(text: str) -> int:
    """Words as lm-evaluation-harness counts them for rolling-loglikelihood tasks."""
    return len(re.split(r"\s+", text))


@dataclass
class PerplexityResult:
    loss: float  # mean NLL per scored token, nats
    perplexity: float
    bits_per_byte: float
    word_perplexity: float
    tokens: int  # scored (predicted) tokens
    bytes: int  # UTF-8 bytes of the texts
    words: int
    token_accuracy: float  # fraction of scored tokens where argmax == target
    flag: str | None = None  # why a value is not finite ("diverged: ...", "overflow: ...")
    nll_sum: float = 0.0  # ΣNLL in nats
    text_nll: list[float] | None = field(default=None, repr=False)  # per text, rolling mode

    def to_metrics(self, name: str) -> dict[str, float | int | str]:
        """Flat metrics under the contract's names: eval/<name>/loss, .../perplexity, ..."""
        if not name or "/" in name:
            raise ValueError(f"eval set name must be non-empty and contain no '/', got {name!r}")
        out: dict[str, float | int | str] = {
            f"eval/{name}/{key}": getattr(self, key)
            for key in ("loss", "perplexity", "bits_per_byte", "word_perplexity", "tokens", "token_accuracy")
        }
        if self.flag:
            out[f"eval/{name}/flag"] = self.flag
        return out

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("text_nll")
        return out


def evaluate_texts(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    mode: Mode = "rolling",
    max_length: int = 1024,
    batch_size: int = 8,
) -> PerplexityResult:
    """Token-weighted loss, perplexity, bits per byte, word perplexity and accuracy of `texts`.

    Texts are tokenized without special tokens. Texts that tokenize to nothing are skipped.
    The model is put in eval mode for the call and given back in the mode it had.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    encoded = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    kept = [(text, ids) for text, ids in zip(texts, encoded, strict=True) if ids]
    if not kept:
        raise ValueError("no text to evaluate: every text is empty after tokenization")
    texts = [t for t, _ in kept]
    docs = [ids for _, ids in kept]

    if mode == "rolling":
        # The first token is predicted from BOS, or EOS when there is none (as the harness does).
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else _special_id(tokenizer, "eos")
        windows = [w for i, ids in enumerate(docs) for w in rolling_windows(ids, prefix, max_length, doc=i)]
    else:
        windows = block_windows(docs, _special_id(tokenizer, "eos"), max_length)

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    window_nll, correct, nonfinite = score_windows(model, windows, batch_size=batch_size, pad_id=pad_id)

    text_nll = None
    if mode == "rolling":
        text_nll = [0.0] * len(docs)
        for w, nll in zip(windows, window_nll, strict=True):
            text_nll[w.doc] += nll
    return summarize(
        nll_sum=math.fsum(window_nll),
        tokens=sum(w.n_scored for w in windows),
        correct=correct,
        nonfinite_tokens=nonfinite,
        n_bytes=sum(len(t.encode("utf-8")) for t in texts),
        n_words=sum(count_words(t) for t in texts),
        text_nll=text_nll,
    )


def _special_id(tokenizer, which: str) -> int:
    value = getattr(tokenizer, f"{which}_token_id")
    if value is None:
        raise ValueError(
            f"the tokenizer has no {which.upper()} token, which this mode needs "
            f"({'as the first prediction context' if which == 'bos' else 'between texts or as prefix'})"
        )
    return value


def score_windows(model, windows: list[Window], *, batch_size: int, pad_id: int) -> tuple[list[float], int, int]:
    """Summed NLL (nats, float64) per window, argmax-correct count, non-finite token count.

    Windows are batched longest first, so each batch holds similar lengths, and a batch
    holds as many windows as fit in `batch_size` × the longest window's tokens (short
    windows share a batch, memory stays that of the first batch). Padding is on the right,
    so causal attention keeps it out of every real position, and it is never scored; only
    scored positions get logits (see ScoredForward).
    """
    import torch

    order = sorted(range(len(windows)), key=lambda i: windows[i].input_len, reverse=True)
    window_nll = torch.zeros(len(windows), dtype=torch.float64)
    correct = nonfinite = 0
    budget = batch_size * windows[order[0]].input_len if order else 0
    with eval_mode(model), torch.inference_mode():
        forward = ScoredForward(model)
        for idx in token_budget_batches(order, [windows[i].input_len for i in range(len(windows))], budget):
            batch = [windows[i] for i in idx]
            width = batch[0].input_len
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            rows, cols, targets, owner = [], [], [], []
            for r, (i, w) in enumerate(zip(idx, batch, strict=True)):
                n = w.input_len
                input_ids[r, :n] = torch.tensor(w.tokens[:-1])
                attention[r, :n] = 1
                first = n - w.n_scored  # scored input positions: first .. n-1
                rows += [r] * w.n_scored
                cols += range(first, n)
                targets += w.tokens[first + 1 :]
                owner += [i] * w.n_scored
            nll, hits = forward({"input_ids": input_ids, "attention_mask": attention}, torch.tensor(rows), torch.tensor(cols), torch.tensor(targets))
            window_nll.index_add_(0, torch.tensor(owner), nll)
            nonfinite += int((~torch.isfinite(nll)).sum())
            correct += hits
    return window_nll.tolist(), correct, nonfinite


def token_budget_batches(order: list[int], lengths: list[int], budget: int) -> list[list[int]]:
    """Consecutive groups of `order` (longest first) whose rows × longest length ≤ budget."""
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


class eval_mode:
    """The model in eval mode for a block, handed back in the mode it had."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        self.model.train(self.was_training)


class ScoredForward:
    """NLL (float64, CPU) and argmax hits at chosen positions of a batch.

    Where the model is a decoder followed by its output embedding (checked once against
    the model's own logits), the hidden states are computed once and the vocabulary
    projection runs only on the scored positions, in chunks, in float32: no full-vocab
    logits for padding or unscored context, memory bounded by _LOGIT_CHUNK_ELEMENTS.
    Otherwise the model's own logits are used (chunked from there).
    """

    def __init__(self, model):
        self.model = model
        self.device = _input_device(model)
        self.split = _decoder_and_head(model)
        self.checked = False
        self.skip_mask = causal_mask.applies_to(model)

    def __call__(self, inputs: dict, rows, cols, targets):
        import torch
        import torch.nn.functional as F

        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if self.skip_mask:  # right-padded rows: the causal kernel, the same scores
            inputs = causal_mask.without_redundant_mask(inputs)
        if self.split is not None and not self.checked:
            self.split = _verified_split(self.model, self.split, inputs)
            self.checked = True
        rows, cols, targets = rows.to(self.device), cols.to(self.device), targets.to(self.device)
        if self.split is not None:
            decoder, head = self.split
            hidden = decoder(**inputs, use_cache=False).last_hidden_state

            def picked(sl):
                return head(hidden[rows[sl], cols[sl]]).float()

            width = head.weight.shape[0]
        else:
            logits = self.model(**inputs, use_cache=False).logits

            def picked(sl):
                return logits[rows[sl], cols[sl]].float()

            width = logits.shape[-1]
        chunk = max(1, _LOGIT_CHUNK_ELEMENTS // width)
        out = torch.empty(len(rows), dtype=torch.float64)
        hits = 0
        for c in range(0, len(rows), chunk):
            sl = slice(c, c + chunk)
            z = picked(sl)
            out[sl] = F.cross_entropy(z, targets[sl], reduction="none").cpu().double()  # MPS has no float64
            hits += int((z.argmax(-1) == targets[sl]).sum())
        return out, hits


def _input_device(model):
    device = getattr(model, "device", None)
    return device if device is not None else next(model.parameters()).device


def _decoder_and_head(model):
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError, ValueError):
        return None
    if decoder is None or decoder is model or getattr(head, "weight", None) is None:
        return None
    return decoder, head


def _verified_split(model, split, inputs: dict):
    """The split path only if it reproduces the model's logits on one row (a model with a
    logit scale, soft-capping or a bias outside the head falls back to its own logits)."""
    import torch

    one = {k: v[:1, :16] for k, v in inputs.items()}
    decoder, head = split
    try:
        mine = head(decoder(**one, use_cache=False).last_hidden_state).float()
    except (TypeError, AttributeError):
        return None
    theirs = model(**one, use_cache=False).logits.float()
    if mine.shape != theirs.shape:
        return None
    same_nonfinite = torch.equal(torch.isfinite(mine), torch.isfinite(theirs))
    finite = torch.isfinite(theirs)
    scale = 1 + float(theirs[finite].abs().max()) if finite.any() else 1.0
    if not same_nonfinite or not torch.allclose(mine[finite], theirs[finite], rtol=1e-4, atol=1e-4 * scale):
        return None
    return split


def loss_flag(loss: float, nonfinite_tokens: int, tokens: int) -> str | None:
    """Why a loss / perplexity is not a usable number, or None when it is."""
    if nonfinite_tokens or not math.isfinite(loss):
        return f"diverged: non-finite loss on {nonfinite_tokens} of {tokens} tokens"
    if math.isinf(safe_exp(loss)):
        return f"overflow: loss {loss:.6g} > 709, exp(loss) exceeds the float range"
    return None


def summarize(
    *,
    nll_sum: float,
    tokens: int,
    correct: int,
    nonfinite_tokens: int,
    n_bytes: int,
    n_words: int,
    text_nll: list[float] | None = None,
) -> PerplexityResult:
    """Turn the totals into the reported numbers; name the cause of any non-finite value."""
    if tokens <= 0:
        raise ValueError("no tokens were scored")
    loss = nll_sum / tokens  # inf / nan propagate: never replaced by a finite stand-in
    flag = loss_flag(loss, nonfinite_tokens, tokens)
    flags = [flag] if flag else []
    perplexity = safe_exp(loss)
    word_loss = nll_sum / n_words
    word_perplexity = safe_exp(word_loss)
    if not flags and math.isinf(word_perplexity):
        flags.append(f"overflow: loss per word {word_loss:.6g} > 709, word perplexity exceeds the float range")
    return PerplexityResult(
        loss=loss,
        perplexity=perplexity,
        bits_per_byte=nll_sum / n_bytes / math.log(2),
        word_perplexity=word_perplexity,
        tokens=tokens,
        bytes=n_bytes,
        words=n_words,
        token_accuracy=correct / tokens,
        flag="; ".join(flags) or None,
        nll_sum=nll_sum,
        text_nll=text_nll,
    )


# --- command line -------------------------------------------------------------------------

DTYPES = ("float32", "bfloat16", "float16")


def load_model_and_tokenizer(path: str, dtype: str = "float32", device: str = "auto"):
    """A causal LM (full model or PEFT adapter directory) and its tokenizer, ready for eval."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = getattr(torch, dtype)
    local = Path(path)
    try:
        if (local / "adapter_config.json").is_file():
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as e:
        where = "directory" if local.exists() else "path (not found locally)"
        raise ValueError(f"--model {path}: could not load a causal LM and tokenizer from this {where}: {e}") from e
    return model.to(device).eval(), tokenizer


def _model_max_positions(model) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m trainyard.evaluation.perplexity",
        description="Exact token-weighted perplexity, bits per byte and word perplexity of a causal LM on a text file.",
    )
    p.add_argument("--model", required=True, help="model or PEFT adapter directory (or Hub id)")
    p.add_argument("--data", required=True, help=".jsonl/.json rows with a text field, or .txt (one text per non-blank line)")
    p.add_argument("--text-field", default="text", help="field holding the text in .jsonl/.json rows (default: text)")
    p.add_argument("--max-length", type=int, default=1024, help="tokens per model input (default: 1024, capped at the model's positions)")
    p.add_argument("--mode", choices=MODES, default="rolling", help="rolling: per-document, lm-eval semantics; block: training-style blocks")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="model weights dtype (default float32: exact)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from trainyard.errors import DataFormatError
    from trainyard.evaluation.texts import load_texts

    try:
        texts = load_texts(args.data, args.text_field)
        if not texts:
            raise ValueError(f"{args.data}: no non-blank text to evaluate")
        model, tokenizer = load_model_and_tokenizer(args.model, args.dtype, args.device)
        max_length = args.max_length
        positions = _model_max_positions(model)
        if positions and max_length > positions:
            print(f"note: --max-length {max_length} > the model's {positions} positions; using {positions}", file=sys.stderr)
            max_length = positions
        result = evaluate_texts(model, tokenizer, texts, mode=args.mode, max_length=max_length, batch_size=args.batch_size)
    except (FileNotFoundError, DataFormatError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    report = {
        **result.to_dict(),
        "model": args.model,
        "data": args.data,
        "texts": len(texts),
        "mode": args.mode,
        "max_length": max_length,
    }
    if args.json:
        print(json.dumps(json_safe(report), indent=2))
    else:
        print(_summary(report))
    return 0


def _summary(r: dict[str, Any]) -> str:
    lines = [
        f"{r['data']}: {r['texts']} texts, {r['tokens']} tokens scored ({r['mode']}, max_length {r['max_length']})",
        f"  loss            {r['loss']:.6f} nats/token",
        f"  perplexity      {r['perplexity']:.4f}",
        f"  bits per byte   {r['bits_per_byte']:.6f}",
        f"  word perplexity {r['word_perplexity']:.4f}  ({r['words']} words, {r['bytes']} bytes)",
        f"  token accuracy  {r['token_accuracy']:.4f}",
    ]
    if r["flag"]:
        lines.append(f"  FLAG: {r['flag']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
