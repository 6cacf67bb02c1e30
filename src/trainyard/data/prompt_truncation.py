"""``dpo.max_prompt_length``: cut chat prompts to a token budget from the left.

TRL 1.16's DPOConfig dropped ``max_prompt_length``; we apply it to the data before the trainer
tokenizes. The budget counts the prompt exactly as DPOTrainer does (chat template with the
generation prompt). Tokens are removed from the *start* of the last message's content, so
the chat template stays intact and the end of the prompt (for TAT-QA: the question and the
answer-format instruction) is kept. Earlier messages (a system prompt) are never cut; a prompt
whose other parts alone exceed the budget cannot be fitted and is reported as ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Messages = list[dict[str, str]]


def prompt_token_count(messages: Messages, tokenizer: Any) -> int:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    return len(ids)


def truncate_prompt(messages: Messages, tokenizer: Any, max_prompt_length: int) -> tuple[Messages | None, int]:
    """-> (messages that fit, tokens removed). (None, 0) when even an empty last message is too long."""
    length = prompt_token_count(messages, tokenizer)
    if length <= max_prompt_length:
        return messages, 0
    content = messages[-1]["content"]
    ids = tokenizer(content, add_special_tokens=False)["input_ids"]
    keep = len(ids) - (length - max_prompt_length)
    # Re-tokenizing decoded text can merge differently at the cut: re-measure and shrink.
    for _ in range(8):
        if keep <= 0:
            return None, 0
        candidate = [*messages[:-1], {**messages[-1], "content": tokenizer.decode(ids[-keep:])}]
        new_length = prompt_token_count(candidate, tokenizer)
        if new_length <= max_prompt_length:
            return candidate, length - new_length
        keep -= new_length - max_prompt_length
    return None, 0


@dataclass
class TruncationStats:
    examples: int = 0
    truncated: int = 0
    tokens_removed: int = 0
    dropped: int = 0

    def as_metrics(self, prefix: str = "data/prompt") -> dict[str, float]:
        return {
            f"{prefix}/truncated": float(self.truncated),
            f"{prefix}/truncated_fraction": self.truncated / self.examples if self.examples else 0.0,
            f"{prefix}/tokens_removed": float(self.tokens_removed),
            f"{prefix}/dropped": float(self.dropped),
        }


def truncate_prompts(rows: list[dict[str, Any]], tokenizer: Any, max_prompt_length: int) -> tuple[list[dict[str, Any]], TruncationStats]:
    """Apply :func:`truncate_prompt` to every row's ``prompt``; rows that cannot fit are dropped."""
    stats = TruncationStats()
    out = []
    for row in rows:
        stats.examples += 1
        prompt, removed = truncate_prompt(row["prompt"], tokenizer, max_prompt_length)
        if prompt is None:
            stats.dropped += 1
            continue
        if removed:
            stats.truncated += 1
            stats.tokens_removed += removed
        out.append({**row, "prompt": prompt})
    return out, stats
