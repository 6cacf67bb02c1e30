"""Preference pairs for DPO: ``preference`` (prompt/chosen/rejected columns) and
``tatqa_preference`` (raw TAT-QA, turned into pairs by :mod:`trainyard.data.tatqa_pairs`).

Rows come out in TRL's conversational preference format: ``prompt`` a list of messages ending
with the user turn, ``chosen`` / ``rejected`` one-assistant-message lists. Accepted inputs:

- explicit prompt: ``prompt`` a string or messages, ``chosen`` / ``rejected`` strings or messages;
- implicit prompt (e.g. HuggingFaceH4/ultrafeedback_binarized's chosen/rejected are whole
  conversations): the shared leading turns become the prompt, the final assistant turn the answer.
"""

from __future__ import annotations

from typing import Any

from trainyard.data.formats import Format, SkipRow, register

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")


def _messages(value: Any, role: str, column: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        if not value.strip():
            raise SkipRow(f"empty {column}")
        return [{"role": role, "content": value}]
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]
    raise SkipRow(f"{column} is neither a string nor a list of {{role, content}}")


def _split_conversation(conv: list[dict[str, str]], column: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    if conv[-1]["role"] != "assistant":
        raise SkipRow(f"{column} does not end with an assistant turn")
    return conv[:-1], conv[-1:]


def convert(row: dict[str, Any], _: str) -> dict[str, Any] | None:
    chosen = _messages(row.get("chosen"), "assistant", "chosen")
    rejected = _messages(row.get("rejected"), "assistant", "rejected")
    prompt = _messages(row["prompt"], "user", "prompt") if row.get("prompt") not in (None, "", []) else []
    # Implicit prompt: chosen/rejected hold the whole conversation, prompt turns included.
    if len(chosen) > 1 or len(rejected) > 1:
        chosen_prefix, chosen = _split_conversation(chosen, "chosen")
        rejected_prefix, rejected = _split_conversation(rejected, "rejected")
        if chosen_prefix != rejected_prefix:
            raise SkipRow("chosen and rejected conversations start differently")
        if chosen_prefix and prompt and prompt != chosen_prefix[: len(prompt)]:
            raise SkipRow("prompt differs from the conversation's opening turns")
        prompt = chosen_prefix or prompt
    if not prompt:
        raise SkipRow("no prompt")
    if prompt[-1]["role"] == "assistant":
        raise SkipRow("prompt ends with an assistant turn")
    if chosen == rejected:
        raise SkipRow("chosen equals rejected")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def _tatqa_loader(source: str, split: str) -> list[dict[str, Any]]:
    from trainyard.data.tatqa_pairs import load_tatqa_pairs

    return load_tatqa_pairs(source, split)


register(Format("preference", PREFERENCE_COLUMNS, "preference", convert, "tatqa_pairs",
                "prompt / chosen / rejected (strings or chat messages)"))
register(Format("tatqa_preference", PREFERENCE_COLUMNS, "preference", convert, "tatqa",
                "raw TAT-QA (dataset_raw JSON) -> pairs; see trainyard.data.tatqa_pairs", loader=_tatqa_loader))
