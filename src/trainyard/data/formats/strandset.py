"""Fortytwo-Network/Strandset-Rust-v1 rows -> chat prompt/completion.

Columns: crate_name, input_data, output_data, task_category, test. ``input_data`` and
``output_data`` are JSON-encoded objects whose keys depend on the category (e.g.
code_generation: title/description/code_context -> code; bug_detection: buggy_code ->
fixed_code/bug_description; code_completion: prefix/suffix -> completion). Rather than
hard-code ~15 key sets, every field is rendered as a labelled section, code-like fields in
```rust fences, so unseen categories and keys still format sensibly.
"""

from __future__ import annotations

import json
from typing import Any

from trainyard.data.formats import Format, SkipRow, register

TASK_INSTRUCTIONS = {
    "code_generation": "Write the Rust code described below.",
    "code_completion": "Complete the Rust code between the prefix and the suffix.",
    "bug_detection": "Find the bug in this Rust code, explain it, and give the fixed code.",
    "code_review": "Review this Rust code and suggest an improved version.",
    "code_refactoring": "Refactor this Rust code to be more idiomatic.",
    "code_optimization": "Optimize this Rust code.",
    "code_explanation": "Explain what this Rust code does.",
    "code_summarization": "Summarize what this Rust code does.",
    "docstring_generation": "Write a Rust doc comment for this code.",
    "comment_generation": "Add explanatory comments to this Rust code.",
    "function_naming": "Suggest a descriptive name for this Rust function.",
    "variable_naming": "Suggest a descriptive name for the variable in this Rust code.",
    "test_generation": "Write unit tests for this Rust code.",
    "api_usage_prediction": "Predict the next API call in this Rust code.",
    "code_search": "Find the Rust code that matches this query.",
}
CODE_HINTS = ("code", "prefix", "suffix", "completion", "snippet", "context", "test", "signature", "before", "after")


def parse_json_field(raw: Any, column: str) -> dict[str, Any]:
    """Parse a JSON-encoded column; lenient about raw control characters inside strings."""
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str):
        raise SkipRow(f"{column} is not a JSON string")
    for strict in (True, False):
        try:
            value = json.loads(raw, strict=strict)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
        if isinstance(value, str):
            return {column.removesuffix("_data"): value}
        raise SkipRow(f"{column} is JSON but not an object")
    raise SkipRow(f"{column} is malformed JSON")


def render_fields(fields: dict[str, Any]) -> str:
    parts = []
    for key, value in fields.items():
        if value is None or value == "":
            continue
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        label = key.replace("_", " ").capitalize()
        if any(h in key.lower() for h in CODE_HINTS) and "\n" in text or key.lower().endswith("code"):
            parts.append(f"{label}:\n```rust\n{text.strip()}\n```")
        else:
            parts.append(f"{label}: {text.strip()}")
    return "\n\n".join(parts)


def convert(row: dict[str, Any], _: str) -> dict[str, Any] | None:
    category = str(row.get("task_category") or "").strip()
    inputs = parse_json_field(row.get("input_data"), "input_data")
    outputs = parse_json_field(row.get("output_data"), "output_data")
    prompt_body, answer = render_fields(inputs), render_fields(outputs)
    if not prompt_body or not answer:
        raise SkipRow("empty input or output")
    instruction = TASK_INSTRUCTIONS.get(category, f"Task ({category or 'unknown'}): solve it in Rust.")
    crate = row.get("crate_name")
    header = f"{instruction}\nCrate: {crate}" if crate else instruction
    return {
        "prompt": [{"role": "user", "content": f"{header}\n\n{prompt_body}"}],
        "completion": [{"role": "assistant", "content": answer}],
    }


register(
    Format(
        "strandset_rust",
        ("crate_name", "input_data", "output_data", "task_category"),
        "prompt_completion",
        convert,
        "strandset_rust",
        "Fortytwo-Network/Strandset-Rust-v1",
    )
)
