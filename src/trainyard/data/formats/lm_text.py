"""Row formats rendered to plain text, for causal-LM training and perplexity evaluation.

A base model trained on WikiText has no chat template, so instruction / QA / sentiment rows
are written out as one text each, in a fixed readable layout. Perplexity is then measured
over the whole rendered example (prompt and answer), the same way for every model.
"""

from __future__ import annotations

from typing import Any

from trainyard.data.formats import Format, SkipRow, register

# zeroshot/twitter-financial-news-sentiment's integer labels.
TWITTER_LABELS = {0: "Bearish", 1: "Bullish", 2: "Neutral"}


def _str(row: dict[str, Any], key: str, required: bool = True) -> str:
    value = row.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise SkipRow(f"{key} is not a string")
    return value.strip()


def render_instruction(instruction: str, inp: str, output: str) -> str:
    """Alpaca's layout without its preamble: '### Instruction:' / '### Input:' / '### Response:'."""
    parts = [f"### Instruction:\n{instruction}"]
    if inp:
        parts.append(f"### Input:\n{inp}")
    parts.append(f"### Response:\n{output}")
    return "\n\n".join(parts)


def _instruction_text(row: dict[str, Any], _: str) -> dict[str, Any] | None:
    instruction, output = _str(row, "instruction"), _str(row, "output")
    if not instruction or not output:
        return None
    return {"text": render_instruction(instruction, _str(row, "input", required=False), output)}


def _sentiment_text(row: dict[str, Any], text_field: str) -> dict[str, Any] | None:
    text, label = _str(row, text_field), row.get("label")
    if isinstance(label, bool) or label is None:
        raise SkipRow("label is missing")
    if isinstance(label, int):
        if label not in TWITTER_LABELS:
            raise SkipRow(f"label {label} is not one of {sorted(TWITTER_LABELS)}")
        label = TWITTER_LABELS[label]
    return {"text": f"{text}\nSentiment: {str(label).strip()}"} if text else None


def _qa_context_text(row: dict[str, Any], _: str) -> dict[str, Any] | None:
    question, answer = _str(row, "question"), _str(row, "answer")
    context = _str(row, "context", required=False)
    if not question or not answer:
        return None
    head = f"Context: {context}\n" if context else ""
    return {"text": f"{head}Question: {question}\nAnswer: {answer}"}


register(Format("instruction_text", ("instruction", "output"), "text", _instruction_text, "finance_alpaca",
                "instruction / input / output (Alpaca, FinGPT, fiqa_qa) rendered to one text"))
register(Format("sentiment_text", ("{text_field}", "label"), "text", _sentiment_text, "twitter_financial_news",
                "text + label -> 'text\\nSentiment: label' (twitter-financial-news ints -> Bearish/Bullish/Neutral)"))
register(Format("qa_context_text", ("question", "answer"), "text", _qa_context_text, "financial_qa_10k",
                "question / answer / context (financial-qa-10K) -> 'Context: / Question: / Answer:'"))
