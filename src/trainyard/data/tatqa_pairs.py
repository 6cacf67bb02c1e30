"""TAT-QA (official ``dataset_raw`` JSON) -> DPO preference pairs.

Input: a list of contexts ``{"table": {"uid", "table": [[cells]]}, "paragraphs": [{"uid",
"order", "text"}], "questions": [{"uid", "question", "answer", "derivation", "answer_type",
"answer_from", "scale", ...}]}``. ``answer`` is a list of strings (span / multi-span) or a
number or string (arithmetic / count), so the file is read with ``json``, never ``datasets``.

One pair per question (TRL's conversational preference format):

- **prompt**: the TAT-QA evaluator's ``build_prompt`` (one prompt for training and
  evaluation): the table as markdown, the paragraphs, the question, and last the instruction
  to answer with a value and a scale (left truncation by ``dpo.max_prompt_length`` cuts the
  table top first and keeps question + instruction).
- **chosen**: the gold answer in the evaluator's reply format (:func:`render_answer`; spans
  verbatim as in the data)::

      Answer: <value, spans joined by " | ">
      Scale: <none|thousand|million|billion|percent>
      Derivation: <gold derivation; count items joined by "; ">     (only when there is one)

- **rejected**: one wrong answer in the same format, so the pair differs in the error and
  not in the layout. Candidates by answer type (``rejection_kind``):

  ============== ============================================================ ==============
  kind           construction                                                 answer types
  ============== ============================================================ ==============
  model_output   the recorded model output for this question uid, used only   all
                 when it does not match the gold value + scale
  wrong_scale    gold value, a plausible wrong scale (million -> thousand,    span, multi-span,
                 percent -> none, ...); numeric answers or a non-empty scale  arithmetic
  sign_flip      arithmetic result negated (gold derivation kept)             arithmetic
  off_by_factor  result x100 (/100 when the scale is percent): the classic    arithmetic
                 ratio-vs-percentage slip
  wrong_operand  one derivation operand that is a table cell replaced by      arithmetic
                 another numeric cell of the same row (e.g. the other year),
                 re-evaluated; falls back to ``wrong_operator``
  wrong_operator one binary + swapped for - (or - for +), re-evaluated         arithmetic
  count_off      count - 1 with one counted item dropped (count + 1 at <= 1)  count
  missing_span   one of the gold spans left out                               multi-span
  wrong_cell     a neighbouring table cell (same row or column, same kind:    span
                 number vs text) instead of the gold cell
  ============== ============================================================ ==============

  A candidate the evaluator would score as correct (exact match and scale) is discarded. A recorded model output
  wins when it is wrong; otherwise one candidate is drawn. Questions with no candidate (e.g.
  a free-text span from a paragraph with no scale) are skipped and counted.

Determinism: every random choice uses a ``random.Random`` seeded from a SHA-256 of the
question uid (and the decision it makes), so a question always gets the same pair whatever
the order or the company of the other contexts; the output is sorted by question uid.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import math
import operator
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainyard.errors import DataFormatError
from trainyard.evaluation.tatqa_metric import gold_answers, score_question
from trainyard.evaluation.tatqa_prompt import SPAN_SEPARATOR, build_prompt, parse_output

log = logging.getLogger(__name__)

NO_SCALE = "none"
SCALES = ("", "thousand", "million", "billion", "percent")
ANSWER_TYPES = ("span", "multi-span", "arithmetic", "count")
# Plausible confusions, first the most common: a model that misreads the table header.
WRONG_SCALES = {
    "": ("thousand", "million", "percent"),
    "thousand": ("million", ""),
    "million": ("thousand", "billion"),
    "billion": ("million", "thousand"),
    "percent": ("", "million"),
}
# TAT-QA's Hub mirrors ship the raw JSON files; splits map to these names.
HUB_FILES = {
    "train": "tatqa_dataset_train.json",
    "dev": "tatqa_dataset_dev.json",
    "validation": "tatqa_dataset_dev.json",
    "test": "tatqa_dataset_test_gold.json",
}


# ----------------------------------------------------------------------------- answers

_NUMBER = re.compile(r"^[$(\-]*\d[\d,]*(\.\d+)?[%)]*$")
_YEAR = re.compile(r"^(19|20)\d\d$")


def parse_number(text: Any) -> float | None:
    """'$1,204' -> 1204.0, '(5.0)%' -> -5.0, '$(0.08)' -> -0.08; None when not a number."""
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return float(text) if math.isfinite(text) else None
    s = str(text).strip()
    if not s or not _NUMBER.match(s.replace(" ", "")):
        return None
    negative = "(" in s or "-" in s
    digits = re.sub(r"[^\d.]", "", s)
    try:
        value = float(digits)
    except ValueError:
        return None
    return -value if negative else value


def format_number(value: float) -> str:
    """No thousands separators, at most 4 decimals, integers without '.0'."""
    value = round(value, 4)
    if value == int(value):
        return str(int(value))
    return f"{value:.4f}".rstrip("0").rstrip(".")


def format_value(answer: Any) -> str:
    """Spans verbatim, joined by " | " (a reworded span, e.g. '(5.0)%' -> '-5', can score
    differently under the TAT-QA metric); computed numbers without trailing zeros."""
    if isinstance(answer, list):
        return SPAN_SEPARATOR.join(str(a).strip() for a in answer)
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        return format_number(float(answer))
    return str(answer).strip()


def format_derivation(derivation: Any, answer_type: str) -> str:
    text = str(derivation or "").strip()
    if answer_type == "count":
        return "; ".join(part.strip() for part in text.split("##") if part.strip())
    return text


def render_answer(value: str, scale: str, derivation: str | None = None) -> str:
    """The one output format (shared with the TAT-QA generation evaluator)."""
    out = f"Answer: {value}\nScale: {scale or NO_SCALE}"
    return f"{out}\nDerivation: {derivation}" if derivation else out


def _norm_item(item: Any) -> str:
    """Cell comparison key: numbers canonical, text lower-cased with spaces collapsed."""
    number = parse_number(item)
    if number is not None:
        return format_number(round(number, 2))
    return re.sub(r"\s+", " ", str(item).strip().strip(".").lower())


def is_correct(output: str, question: Mapping[str, Any]) -> bool:
    """Would the TAT-QA evaluator give this reply full marks? (exact match and the gold scale)"""
    parsed = parse_output(output)
    if parsed is None:
        return False
    answer, scale = parsed
    return score_question(question, answer, scale).exact_match == 1.0 and scale == (question.get("scale") or "")


# ----------------------------------------------------------------------------- derivations

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_DERIV_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
# Only + and - are swapped: a swapped * or / gives absurd magnitudes, not a plausible slip.
_DERIV_OPERATOR = re.compile(r"(?<=[\d)%\s])\s*([+\-])\s*(?=[\d($\s-])")
_SWAP = {"+": "-", "-": "+"}


def evaluate_derivation(derivation: str) -> float | None:
    """Safely evaluate '(1,475.0-800.0)/800.0*100' -> 84.375; None if not plain arithmetic."""
    expr = derivation.replace("$", "").replace(",", "").replace("%", "")
    expr = expr.replace("×", "*").replace("÷", "/").replace("−", "-").strip()
    if not expr:
        return None
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        return None

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return -ev(node.operand) if isinstance(node.op, ast.USub) else ev(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError("not arithmetic")

    try:
        value = ev(tree)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return value if math.isfinite(value) else None


# ----------------------------------------------------------------------------- rejections


@dataclass(frozen=True)
class Rejection:
    kind: str
    text: str  # the rendered rejected answer


def question_rng(uid: str, purpose: str) -> random.Random:
    """A generator that depends only on the question uid and the decision it makes."""
    digest = hashlib.sha256(f"{uid}\0{purpose}".encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


def _table_cells(context: Mapping[str, Any]) -> list[list[str]]:
    rows = (context.get("table") or {}).get("table") or []
    return [[str(c) for c in row] for row in rows if isinstance(row, list)]


def _same_kind(a: str, b: str) -> bool:
    """Cells a model could confuse: both numbers or both text, percent with percent, year with year."""
    a, b = a.strip(), b.strip()
    x, y = parse_number(a), parse_number(b)
    if (x is None) != (y is None):
        return False
    if x and y and max(abs(x), abs(y)) > 20 * min(abs(x), abs(y)):
        return False  # a share count is not confused with a price
    return ("%" in a) == ("%" in b) and bool(_YEAR.match(a)) == bool(_YEAR.match(b))


def _is_numeric(values: list[str]) -> bool:
    return bool(values) and all(parse_number(v) is not None for v in values)


def _wrong_scale(uid: str, value: str, scale: str, derivation: str | None) -> list[Rejection]:
    options = WRONG_SCALES.get(scale, ("",))
    wrong = question_rng(uid, "wrong_scale").choice(options)
    return [Rejection("wrong_scale", render_answer(value, wrong, derivation))]


def _arithmetic(uid: str, q: Mapping[str, Any], cells: list[list[str]], scale: str, deriv: str) -> list[Rejection]:
    gold = parse_number(q["answer"])
    if gold is None:
        gold = evaluate_derivation(deriv)
    if gold is None:
        return []
    out = []
    if gold != 0:
        out.append(Rejection("sign_flip", render_answer(format_number(-gold), scale, deriv)))
        factor = 0.01 if scale == "percent" else 100.0
        out.append(Rejection("off_by_factor", render_answer(format_number(gold * factor), scale, deriv)))
    swapped = _wrong_operand(uid, deriv, cells) or _wrong_operator(uid, deriv)
    if swapped is not None:
        kind, new_deriv, value = swapped
        out.append(Rejection(kind, render_answer(format_number(round(value, 2)), scale, new_deriv)))
    return out


def _wrong_operand(uid: str, deriv: str, cells: list[list[str]]) -> tuple[str, str, float] | None:
    """Replace one operand found in a table row by another comparable number of that row
    (not one the derivation already uses: that would just give 0 or a doubled term)."""
    options = []
    operands = {parse_number(m.group()) for m in _DERIV_NUMBER.finditer(deriv)}
    for m in _DERIV_NUMBER.finditer(deriv):
        value = parse_number(m.group())
        for row in cells:
            for j, cell in enumerate(row):
                v = parse_number(cell)
                if v is None or abs(v) != value:
                    continue
                for jj, other in enumerate(row):
                    w = parse_number(other)
                    if jj != j and w is not None and abs(w) not in operands and _same_kind(cell, other):
                        options.append((m.start(), m.end(), re.sub(r"[^\d.,]", "", other)))
    for start, end, text in _shuffled(options, question_rng(uid, "wrong_operand")):
        new = deriv[:start] + text + deriv[end:]
        value = evaluate_derivation(new)
        if value is not None:
            return "wrong_operand", new, value
    return None


def _wrong_operator(uid: str, deriv: str) -> tuple[str, str, float] | None:
    spots = list(_DERIV_OPERATOR.finditer(deriv))
    for m in _shuffled(spots, question_rng(uid, "wrong_operator")):
        new = deriv[: m.start(1)] + _SWAP[m.group(1)] + deriv[m.end(1):]
        value = evaluate_derivation(new)
        if value is not None:
            return "wrong_operator", new, value
    return None


def _shuffled(items: list, rng: random.Random) -> list:
    items = list(dict.fromkeys(items))  # dedupe, keep order
    rng.shuffle(items)
    return items


def _count_off(uid: str, q: Mapping[str, Any], scale: str) -> list[Rejection]:
    count = parse_number(q["answer"])
    if count is None:
        return []
    items = [p.strip() for p in str(q.get("derivation") or "").split("##") if p.strip()]
    if count >= 2 and items:
        items.pop(question_rng(uid, "count_off").randrange(len(items)))
        return [Rejection("count_off", render_answer(format_number(count - 1), scale, "; ".join(items)))]
    return [Rejection("count_off", render_answer(format_number(count + 1), scale, "; ".join(items) or None))]


def _missing_span(uid: str, spans: list[str], scale: str) -> list[Rejection]:
    if len(spans) < 2:
        return []
    kept = list(spans)
    kept.pop(question_rng(uid, "missing_span").randrange(len(kept)))
    return [Rejection("missing_span", render_answer(format_value(kept), scale))]


def _wrong_cell(uid: str, span: str, cells: list[list[str]], scale: str) -> list[Rejection]:
    """A neighbour of the gold cell (same row or column) of the same kind: number vs text."""
    key = _norm_item(span)
    options = []
    for i, row in enumerate(cells):
        for j, cell in enumerate(row):
            if _norm_item(cell) != key:
                continue
            neighbours = [c for jj, c in enumerate(row) if jj != j]
            neighbours += [r[j] for ii, r in enumerate(cells) if ii != i and j < len(r)]
            for other in neighbours:
                if other.strip() and _norm_item(other) != key and _same_kind(span, other):
                    options.append(other.strip())
    if not options:
        return []
    choice = question_rng(uid, "wrong_cell").choice(sorted(set(options)))
    return [Rejection("wrong_cell", render_answer(format_value(choice), scale))]


def rejection_candidates(context: Mapping[str, Any], question: Mapping[str, Any]) -> list[Rejection]:
    """Every synthetic wrong answer this question allows (fixed order), gold-equal ones removed."""
    uid, kind = str(question["uid"]), question["answer_type"]
    scale = question.get("scale") or ""
    answer = question["answer"]
    cells = _table_cells(context)
    value = format_value(answer)
    deriv = format_derivation(question.get("derivation"), kind)
    spans = [str(a).strip() for a in answer] if isinstance(answer, list) else [value]
    out: list[Rejection] = []
    if kind == "arithmetic":
        out += _wrong_scale(uid, value, scale, deriv or None)
        out += _arithmetic(uid, question, cells, scale, deriv)
    elif kind == "count":
        out += _count_off(uid, question, scale)
    elif kind == "multi-span":
        out += _missing_span(uid, spans, scale)
        if scale or _is_numeric(spans):
            out += _wrong_scale(uid, value, scale, None)
    elif kind == "span":
        out += _wrong_cell(uid, spans[0], cells, scale)
        if scale or _is_numeric(spans):
            out += _wrong_scale(uid, value, scale, None)
    gold = render_answer(value, scale, deriv or None)
    return [r for r in out if r.text != gold and not is_correct(r.text, question)]


# ----------------------------------------------------------------------------- pairs


@dataclass
class PairStats:
    questions: int = 0
    pairs: int = 0
    skipped: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    model_outputs_correct: int = 0

    def summary(self) -> str:
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())) or "none"
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(self.kinds.items()))
        return (
            f"{self.pairs} pairs from {self.questions} questions; skipped {sum(self.skipped.values())} "
            f"({skipped}); rejection kinds: {kinds}; recorded outputs that were correct: {self.model_outputs_correct}"
        )


def _model_output_text(raw: Any) -> str | None:
    """A recorded output: free text, or the official prediction format [answer, scale]."""
    if isinstance(raw, str):
        return raw.strip() or None
    if isinstance(raw, (list, tuple)) and len(raw) == 2:
        return render_answer(format_value(raw[0]), str(raw[1] or ""))
    return None


def make_pair(
    context: Mapping[str, Any], question: Mapping[str, Any], model_output: Any = None, stats: PairStats | None = None
) -> dict[str, Any] | None:
    """One preference row for one question, or None (reason counted in ``stats.skipped``)."""
    stats = stats if stats is not None else PairStats()
    missing = [k for k in ("uid", "question", "answer", "answer_type") if k not in question]
    if missing:
        stats.skipped[f"missing {'/'.join(missing)}"] += 1
        return None
    kind = question["answer_type"]
    if kind not in ANSWER_TYPES:
        stats.skipped[f"unknown answer_type {kind!r}"] += 1
        return None
    answer, scale = question["answer"], question.get("scale") or ""
    if answer in ("", [], None):
        stats.skipped["empty answer"] += 1
        return None
    try:
        gold_answers(question)  # the evaluator's reading of the answer: must work to score pairs
    except (ValueError, TypeError) as exc:
        stats.skipped[f"malformed {kind} answer"] += 1
        log.debug("question %s: %s", question["uid"], exc)
        return None
    deriv = format_derivation(question.get("derivation"), kind)
    chosen = render_answer(format_value(answer), scale, deriv or None)

    rejection = None
    recorded = _model_output_text(model_output)
    if recorded is not None:
        if is_correct(recorded, question):
            stats.model_outputs_correct += 1
        else:
            rejection = Rejection("model_output", recorded)
    if rejection is None:
        candidates = rejection_candidates(context, question)
        if not candidates:
            stats.skipped["no wrong answer to construct"] += 1
            return None
        rejection = question_rng(str(question["uid"]), "choice").choice(candidates)
    stats.kinds[rejection.kind] += 1
    return {
        "prompt": [{"role": "user", "content": build_prompt(context, question)}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejection.text}],
        "question_uid": str(question["uid"]),
        "answer_type": kind,
        "rejection_kind": rejection.kind,
    }


def build_pairs(
    contexts: Iterable[Mapping[str, Any]], model_outputs: Mapping[str, Any] | None = None
) -> tuple[list[dict[str, Any]], PairStats]:
    """All pairs (sorted by question uid) and the counts of what was built and skipped."""
    stats = PairStats()
    pairs = []
    model_outputs = model_outputs or {}
    for context in contexts:
        for question in context.get("questions") or []:
            stats.questions += 1
            pair = make_pair(context, question, model_outputs.get(str(question.get("uid"))), stats)
            if pair is not None:
                pairs.append(pair)
    pairs.sort(key=lambda p: p["question_uid"])
    stats.pairs = len(pairs)
    return pairs, stats


# ----------------------------------------------------------------------------- reading


def read_contexts(path: str | Path) -> list[dict[str, Any]]:
    """Read and shape-check a dataset_raw file (with ``json``: answers mix types)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}: not valid JSON ({exc}); TAT-QA dataset_raw files are one JSON list") from None
    if not isinstance(data, list):
        raise DataFormatError(
            f"{path}: expected the TAT-QA dataset_raw layout (a JSON list of contexts with table/paragraphs/"
            f"questions), got a {type(data).__name__}. For a dataset that already has prompt/chosen/rejected "
            "columns use format: preference"
        )
    for i, ctx in enumerate(data):
        missing = [k for k in ("table", "paragraphs", "questions") if not isinstance(ctx, dict) or k not in ctx]
        if missing:
            found = sorted(ctx) if isinstance(ctx, dict) else type(ctx).__name__
            raise DataFormatError(
                f"{path}: context #{i} lacks {missing} (found {found}); TAT-QA dataset_raw contexts have "
                "table, paragraphs and questions. For prompt/chosen/rejected rows use format: preference"
            )
    return data


