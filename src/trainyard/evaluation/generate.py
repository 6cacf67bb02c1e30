"""Batched greedy chat generation, shared by the TAT-QA, judge and IFEval evaluators."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

Message = dict[str, str]

# Qwen3's template thinks by default, spending the token budget before any answer; the
# evaluations score answers. Templates without this switch ignore the variable.
DEFAULT_TEMPLATE_KWARGS: dict[str, Any] = {"enable_thinking": False}

_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)


def strip_thinking(text: str) -> str:
    """Drop a reasoning block (<think>…</think>, Qwen3 style) so only the answer is scored."""
    return _THINK.sub("", text).strip()


def generate_chat(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Sequence[Message]],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> list[str]:
    """Greedy replies to each conversation (rendered with the chat template + generation prompt).

    Prompts are sorted by length so a batch holds similar lengths, left-padded (a decoder
    continues from the last position, so padding must sit on the left), and returned in
    input order.
    """
    import torch

    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be >= 1")
    prompts = [
        tokenizer.apply_chat_template(
            list(conv),
            tokenize=False,
            add_generation_prompt=True,
            **(DEFAULT_TEMPLATE_KWARGS if chat_template_kwargs is None else chat_template_kwargs),
        )
        for conv in conversations
    ]
    # the chat template already holds any BOS token: don't add special tokens again
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = copy.deepcopy(model.generation_config)
    config.do_sample = False
    config.temperature = config.top_p = config.top_k = None  # silence sampling-only settings
    config.num_beams = 1
    config.max_new_tokens = max_new_tokens
    config.pad_token_id = pad_id

    saved_side, saved_pad = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    was_training = model.training
    model.eval()
    outputs: list[str] = [""] * len(prompts)
    try:
        device = next(model.parameters()).device
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batch = tokenizer(
                [prompts[i] for i in index], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(device)
            with torch.inference_mode():
                generated = model.generate(**batch, generation_config=config)
            new_tokens = generated[:, batch["input_ids"].shape[1] :]
            for i, text in zip(index, tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=True):
                outputs[i] = text
    finally:
        tokenizer.padding_side = saved_side
        if saved_pad is None:
            tokenizer.pad_token = None
        model.train(was_training)
    return outputs
