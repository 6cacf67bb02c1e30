"""Evaluate a chat model on TAT-QA: prompt, greedy-decode, parse answer + scale, score officially."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from trainyard.evaluation.generate import generate_chat
from trainyard.evaluation.tatqa_metric import evaluate
from trainyard.evaluation.tatqa_prompt import build_prompt, parse_output


def evaluate_tatqa_generation(
    model: Any,
    tokenizer: Any,
    contexts: Iterable[Mapping[str, Any]],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    limit: int | None = None,
) -> dict[str, Any]:
    """Scorer's dict for the first ``limit`` questions, plus ``parse_failures`` and ``predictions``.

    A reply without an ``Answer:`` line is a parse failure and is scored as a missing
    prediction (0), as the official script scores a question with no prediction.
    """
    scored: list[dict[str, Any]] = []  # contexts cut down to the questions asked
    prompts: list[tuple[str, str]] = []
    for context in contexts:
        questions = []
        for question in context["questions"]:
            if limit is not None and len(prompts) >= limit:
                break
            questions.append(question)
            prompts.append((str(question["uid"]), build_prompt(context, question)))
        if questions:
            scored.append({**context, "questions": questions})
        if limit is not None and len(prompts) >= limit:
            break

    replies = generate_chat(
        model,
        tokenizer,
        [[{"role": "user", "content": text}] for _, text in prompts],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    predictions: dict[str, list[Any]] = {}
    failures = 0
    for (uid, _), reply in zip(prompts, replies, strict=True):
        parsed = parse_output(reply)
        if parsed is None:
            failures += 1
        else:
            predictions[uid] = list(parsed)
    result = evaluate(scored, predictions)
    result["parse_failures"] = failures
    result["predictions"] = predictions
    result["replies"] = dict(zip((uid for uid, _ in prompts), replies, strict=True))
    return result


def tatqa_metrics(result: Mapping[str, Any], prefix: str = "tatqa") -> dict[str, float]:
    """Flat metrics: '<prefix>/exact_match', '<prefix>/<answer_type or answer_from>/f1', ...

    Counts are named 'questions' ('<prefix>/count/questions' is the number of count questions).
    """
    flat = {
        f"{prefix}/exact_match": float(result["exact_match"]),
        f"{prefix}/f1": float(result["f1"]),
        f"{prefix}/scale_accuracy": float(result["scale_accuracy"]),
        f"{prefix}/questions": float(result["count"]),
        f"{prefix}/missing": float(result["missing"]),
    }
    if "parse_failures" in result:
        flat[f"{prefix}/parse_failures"] = float(result["parse_failures"])
    for group in ("by_answer_type", "by_answer_from"):
        for name, summary in result.get(group, {}).items():
            flat[f"{prefix}/{name}/exact_match"] = float(summary["exact_match"])
            flat[f"{prefix}/{name}/f1"] = float(summary["f1"])
            flat[f"{prefix}/{name}/questions"] = float(summary["count"])
    return flat