def read_model_outputs(path: str | Path) -> dict[str, Any]:
    """``{question_uid: "Answer: ...\\nScale: ..."}`` or the official ``{uid: [answer, scale]}``."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: model outputs must be a JSON object {{question_uid: output}}")
    return {str(k): v for k, v in data.items()}


def resolve_source(source: str, split: str, filename: str | None = None, revision: str | None = None) -> Path:
    """fixture:<name>, a local file, a local directory, or a Hub dataset repo's raw JSON file.

    The file inside a directory / repo is ``filename``, else ``split`` itself when it ends in
    ``.json``, else the official name for the split (train/dev/validation/test).
    """
    if source.startswith("fixture:"):
        from trainyard.fixtures import fixture_path

        return fixture_path(source.split(":", 1)[1])
    name = filename or (split if split.endswith(".json") else HUB_FILES.get(split))
    local = Path(source).expanduser()
    if local.is_file():
        return local
    if local.is_dir():
        if name is None or not (local / name).is_file():
            raise DataFormatError(f"{local}: no TAT-QA file {name!r} for split {split!r}; files: {sorted(p.name for p in local.glob('*.json'))}")
        return local / name
    if name is None:
        raise DataFormatError(f"TAT-QA split {split!r} has no known file name; use one of {sorted(HUB_FILES)} or name the .json file")
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id=source, filename=name, repo_type="dataset", revision=revision))


def load_tatqa_pairs(
    source: str,
    split: str = "train",
    *,
    filename: str | None = None,
    revision: str | None = None,
    model_outputs: str | Path | Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Loader hook for format ``tatqa_preference``: raw TAT-QA -> preference rows."""
    path = resolve_source(source, split, filename, revision)
    outputs = read_model_outputs(model_outputs) if isinstance(model_outputs, (str, Path)) else model_outputs
    pairs, stats = build_pairs(read_contexts(path), outputs)
    log.info("TAT-QA %s: %s", path.name, stats.summary())
    if not pairs:
        raise DataFormatError(f"{path}: no preference pairs could be built ({stats.summary()})")
    return pairs


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="TAT-QA dataset_raw JSON -> DPO preference pairs (JSONL)")
    p.add_argument("--input", required=True, help="raw JSON file, directory, fixture:tatqa or Hub dataset id")
    p.add_argument("--split", default="train")
    p.add_argument("--model-outputs", help="JSON {question_uid: output} to use as rejected answers")
    p.add_argument("--output", required=True, help="JSONL file to write")
    args = p.parse_args(argv)
    path = resolve_source(args.input, args.split)
    outputs = read_model_outputs(args.model_outputs) if args.model_outputs else None
    pairs, stats = build_pairs(read_contexts(path), outputs)
    with open(args.output, "w", encoding="utf-8") as fh:
        for pair in pairs:
            fh.write(json.dumps(pair, ensure_ascii=False) + "\n")
    print(stats.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
