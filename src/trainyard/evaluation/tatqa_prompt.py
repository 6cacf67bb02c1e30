"""The TAT-QA prompt (table + paragraphs + question) and the parser for the model's reply.

The reply format asked for::

    Answer: <value>            (several spans separated by " | ")
    Scale: <none|thousand|million|billion|percent>
    Derivation: <calculation>  (optional; DPO 'chosen' answers carry the gold one; not scored)

``build_prompt`` is public API: the DPO pair builder imports it, so training and evaluation
see the same user message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from trainyard.evaluation.generate import strip_thinking

SPAN_SEPARATOR = " | "

INSTRUCTION = (
    "Answer the question using the table and the paragraphs above.\n"
    "Reply in this format:\n"
    "Answer: <the answer; write numbers without units or scale words; "
    "separate several answers with \" | \">\n"
    "Scale: <one of: none, thousand, million, billion, percent>\n"
    "Derivation: <the calculation or the counted items, if any>"
)

# words a model may use for each scale; "none" means no scale
_SCALE_WORDS = {
    "": ("none", "no scale", "n/a", "na", "null", "-", "", "units", "unit", "one", "ones"),
    "thousand": ("thousand", "thousands", "k", "000s", "'000"),
    "million": ("million", "millions", "m", "mn", "mm"),
    "billion": ("billion", "billions", "b", "bn"),
    "percent": ("percent", "percentage", "percentages", "%", "pct"),
}
_SCALE_LOOKUP = {word: scale for scale, words in _SCALE_WORDS.items() for word in words}
_ANSWER_LINE = re.compile(r"^\W*(?:final\s+)?answer\W*?:\s*(.*)$", re.IGNORECASE)
_SCALE_LINE = re.compile(r"^\W*scale\W*?:\s*(.*)$", re.IGNORECASE)


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ").strip()


def table_to_markdown(rows: list[list[Any]]) -> str:
    """The TAT-QA table (a list of rows, the first one the header) as a markdown table."""
    if not rows:
        return ""
    width = max(len(row) for row in rows)
    padded = [[_cell(c) for c in row] + [""] * (width - len(row)) for row in rows]
    lines = ["| " + " | ".join(padded[0]) + " |", "|" + " --- |" * width]
    lines += ["| " + " | ".join(row) + " |" for row in padded[1:]]
    return "\n".join(lines)


def build_prompt(context: Mapping[str, Any], question: Mapping[str, Any]) -> str:
    """The user message for one TAT-QA question (dataset_raw context + one of its questions)."""
    parts = []
    table = (context.get("table") or {}).get("table") or []
    if table:
        parts.append("Table:\n" + table_to_markdown(table))
    paragraphs = sorted(context.get("paragraphs") or [], key=lambda p: p.get("order", 0))
    if paragraphs:
        parts.append("Paragraphs:\n" + "\n".join(p["text"].strip() for p in paragraphs))
    parts.append(f"Question: {question['question'].strip()}")
    parts.append(INSTRUCTION)
    return "\n\n".join(parts)


def format_answer(answer: Any, scale: str) -> str:
    """The reply in the format the prompt asks for (used for DPO 'chosen' completions)."""
    value = SPAN_SEPARATOR.join(str(a) for a in answer) if isinstance(answer, list) else str(answer)
    return f"Answer: {value}\nScale: {scale or 'none'}"


def parse_scale(text: str) -> str:
    """'Millions.' -> 'million'; unknown words -> '' (no scale)."""
    word = text.strip().strip(".`*\"'").strip().lower()
    if word in _SCALE_LOOKUP:
        return _SCALE_LOOKUP[word]
    for scale in ("thousand", "million", "billion", "percent"):
        if scale in word:
            return scale
    return ""


def parse_output(text: str) -> tuple[str | list[str], str] | None:
    """(answer, scale) from a reply, or None when it has no 'Answer:' line.

    Lenient: any case, markdown bullets/bold around the keys, a thinking block, both keys on
    one line ("Answer: 5 Scale: million"), a missing Scale line (read as no scale).
    """
    text = strip_thinking(text)
    answer: str | None = None
    scale = ""
    for line in text.splitlines():
        line = line.strip()
        if answer is None:
            m = _ANSWER_LINE.match(line)
            if m:
                value = m.group(1)
                inline = re.search(r"\bscale\W*?:", value, re.IGNORECASE)
                if inline:
                    scale = parse_scale(value[inline.end():])
                    value = value[: inline.start()]
                answer = value.strip().strip("*`").strip()
                continue
        m = _SCALE_LINE.match(line)
        if m and answer is not None:
            scale = parse_scale(m.group(1))
            break
    if not answer:
        return None
    spans = [s.strip() for s in answer.split("|") if s.strip()]
    return (spans if len(spans) > 1 else spans[0]), scale
