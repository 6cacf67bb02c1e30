"""Cut token sequences into scoring windows: document-level "rolling" and training-style "block".

A window is one model input. `tokens` holds the input plus the token after it, so input
position i predicts tokens[i + 1]; only the last `n_scored` predictions count. Every
target token of a document is scored by exactly one window.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    tokens: list[int]  # input ids followed by the last target; model input is tokens[:-1]
    n_scored: int  # how many of the final predictions are scored
    doc: int  # index of the text it came from (-1 for blocks that span texts)

    @property
    def input_len(self) -> int:
        return len(self.tokens) - 1


def rolling_windows(ids: list[int], prefix_id: int, max_length: int, doc: int = 0) -> list[Window]:
    """lm-evaluation-harness `loglikelihood_rolling` semantics (context_len=1, disjoint windows).

    The document is scored in consecutive chunks of `max_length` targets. The first token is
    predicted from `prefix_id` (BOS, or EOS when the tokenizer has none). Each later window's
    input is the `max_length` tokens ending just before its last target, so a full chunk
    sees one token of context and the final, shorter chunk sees as much earlier text as fits
    (as `make_disjoint_window(get_rolling_token_windows(...))` yields).
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    seq = [prefix_id, *ids]  # seq[j] predicts ids[j] == seq[j + 1]
    windows = []
    start = 0
    while start < len(ids):
        end = min(start + max_length, len(ids))  # score ids[start:end]
        first_input = max(0, end - max_length)  # input = seq[first_input:end]
        windows.append(Window(seq[first_input : end + 1], end - start, doc))
        start = end
    return windows


def block_windows(docs: list[list[int]], eos_id: int, max_length: int) -> list[Window]:
    """Training-style grouping: texts joined with EOS after each, cut into `max_length` blocks.

    As in causal-LM training (labels = input ids), the first token of each block has no
    prediction; every other token, the EOS separators included, is a target. Unlike
    `group_texts` in training, the last partial block is kept, so no text is dropped.
    """
    if max_length < 2:
        raise ValueError(f"block mode needs max_length >= 2, got {max_length}")
    stream = [t for ids in docs for t in (*ids, eos_id)]
    windows = []
    for i in range(0, len(stream), max_length):
        block = stream[i : i + max_length]
        if len(block) >= 2:
            # input block[:-1] predicts block[1:]: the trainer's shifted labels for this block
            windows.append(Window(block, len(block) - 1, -1))
    return windows
