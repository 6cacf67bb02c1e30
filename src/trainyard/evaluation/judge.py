"""MT-Bench-style single-answer grading: the model answers 2-turn questions, a judge rates 1-10.

The judge is pluggable: :class:`OpenAIJudge` talks to any OpenAI-compatible endpoint
(``POST {base_url}/chat/completions``, key read from an environment variable and never
logged); :class:`RecordedJudge` replays recorded replies (tests, re-scoring). A reply without
a ``[[rating]]`` in 1..10 is recorded as missing, not as 0.

Metrics: ``judge/turn1``, ``judge/turn2``, ``judge/overall`` (mean of all valid ratings, as
MT-Bench's single-answer average), ``judge/missing``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from trainyard.evaluation.generate import Message, generate_chat, strip_thinking

log = logging.getLogger(__name__)

MT_BENCH_FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "eval" / "mt_bench.jsonl"


class JudgeError(RuntimeError):
    """The judge could not be asked (endpoint error, missing key, missing recording)."""


# ---------------------------------------------------------------- questions


@dataclass(frozen=True)
class Question:
    question_id: str
    category: str
    turns: tuple[str, str]
    reference: tuple[str, ...] | None = None  # reference answers (math / reasoning / coding)


def _question(row: Mapping[str, Any], where: str) -> Question:
    qid = row.get("question_id", row.get("prompt_id"))
    turns = row.get("turns", row.get("prompt"))
    if qid is None or not isinstance(turns, list):
        raise ValueError(f"{where}: expected MT-Bench fields question_id and turns (or prompt_id and prompt)")
    if len(turns) != 2 or not all(isinstance(t, str) and t.strip() for t in turns):
        raise ValueError(f"{where}: question {qid!r} must have exactly 2 non-empty turns, got {len(turns)}")
    reference = row.get("reference") or None
    if reference is not None:
        reference = tuple(str(r) for r in reference if r) or None
    return Question(str(qid), str(row.get("category", "")), (turns[0], turns[1]), reference)


def load_questions(source: str | Path = MT_BENCH_FIXTURE, *, split: str = "train",
                   limit: int | None = None) -> list[Question]:
    """Questions from a local .jsonl / .json file or a Hub dataset id.

    Accepts the MT-Bench question.jsonl fields (question_id, category, turns, reference) and
    the HuggingFaceH4/mt_bench_prompts ones (prompt_id, category, prompt, reference).
    """
    path = Path(source)
    if path.suffix in (".jsonl", ".json") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: MT-Bench question file not found")
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            rows = [(f"{path}[{i}]", r) for i, r in enumerate(json.loads(text))]
        else:
            rows = [(f"{path}:{n}", json.loads(line)) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    else:
        from datasets import load_dataset

        dataset = load_dataset(str(source), split=split)
        rows = [(f"{source}[{i}]", r) for i, r in enumerate(dataset)]
    questions = [_question(row, where) for where, row in rows]
    return questions[:limit] if limit is not None else questions


# ---------------------------------------------------------------- judge prompts

JUDGE_SYSTEM = "You are a careful, impartial evaluator of AI assistant answers."

_RULES = (
    "Please act as an impartial judge and evaluate the quality of the answer an AI assistant "
    "gave{focus}. Weigh helpfulness, relevance, accuracy, depth, creativity and level of "
    "detail.{reference_rule} Begin with a short explanation and be as objective as possible. "
    "After the explanation, rate the answer on a scale of 1 to 10, strictly in this format: "
    '"[[rating]]", for example: "Rating: [[5]]".'
)
_REFERENCE_RULE = " Compare the answer with the reference answer and identify and correct any mistakes."


def judge_messages(question: Question, answers: Sequence[str], turn: int) -> list[Message]:
    """The judge conversation for ``turn`` (1 or 2): the second shows the whole dialogue."""
    ref = question.reference
    use_ref = ref is not None and len(ref) >= turn
    if turn == 1:
        rules = _RULES.format(focus=" to the user question shown below",
                              reference_rule=_REFERENCE_RULE if use_ref else "")
        body = f"[Question]\n{question.turns[0]}\n\n"
        if use_ref:
            body += f"[Reference Answer]\n{ref[0]}\n[End of Reference Answer]\n\n"
        body += f"[Assistant's Answer]\n{answers[0]}\n[End of Assistant's Answer]"
    else:
        rules = _RULES.format(
            focus=" in the conversation below; rate only its answer to the SECOND user question",
            reference_rule=_REFERENCE_RULE if use_ref else "",
        )
        body = (
            "[Conversation]\n"
            f"### User:\n{question.turns[0]}\n\n### Assistant:\n{answers[0]}\n\n"
            f"### User:\n{question.turns[1]}\n\n### Assistant:\n{answers[1]}\n"
            "[End of Conversation]"
        )
        if use_ref:
            body += f"\n\n[Reference Answer to the second question]\n{ref[1]}\n[End of Reference Answer]"
    return [{"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": f"[Instruction]\n{rules}\n\n{body}"}]


_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")


def parse_rating(reply: str) -> float | None:
    """The last ``[[x]]`` with 1 <= x <= 10, else None (recorded as missing, never as 0)."""
    found = _RATING.findall(reply or "")
    if not found:
        return None
    value = float(found[-1])  # the verdict closes the reply; earlier ones may quote the format
    return value if 1.0 <= value <= 10.0 else None


# ---------------------------------------------------------------- judges


class Judge(Protocol):
    def grade(self, messages: list[Message], key: str) -> str:
        """The judge's reply to ``messages``; ``key`` ('<question_id>/turn<n>') names the request."""
        ...


