"""Read evaluation texts from a local file: .jsonl / .json rows with a text field, or .txt lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainyard.errors import DataFormatError, did_you_mean

SUFFIXES = (".jsonl", ".json", ".txt")


def load_texts(path: str | Path, text_field: str = "text") -> list[str]:
    """Non-blank texts of a file, in file order.

    .jsonl: one JSON object per line, text in `text_field`. .json: a list of such objects.
    .txt: every non-blank line is one text (a WikiText-raw style file). Blank texts carry
    nothing to score and are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected {', '.join(SUFFIXES)})")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        lines = path.read_text(encoding="utf-8").splitlines()
        return [line for line in lines if line.strip()]
    if suffix == ".jsonl":
        rows = _read_jsonl(path)
    elif suffix == ".json":
        rows = _read_json_list(path)
    else:
        raise DataFormatError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(SUFFIXES)}")
    texts = [_text_of(row, text_field, path, where) for where, row in rows]
    return [t for t in texts if t.strip()]


def _read_jsonl(path: Path) -> list[tuple[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rows.append((f"line {lineno}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
    return rows


def _read_json_list(path: Path) -> list[tuple[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from e
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    return [(f"item {i}", row) for i, row in enumerate(data)]


def _text_of(row: Any, field: str, path: Path, where: str) -> str:
    if not isinstance(row, dict):
        raise DataFormatError(f"{path} ({where}): expected a JSON object, got {type(row).__name__}")
    if field not in row:
        fields = sorted(row)
        raise DataFormatError(
            f"{path} ({where}): no field {field!r}{did_you_mean(field, fields)}; "
            f"fields present: {', '.join(map(repr, fields)) or 'none'}. Pass --text-field NAME."
        )
    value = row[field]
    if not isinstance(value, str):
        raise DataFormatError(f"{path} ({where}): field {field!r} is {type(value).__name__}, expected a string")
    return value
