"""Table model and number rendering for `launch.py report`.

A :class:`Table` keeps, per cell, the raw value (for report.json) and the text shown in
report.md, so the two files always agree. Non-finite metric values (stored in metrics.json
as the strings "inf"/"nan") render as "diverged†" / "n/a‡" with a footnote, never as ∞ or
a blank; best values per row or column are marked "**x** ★".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from trainyard.evaluation.consistency import as_number

INF_MARK = "†"
NAN_MARK = "‡"
INF_NOTE = (
    f"{INF_MARK} diverged: the value is infinite (the loss diverged or exp() overflowed); "
    "it is excluded from averages, spreads and best markers."
)
NAN_NOTE = (
    f"{NAN_MARK} n/a: the value is NaN (not a number, e.g. a NaN loss); "
    "it is excluded from averages, spreads and best markers."
)
BEST_NOTE = (
    "**x** ★ = best run (lower is better for loss / perplexity / bits per byte; higher for "
    "accuracy / exact match / F1 / judge scores); marked only when two or more runs have a value."
)
MISSING = "—"

Direction = Literal["min", "max"]

LOWER_BETTER = {"loss", "perplexity", "bits_per_byte", "word_perplexity"}
HIGHER_BETTER = {"exact_match", "f1", "scale_accuracy"}


def direction(metric: str) -> Direction | None:
    """Which way is better for a metric name (None: not ranked, e.g. runtime, grad norm)."""
    leaf = metric.rsplit("/", 1)[-1]
    if metric.startswith(("judge/", "judge_before/")) and leaf == "missing":
        return "min"
    if metric.startswith(("judge/", "ifeval/")):
        return "max"
    if leaf in LOWER_BETTER or leaf.endswith("_loss"):
        return "min"
    if leaf in HIGHER_BETTER or leaf.endswith(("accuracy", "accuracies")):
        return "max"
    return None


def is_fraction(metric: str) -> bool:
    """Metrics stored as fractions in [0, 1] and shown as percentages."""
    if metric.startswith(("judge/", "judge_before/")):
        return False
    leaf = metric.rsplit("/", 1)[-1]
    return leaf in ("exact_match", "f1", "scale_accuracy") or leaf.endswith(("accuracy", "accuracies"))


def fmt_number(metric: str, v: float) -> str:
    """Text for a finite metric value, with precision chosen by what the metric is."""
    leaf = metric.rsplit("/", 1)[-1]
    if is_fraction(metric):
        return f"{v * 100:.1f}%"
    if metric.startswith(("judge/", "judge_before/")) and leaf != "missing":
        return f"{v:.2f}"
    if leaf in ("perplexity", "word_perplexity"):
        if abs(v) < 1000:
            return f"{v:.2f}"
        return f"{v:,.0f}" if abs(v) < 1e7 else f"{v:.3g}"
    if leaf.endswith("loss") or leaf == "bits_per_byte":
        return f"{v:.4f}"
    if leaf.endswith("runtime_s"):
        return f"{v:.1f} s" if v < 100 else f"{v:,.0f} s"
    if leaf.endswith("per_second"):
        return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"
    if leaf in ("learning_rate", "lr"):
        return f"{v:.3g}"
    if float(v).is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:.4g}"


def fmt_param(value: Any) -> str:
    """A matrix parameter value for a table cell (2e-05, 32, [q_proj, v_proj], true)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(fmt_param(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={fmt_param(v)}" for k, v in value.items())
    return str(value)


def json_value(v: float | None) -> float | str | None:
    """A float for report.json: non-finite as "inf"/"nan" strings, like metrics.json."""
    if v is None or math.isfinite(v):
        return v
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")


@dataclass
class Cell:
    value: Any  # what report.json gets
    text: str  # what report.md shows
    number: float | None = None  # finite number used for best marking, else None
    best: bool = False

    @property
    def markdown(self) -> str:
        text = self.text.replace("|", "\\|").replace("\n", " ")
        return f"**{text}** ★" if self.best else text


def text_cell(text: str, value: Any = None) -> Cell:
    return Cell(value if value is not None else text, text)


@dataclass
class Column:
    key: str  # report.json key
    label: str  # markdown header
    metric: str | None = None  # the metric it shows, for best marking
    align: Literal["left", "right"] = "right"


@dataclass
class Table:
    name: str
    title: str
    columns: list[Column]
    rows: list[dict[str, Cell]] = field(default_factory=list)
    intro: str = ""
    notes: list[str] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)  # footnotes used: "inf", "nan", "best"

    def metric_cell(self, metric: str, raw: Any, missing_text: str = MISSING) -> Cell:
        """A cell for a raw metrics.json value; records which footnotes it needs."""
        v = as_number(raw)
        if v is None:
            return Cell(None, missing_text)
        if math.isnan(v):
            self.flags.add("nan")
            return Cell("nan", f"n/a{NAN_MARK}")
        if math.isinf(v):
            self.flags.add("inf")
            return Cell(json_value(v), f"diverged{INF_MARK}")
        return Cell(v, fmt_number(metric, v), number=v)

    def mark_best_in_column(self, key: str, metric: str) -> None:
        self._mark([row[key] for row in self.rows if key in row], metric)

    def mark_best_in_row(self, row: dict[str, Cell], keys: list[str], metric: str) -> None:
        self._mark([row[k] for k in keys if k in row], metric)

    def _mark(self, cells: list[Cell], metric: str) -> None:
        way = direction(metric)
        ranked = [c for c in cells if c.number is not None]
        if way is None or len(ranked) < 2:
            return
        best = (min if way == "min" else max)(c.number for c in ranked)
        if all(c.number == best for c in ranked):
            return  # a tie across every run says nothing
        for c in ranked:
            if c.number == best:
                c.best = True
                self.flags.add("best")

    def footnotes(self) -> list[str]:
        notes = list(self.notes)
        if "best" in self.flags:
            notes.append(BEST_NOTE)
        if "inf" in self.flags:
            notes.append(INF_NOTE)
        if "nan" in self.flags:
            notes.append(NAN_NOTE)
        return notes

    def to_markdown(self, level: int = 2) -> str:
        out = [f"{'#' * level} {self.title}", ""]
        if self.intro:
            out += [self.intro, ""]
        out.append("| " + " | ".join(c.label.replace("|", "\\|") for c in self.columns) + " |")
        out.append("|" + "|".join(":---" if c.align == "left" else "---:" for c in self.columns) + "|")
        for row in self.rows:
            cells = [row[c.key].markdown if c.key in row else MISSING for c in self.columns]
            out.append("| " + " | ".join(cells) + " |")
        notes = self.footnotes()
        if notes:
            out.append("")
            out += [f"<sub>{n}</sub>  " for n in notes]
        return "\n".join(out) + "\n"

    def to_json(self) -> dict[str, Any]:
        best: dict[str, list[str]] = {}
        first = self.columns[0].key
        for row in self.rows:
            for key, cell in row.items():
                if cell.best:
                    best.setdefault(key, []).append(str(row[first].value))
        return {
            "title": self.title,
            "columns": [c.key for c in self.columns],
            "labels": {c.key: c.label for c in self.columns},
            "rows": [{k: cell.value for k, cell in row.items()} for row in self.rows],
            "text": [{k: cell.text for k, cell in row.items()} for row in self.rows],
            "best": best,
            "notes": self.footnotes(),
        }
