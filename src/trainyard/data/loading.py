"""Load a dataset (Hub id, local file/dir, or bundled fixture), convert rows with its format,
split off a held-out set. The real Hub loading path is what users run; --smoke and the tests
point `source` at a bundled fixture (``fixture:<name>``)."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainyard.data.formats import Format, SkipRow, get_format
from trainyard.errors import DataFormatError
from trainyard.spec import DataSpec

log = logging.getLogger(__name__)
EXT_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text", ".arrow": "arrow"}


@dataclass
class DataStats:
    source: str
    rows_read: int = 0
    examples: int = 0
    skipped: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)

    def as_metrics(self, prefix: str = "data") -> dict[str, float]:
        out = {f"{prefix}/rows_read": float(self.rows_read), f"{prefix}/examples": float(self.examples), f"{prefix}/skipped": float(sum(self.skipped.values()))}
        return out


def resolve_source(source: str) -> tuple[str, dict[str, Any]]:
    """-> (builder or Hub id, extra load_dataset kwargs)."""
    if source.startswith("fixture:"):
        from trainyard.fixtures import fixture_path

        source = str(fixture_path(source.split(":", 1)[1]))
    path = Path(source).expanduser()
    if path.is_file():
        builder = EXT_BUILDERS.get(path.suffix)
        if builder is None:
            raise DataFormatError(f"data.source {source}: unsupported file type {path.suffix!r}; use one of {sorted(EXT_BUILDERS)}")
        return builder, {"data_files": str(path)}
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in EXT_BUILDERS)
        if not files:
            raise DataFormatError(f"data.source {source}: directory holds no {sorted(EXT_BUILDERS)} files")
        return EXT_BUILDERS[files[0].suffix], {"data_files": [str(f) for f in files if f.suffix == files[0].suffix]}
    if source.startswith((".", "/", "~")) or source.endswith(tuple(EXT_BUILDERS)):
        raise DataFormatError(f"data.source {source}: no such file or directory")
    return source, {}


def load_raw(source: str, config: str | None, split: str):
    from datasets import load_dataset

    name, kwargs = resolve_source(source)
    if kwargs:  # local files carry a single "train" split
        return load_dataset(name, split="train", **kwargs)
    return load_dataset(name, config, split=split)


def load_format_rows(fmt: Format, source: str, config: str | None, split: str):
    """Rows of `source` for `fmt`: its own loader for nested raw formats (TAT-QA), else `datasets`."""
    if fmt.loader is not None:
        from datasets import Dataset

        return Dataset.from_list(fmt.loader(source, split))
    return load_raw(source, config, split)


def check_columns(columns: list[str], fmt: Format, text_field: str, where: str) -> None:
    required = fmt.required_columns(text_field)
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataFormatError(
            f"{where}: format {fmt.name!r} needs column(s) {missing}, the dataset has {sorted(columns)}; "
            f"pick the format that matches (data.format) or set data.text_field"
        )


def convert_rows(rows, fmt: Format, text_field: str, stats: DataStats, limit: int | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for row in rows:
        if limit is not None and len(out) >= limit:
            break
        stats.rows_read += 1
        try:
            example = fmt.convert(row, text_field)
        except SkipRow as exc:
            stats.skipped[str(exc)] += 1
            continue
        if example is None:
            stats.skipped["empty"] += 1
            continue
        out.append(example)
    stats.examples = len(out)
    return out


def held_out_count(data: DataSpec, n_rows: int) -> int:
    """Held-out examples to split off. `limit` counts training examples; the held-out set
    comes on top, sized as a fraction of (limit + held-out) or as a fixed count."""
    if data.eval_split is not None or not data.eval_size:
        return 0
    if data.eval_size >= 1:
        n = int(data.eval_size)
    else:
        pool = data.limit / (1 - data.eval_size) if data.limit else n_rows
        n = max(1, round(data.eval_size * min(pool, n_rows)))
    return min(n, data.eval_limit or n)


def load_examples(data: DataSpec, where: str = "data"):
    """-> (train Dataset, held-out Dataset | None, DataStats). Raises DataFormatError."""
    from datasets import Dataset

    fmt = get_format(data.format)
    raw = load_format_rows(fmt, data.source, data.config, data.split)
    check_columns(list(raw.column_names), fmt, data.text_field, f"{where} {data.source}")
    if data.shuffle:
        raw = raw.shuffle(seed=data.seed)
    stats = DataStats(source=data.source)
    n_eval = held_out_count(data, len(raw))
    wanted = data.limit + n_eval if data.limit else None
    examples = convert_rows(raw, fmt, data.text_field, stats, limit=wanted)
    if data.limit and len(examples) < data.limit + n_eval:
        msg = f"{where}.limit={data.limit} but {data.source} yields only {len(examples)} usable examples; using all of them"
        stats.warnings.append(msg)
        log.warning(msg)
    if stats.skipped:
        log.warning("%s: skipped %d malformed row(s): %s", data.source, sum(stats.skipped.values()), dict(stats.skipped))
    if not examples:
        raise DataFormatError(f"{where} {data.source}: no usable examples (skipped: {dict(stats.skipped)})")
    eval_examples = None
    if data.eval_split is not None:
        eval_raw = load_format_rows(fmt, data.source, data.config, data.eval_split)
        eval_stats = DataStats(source=f"{data.source}:{data.eval_split}")
        eval_examples = convert_rows(eval_raw, fmt, data.text_field, eval_stats, limit=data.eval_limit)
        stats.skipped.update({f"eval: {k}": v for k, v in eval_stats.skipped.items()})
    elif n_eval:
        n_eval = min(n_eval, len(examples) - 1)
        eval_examples, examples = examples[:n_eval], examples[n_eval:]
    if data.limit:
        examples = examples[: data.limit]
    stats.examples = len(examples)
    train = Dataset.from_list(examples)
    held_out = Dataset.from_list(eval_examples) if eval_examples else None
    return train, held_out, stats
