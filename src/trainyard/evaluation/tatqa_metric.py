"""TAT-QA exact match / F1 with the semantics of the official evaluation.

Reimplements NExTplusplus/TAT-QA ``tatqa_eval.py`` + ``tatqa_metric.py`` + ``tatqa_utils.py``
(written anew; the behaviour, quirks included, is the official one so numbers compare with
published results):

- every answer (gold and predicted) becomes ONE string: its spans sorted, numbers rewritten
  as ``%.4f`` of value x scale (``$1,234`` -> 1234, ``(134)`` -> -134, ``12%`` -> 0.12; a
  number is rounded to 2 places before the scale is applied), a non-number gets the scale
  word appended;
- a bare number predicted with no scale may also match as-is (``0.2342`` vs 23.42 percent);
- normalization: lower case, punctuation dropped from non-numbers, numbers re-printed,
  articles dropped; EM = equal normalized strings; F1 = DROP bag-of-tokens F1 with the
  optimal 1-1 alignment of bags, rounded to 2 places;
- F1 = EM for arithmetic and count; a missing (or falsy: ``0``, ``""``, ``[]``) prediction
  scores 0; scale accuracy = questions with a prediction and the gold scale / all questions.

Where the official script crashes (a prediction mixing numbers and strings in one list, a
``null`` scale with a numeric answer) we sort by ``str`` and read ``null`` as "no scale".
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

SCALES = ("", "thousand", "million", "billion", "percent")
ANSWER_TYPES = ("span", "multi-span", "arithmetic", "count")
ANSWER_FROM = ("table", "text", "table-text")

_NUM_JUNK = frozenset("'\"\\$€£¥%(),[]")  # dropped before a number is read
_FIRST_NUMBER = re.compile(r"([+-]?\d+(?:\.\d+)?)|[+-]?\.\d+")  # a leading ".5" reads as no number
_WORD_AFTER_NUMBER = re.compile(r"[\d.]+\s?[a-zA-Z]+")
_NEGATIVE = re.compile(r"\([\d.\s]+\)")  # (134); note "(1,234)" does not match, as officially
_PERCENT = re.compile(r"[\d.\s]+%")
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = frozenset(string.punctuation)


# ---------------------------------------------------------------- numbers


def scale_factor(scale: str) -> float | int:
    """'thousand' -> 1000 ... 'percent' -> 0.01; matched as a substring ('millions' too)."""
    scale = scale.lower()
    for word, factor in (("hundred", 100), ("thousand", 1000), ("million", 10**6),
                         ("billion", 10**9), ("percent", 0.01)):
        if word in scale:
            return factor
    return 1


def _strip_num_junk(text: str) -> str:
    return "".join(ch for ch in text if ch not in _NUM_JUNK)


def is_number(text: str) -> bool:
    """A number, optionally followed by a scale word: '$1,234', '(5)', '12%', '3 million'."""
    words = " ".join(_strip_num_junk(w) for w in text.split()).split()
    if not words:
        return False
    try:
        value = float(words[0])  # Python's float(): 'inf', '1e5', '1_000' count, like officially
    except ValueError:
        return False
    if math.isnan(value):
        return False
    return not (len(words) >= 2 and scale_factor(words[1]) == 1)


def to_number(text: str) -> float | int | None:
    """The value of the first number in ``text``, with its scale word, sign and percent."""
    match = _FIRST_NUMBER.search(_strip_num_junk(text))
    if match is None or match.group(1) is None:
        return None
    digits = match.group(1)
    value: float | int = float(digits) if "." in digits else int(digits)
    word = _WORD_AFTER_NUMBER.search(text)  # only the first number+word pair sets the scale
    factor = scale_factor(word.group(0)) if word else 1
    sign = -1 if _NEGATIVE.search(text.strip()) else 1
    percent = 0.01 if _PERCENT.search(text.strip()) else 1
    return round(value * factor * sign * percent, 4)


# ---------------------------------------------------------------- normalization


def _normalize_token(token: str) -> str:
    token = token.lower()
    if not is_number(token):
        token = "".join(ch for ch in token if ch not in _PUNCT)
    if is_number(token):  # may have become one once punctuation went: '#5' -> '5'
        token = str(to_number(token))
    return " ".join(_ARTICLES.sub(" ", token).split())


def normalize_answer(text: str) -> str:
    """Lower case, punctuation and articles dropped, numbers re-printed; tokens split on ' '."""
    parts = (_normalize_token(token) for token in text.split(" "))
    return " ".join(part for part in parts if part.strip()).strip()


def answer_string(answers: Sequence[Any], scale: str) -> str:
    """Official ``get_answer_str``: all spans as one string, numbers scaled and printed %.4f."""
    try:
        ordered = sorted(answers)
    except TypeError:  # mixed numbers and strings: the official script crashes here
        ordered = sorted(answers, key=str)
    pieces = []
    for answer in ordered:
        text = str(answer)
        value = to_number(text) if is_number(text) else None
        if value is None:
            if scale:
                text = f"{text} {scale}"
        elif "%" in text:  # the answer carries its own percent: the scale is not applied
            text = f"{value:.4f}"
        else:
            text = f"{round(value, 2) * scale_factor(scale):.4f}"
        pieces.append(text)
    return " ".join(pieces)


def prediction_strings(prediction: Sequence[Any], scale: str) -> list[str]:
    """The prediction as scored, plus the bare-number fallback (0.2342 vs 23.42 percent)."""
    strings = [answer_string(prediction, scale)]
    if len(prediction) == 1:
        text = str(prediction[0])
        if not scale and "%" not in text and is_number(text):
            value = to_number(text)
            if value is not None:
                strings.append(f"{value:.4f}")
    return strings


# ---------------------------------------------------------------- EM / F1


def _bags(answer: str | Sequence[str]) -> tuple[list[str], list[set[str]]]:
    spans = [answer] if isinstance(answer, str) else list(answer)
    normalized = [normalize_answer(span) for span in spans]
    return normalized, [set(span.split()) for span in normalized]


def _bag_f1(predicted: set[str], gold: set[str]) -> float:
    common = len(gold & predicted)
    precision = common / len(predicted) if predicted else 1.0
    recall = common / len(gold) if gold else 1.0
    if precision == 0.0 and recall == 0.0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def em_f1(predicted: str | Sequence[str], gold: str | Sequence[str]) -> tuple[float, float]:
    """DROP-style EM and F1: bags aligned 1-1 to maximize F1, mean F1 rounded to 2 places."""
    pred_spans, pred_bags = _bags(predicted)
    gold_spans, gold_bags = _bags(gold)
    exact = float(set(pred_spans) == set(gold_spans) and len(pred_spans) == len(gold_spans))
    scores = np.array([[_bag_f1(p, g) for p in pred_bags] for g in gold_bags], dtype=float)
    best = np.zeros(max(len(gold_bags), len(pred_bags)))
    if scores.size:
        for row, col in zip(*linear_sum_assignment(-scores), strict=True):
            best[row] = max(best[row], scores[row, col])
    # numpy rounding (x*100, round half to even), as the official np.float64 round() does
    return exact, float(np.round(np.mean(best), 2))


# ---------------------------------------------------------------- one question / a data set


def gold_answers(question: Mapping[str, Any]) -> list[Any]:
    """The gold answer as a list of spans (count answers as integers, like officially)."""
    answer, kind = question["answer"], question["answer_type"]
    if kind in ("span", "multi-span"):
        if not isinstance(answer, list):
            raise ValueError(f"question {question.get('uid')!r}: a {kind} answer must be a list, got {answer!r}")
        return answer
    if kind == "count":
        return [str(int(answer))]
    return [str(answer)]


@dataclass(frozen=True)
class QuestionScore:
    uid: str
    answer_type: str
    answer_from: str
    exact_match: float
    f1: float
    scale_correct: bool  # counted only when a (non-empty) prediction was given, as officially
    missing: bool


def score_question(question: Mapping[str, Any], prediction: Any, pred_scale: str | None) -> QuestionScore:
    """Score one gold question against ``prediction`` (None when the file has none)."""
    uid = str(question["uid"])
    kind, source = question["answer_type"], question.get("answer_from", "")
    missing = prediction is None
    gold = gold_answers(question)
    if not prediction or not gold:  # officially a falsy prediction (0, "", []) scores 0
        return QuestionScore(uid, kind, source, 0.0, 0.0, False, missing)
    scale = pred_scale or ""
    spans = prediction if isinstance(prediction, list) else [prediction]
    gold_string = answer_string(gold, question["scale"])
    exact, f1 = max(em_f1(candidate, gold_string) for candidate in prediction_strings(spans, scale))
    if kind in ("arithmetic", "count"):
        f1 = exact
    return QuestionScore(uid, kind, source, exact, f1, question["scale"] == scale, missing)


def _summary(scores: list[QuestionScore]) -> dict[str, float | int]:
    n = len(scores)
    return {
        "exact_match": sum(s.exact_match for s in scores) / n if n else 0.0,
        "f1": sum(s.f1 for s in scores) / n if n else 0.0,
        "count": n,
    }


def iter_questions(contexts: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    for context in contexts:
        yield from context["questions"]


def aggregate(scores: list[QuestionScore]) -> dict[str, Any]:
    """Overall EM / F1 / scale accuracy and the per answer_type and answer_from breakdowns."""
    n = len(scores)
    result: dict[str, Any] = {
        **_summary(scores),
        "scale_accuracy": sum(s.scale_correct for s in scores) / n if n else 0.0,
        "missing": sum(s.missing for s in scores),
    }
    for key, order in (("answer_type", ANSWER_TYPES), ("answer_from", ANSWER_FROM)):
        groups: dict[str, list[QuestionScore]] = {}
        for s in scores:
            groups.setdefault(getattr(s, key), []).append(s)
        # known names first in their usual order, anything unexpected after
        names = [x for x in order if x in groups] + sorted(set(groups) - set(order))
        result[f"by_{key}"] = {name: _summary(groups[name]) for name in names}
    return result


def evaluate(contexts: Iterable[Mapping[str, Any]], predictions: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """Official ``evaluate_json``: every gold question scored; predictions {uid: [answer, scale]}."""
    scores = []
    for question in iter_questions(contexts):
        answer, scale = predictions.get(str(question["uid"]), (None, None))
        scores.append(score_question(question, answer, scale))
    return aggregate(scores)
