"""Generic formats: plain text, chat messages, prompt/completion, Alpaca instructions."""

from __future__ import annotations

from typing import Any

from trainyard.data.formats import Format, SkipRow, register


def _text(row: dict[str, Any], text_field: str) -> dict[str, Any] | None:
    text = row.get(text_field)
    if not isinstance(text, str):
        raise SkipRow(f"{text_field} is not a string")
    return {"text": text} if text.strip() else None


def _messages(row: dict[str, Any], _: str) -> dict[str, Any] | None:
    msgs = row.get("messages")
    if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
        raise SkipRow("messages is not a list of {role, content}")
    if msgs[-1]["role"] != "assistant":
        raise SkipRow("last message is not from the assistant")
    return {"prompt": msgs[:-1], "completion": [msgs[-1]]}


def _prompt_completion(row: dict[str, Any], _: str) -> dict[str, Any] | None:
    prompt, completion = row.get("prompt"), row.get("completion")
    if not isinstance(prompt, str) or not isinstance(completion, str):
        raise SkipRow("prompt/completion are not strings")
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "completion": [{"role": "assistant", "content": completion}],
    }


def alpaca_prompt(instruction: str, inp: str | None) -> str:
    return f"{instruction.strip()}\n\n{inp.strip()}" if inp and inp.strip() else instruction.strip()


def _alpaca(row: dict[str, Any], _: str) -> dict[str, Any] | None:
    instruction, output = row.get("instruction"), row.get("output")
    if not isinstance(instruction, str) or not isinstance(output, str):
        raise SkipRow("instruction/output are not strings")
    return {
        "prompt": [{"role": "user", "content": alpaca_prompt(instruction, row.get("input"))}],
        "completion": [{"role": "assistant", "content": output}],
    }


register(Format("text", ("{text_field}",), "text", _text, "wikitext", "one text per row (text_field)"))
register(Format("messages", ("messages",), "prompt_completion", _messages, "chat_messages", "OpenAI-style chat; loss on the last assistant turn"))
register(Format("prompt_completion", ("prompt", "completion"), "prompt_completion", _prompt_completion, "chat_messages", "plain prompt/completion strings"))
register(Format("alpaca", ("instruction", "output"), "prompt_completion", _alpaca, "finance_alpaca", "instruction / input / output"))
