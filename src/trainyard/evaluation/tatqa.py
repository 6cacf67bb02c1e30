"""Score TAT-QA predictions with the official semantics; reads the official file formats.

    python -m trainyard.evaluation.tatqa --gold tatqa_dataset_dev.json --pred predictions.json

gold: the dataset_raw JSON (a list of contexts, each with ``questions``); predictions:
``{question_uid: [answer, scale]}``. Prints one JSON object (fractions in [0, 1]).
The scoring itself lives in :mod:`trainyard.evaluation.tatqa_metric`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from trainyard.evaluation.tatqa_metric import ANSWER_TYPES, SCALES, evaluate

QUESTION_KEYS = ("uid", "answer", "answer_type", "scale")


class TatqaFileError(ValueError):
    """A gold or prediction file that is not in the official TAT-QA format."""


def _read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise TatqaFileError(f"{path}: {what} file not found")
    try:
        # json, not datasets: `answer` mixes lists, numbers and strings
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TatqaFileError(f"{path}: not valid JSON ({exc})") from exc


def validate_gold(contexts: Any, source: str = "<gold>") -> list[dict[str, Any]]:
    """Check the dataset_raw structure; errors name the context / question and the key."""
    if not isinstance(contexts, list):
        raise TatqaFileError(f"{source}: expected a list of contexts (the dataset_raw format), got {type(contexts).__name__}")
    for ci, context in enumerate(contexts):
        if not isinstance(context, dict) or not isinstance(context.get("questions"), list):
            raise TatqaFileError(f"{source}: context {ci} has no 'questions' list")
        for qi, q in enumerate(context["questions"]):
            where = f"{source}: context {ci} question {qi}"
            if not isinstance(q, dict):
                raise TatqaFileError(f"{where}: expected an object")
            missing = [k for k in QUESTION_KEYS if k not in q]
            if missing:
                hint = " (a test file without answers? use the *_gold.json file)" if "answer" in missing else ""
                raise TatqaFileError(f"{where} (uid {q.get('uid')!r}): missing key(s) {missing}{hint}")
            if q["answer_type"] not in ANSWER_TYPES:
                raise TatqaFileError(f"{where} (uid {q['uid']!r}): answer_type {q['answer_type']!r} is not one of {list(ANSWER_TYPES)}")
            if q["scale"] not in SCALES:
                raise TatqaFileError(f"{where} (uid {q['uid']!r}): scale {q['scale']!r} is not one of {list(SCALES)}")
            if q["answer_type"] in ("span", "multi-span") and not isinstance(q["answer"], list):
                raise TatqaFileError(f"{where} (uid {q['uid']!r}): a {q['answer_type']} answer must be a list")
            if q["answer_type"] == "count":
                try:
                    int(q["answer"])
                except (TypeError, ValueError):
                    raise TatqaFileError(f"{where} (uid {q['uid']!r}): a count answer must be an integer, got {q['answer']!r}") from None
    return contexts


def validate_predictions(preds: Any, source: str = "<predictions>") -> dict[str, list[Any]]:
    if not isinstance(preds, dict):
        raise TatqaFileError(f"{source}: expected an object {{question_uid: [answer, scale]}}, got {type(preds).__name__}")
    for uid, value in preds.items():
        if not (isinstance(value, list) and len(value) == 2):
            raise TatqaFileError(f"{source}: prediction for {uid!r} must be [answer, scale], got {value!r}")
        if value[1] is not None and not isinstance(value[1], str):
            raise TatqaFileError(f"{source}: scale for {uid!r} must be a string such as 'million' or '', got {value[1]!r}")
    return preds


def load_gold(path: str | Path) -> list[dict[str, Any]]:
    return validate_gold(_read_json(path, "gold"), str(path))


def load_predictions(path: str | Path) -> dict[str, list[Any]]:
    return validate_predictions(_read_json(path, "prediction"), str(path))


def evaluate_files(gold_path: str | Path, pred_path: str | Path) -> dict[str, Any]:
    gold = load_gold(gold_path)
    preds = load_predictions(pred_path)
    known = {str(q["uid"]) for c in gold for q in c["questions"]}
    result = evaluate(gold, preds)
    result["unknown_predictions"] = len(set(preds) - known)  # uids not in the gold file
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="TAT-QA exact match / F1 with the official semantics")
    parser.add_argument("--gold", required=True, help="dataset_raw JSON with answers (e.g. tatqa_dataset_dev.json)")
    parser.add_argument("--pred", required=True, help="predictions JSON: {question_uid: [answer, scale]}")
    args = parser.parse_args(argv)
    try:
        result = evaluate_files(args.gold, args.pred)
    except TatqaFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