@dataclass
class OpenAIJudge:
    """Any OpenAI-compatible chat completions endpoint (OpenAI, vLLM, TGI, Inference Providers)."""

    base_url: str
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"  # None: endpoint without auth (a local vLLM)
    temperature: float = 0.0
    max_tokens: int = 1024
    timeout_s: float = 120.0
    max_retries: int = 3

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise JudgeError(f"judge API key missing: set the environment variable {self.api_key_env} "
                                 "(or set api_key_env to null for an endpoint without auth)")
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def grade(self, messages: list[Message], key: str) -> str:
        import httpx

        url = self.base_url.rstrip("/") + "/chat/completions"
        body = {"model": self.model, "messages": messages,
                "temperature": self.temperature, "max_tokens": self.max_tokens}
        headers = self._headers()
        for attempt in range(self.max_retries + 1):
            log.debug("judge %s: POST %s model=%s (attempt %d)", key, url, self.model, attempt + 1)
            try:
                response = httpx.post(url, json=body, headers=headers, timeout=self.timeout_s)
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    try:
                        return response.json()["choices"][0]["message"]["content"] or ""
                    except (ValueError, KeyError, IndexError, TypeError) as exc:
                        raise JudgeError(f"judge {url}: unexpected response for {key}: {response.text[:200]!r}") from exc
                error = f"HTTP {response.status_code}: {response.text[:200]!r}"
                if response.status_code not in (408, 409, 429) and response.status_code < 500:
                    raise JudgeError(f"judge {url} refused the request for {key}: {error}")
            if attempt < self.max_retries:
                time.sleep(2**attempt)  # rate limits and restarts pass
        raise JudgeError(f"judge {url}: no answer for {key} after {self.max_retries + 1} tries ({error})")


@dataclass
class RecordedJudge:
    """Replays recorded judge replies: a dict or a JSON file {"<question_id>/turn<n>": reply}."""

    source: str | Path | Mapping[str, str]
    calls: list[tuple[str, list[Message]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.source, Mapping):
            self._replies, self._where = dict(self.source), "<recorded replies>"
        else:
            self._where = str(self.source)
            self._replies = json.loads(Path(self.source).read_text(encoding="utf-8"))

    def grade(self, messages: list[Message], key: str) -> str:
        self.calls.append((key, messages))
        if key not in self._replies:
            raise JudgeError(f"{self._where}: no recorded judge reply for {key!r}")
        return self._replies[key]


def judge_from_config(config: Mapping[str, Any]) -> Judge:
    """{"type": "openai", "base_url", "model", "api_key_env"?} or {"type": "recorded", "path"}."""
    kind = config.get("type", "openai")
    options = {k: v for k, v in config.items() if k != "type"}
    if kind == "openai":
        missing = [k for k in ("base_url", "model") if k not in options]
        if missing:
            raise ValueError(f"judge config: missing {missing} for an OpenAI-compatible judge")
        return OpenAIJudge(**options)
    if kind == "recorded":
        return RecordedJudge(options["path"])
    raise ValueError(f"judge config: type {kind!r} is not 'openai' or 'recorded'")


# ---------------------------------------------------------------- scoring


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan  # nan + 'missing' says why


def grade_answers(questions: Sequence[Question], answers: Sequence[Sequence[str]], judge: Judge) -> dict[str, Any]:
    """Rate given answers (answers[i] = [turn-1 answer, turn-2 answer] to questions[i])."""
    ratings: list[dict[str, Any]] = []
    for question, pair in zip(questions, answers, strict=True):
        for turn in (1, 2):
            key = f"{question.question_id}/turn{turn}"
            reply = judge.grade(judge_messages(question, pair, turn), key)
            ratings.append({"question_id": question.question_id, "category": question.category,
                            "turn": turn, "rating": parse_rating(reply), "judgment": reply})
    by_turn = {t: [r["rating"] for r in ratings if r["turn"] == t and r["rating"] is not None] for t in (1, 2)}
    return {
        "turn1": _mean(by_turn[1]),
        "turn2": _mean(by_turn[2]),
        "overall": _mean(by_turn[1] + by_turn[2]),
        "missing": sum(r["rating"] is None for r in ratings),
        "count": len(questions),
        "ratings": ratings,
        "answers": [{"question_id": q.question_id, "turns": list(a)} for q, a in zip(questions, answers, strict=True)],
    }


def evaluate_mt_bench(model: Any, tokenizer: Any, questions: Sequence[Question], judge: Judge, *,
                      max_new_tokens: int = 512, batch_size: int = 8, limit: int | None = None) -> dict[str, Any]:
    """The model answers both turns (greedy; turn 2 sees its own turn-1 answer), then the judge rates."""
    questions = list(questions)[:limit] if limit is not None else list(questions)
    first = [[{"role": "user", "content": q.turns[0]}] for q in questions]
    answers1 = [strip_thinking(a) for a in generate_chat(model, tokenizer, first, max_new_tokens=max_new_tokens,
                                                        batch_size=batch_size)]
    second = [conv + [{"role": "assistant", "content": a}, {"role": "user", "content": q.turns[1]}]
              for conv, a, q in zip(first, answers1, questions, strict=True)]
    answers2 = [strip_thinking(a) for a in generate_chat(model, tokenizer, second, max_new_tokens=max_new_tokens,
                                                        batch_size=batch_size)]
    return grade_answers(questions, list(zip(answers1, answers2, strict=True)), judge)


def judge_metrics(result: Mapping[str, Any], prefix: str = "judge") -> dict[str, float]:
    # questions: the n a report shows next to the scores
    return {f"{prefix}/turn1": float(result["turn1"]), f"{prefix}/turn2": float(result["turn2"]),
            f"{prefix}/overall": float(result["overall"]), f"{prefix}/missing": float(result["missing"]),
            f"{prefix}/questions": float(result["count"])}
