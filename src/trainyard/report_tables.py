"""Table model and number rendering for `launch.py report`.

A :class:`Table` keeps, per cell, the raw value (for report.json) and the text shown in
report.md, so the two files always agree. Non-finite metric values (stored in metrics.json
as the strings "inf"/"nan") render as "diverged†" / "n/a‡" with a footnote, never as ∞ or
a blank. The best value per row or column is marked "**x** ★" only when it is unique
and its run is rankable (completed, trained with the current spec); exact ties say "tie".
Seed groups render as "mean ± std (n=k)".
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
    "accuracy / exact match / F1 / judge scores); marked only when it is unique among two or more "
    "completed runs trained with the current spec (diverged, failed, unfinished and stale runs are never ranked)."
)
TIE_NOTE = "(tie) = two or more runs share the best value exactly, so none is marked ★."
AGG_NOTE = (
    "Seed groups: mean ± sample standard deviation (n = completed seeds that have the value); "
    "the individual runs are in the appendix."
)
MISSING = "—"

Direction = Literal["min", "max"]

LOWER_BETTER = {"loss", "perplexity", "bits_per_byte", "word_perplexity"}
HIGHER_BETTER = {"exact_match", "f1", "scale_accuracy"}


def direction(metric: str) -> Direction | None:
    """Which way is better for a metric name (None: not ranked, e.g. runtime, grad norm)."""
    leaf = metric.rsplit("/", 1)[-1].removesuffix("_loose")
    if metric.startswith(("judge/", "judge_before/")) and leaf in ("missing", "questions"):
        return None if leaf == "questions" else "min"
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
    leaf = metric.rsplit("/", 1)[-1].removesuffix("_loose")
    return leaf in ("exact_match", "f1", "scale_accuracy") or leaf.endswith(("accuracy", "accuracies"))


def fmt_number(metric: str, v: float) -> str:
    """Text for a finite metric value, with precision chosen by what the metric is."""
    leaf = metric.rsplit("/", 1)[-1]
    if is_fraction(metric):
        return f"{v * 100:.1f}%"
    if metric.startswith(("judge/", "judge_before/")) and leaf != "missing":
        return f"{v:.2f}"
    if leaf in ("perplexity", "word_perplexity"):
        if abs(v) < 1e4:  # two decimals keep 1,029.35 vs 1,030.21 apart
            return f"{v:,.2f}"
        return f"{v:,.0f}" if abs(v) < 1e7 else f"{v:.3g}"
    if leaf.endswith("loss") or leaf == "bits_per_byte":
        return f"{v:.4f}"
    if leaf.endswith("runtime_s"):
        return f"{v:.1f} s" if v < 100 else f"{v:,.0f} s"
    if leaf.endswith("per_second"):
        return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"
    if leaf in ("learning_rate", "lr"):
        return f"{v:.3g}"
    if leaf in ("margins", "chosen", "rejected"):  # DPO rewards: tiny early in training
        return f"{v:.4f}" if v == 0 or abs(v) >= 1e-3 else f"{v:.2e}"
    if float(v).is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:.4g}"


def fmt_spread(metric: str, v: float) -> str:
    """A std / ± term: like the metric, but never a misleading "0.0000" for a tiny non-zero spread."""
    text = fmt_number(metric, v)
    if v != 0 and not any(c in "123456789" for c in text):
        return f"{v * 100:.1e}%" if is_fraction(metric) else f"{v:.1e}"
    return text


def fmt_pct(pct: float) -> str:
    """A signed relative change: a tiny one must not read as "-0.0%"."""
    return f"{pct:+.1f}%" if abs(pct) >= 0.1 or pct == 0 else f"{pct:+.2g}%"


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


def mark_best(cells: list[Cell], metric: str, flags: set[str] | None = None) -> None:
    """★ the unique best ranked cell; exact ties are marked tie, none best."""
    way = direction(metric)
    ranked = [c for c in cells if c.number is not None]
    if way is None or len(ranked) < 2:
        return
    best = (min if way == "min" else max)(c.number for c in ranked)
    winners = [c for c in ranked if c.number == best]
    if len(winners) == 1:
        winners[0].best = True
        if flags is not None:
            flags.add("best")
        return
    for c in winners:
        c.tie = True
    if flags is not None:
        flags.add("tie")


@dataclass
class Cell:
    value: Any  # what report.json gets
    text: str  # what report.md shows
    number: float | None = None  # finite number used for best marking, else None (never ranked)
    best: bool = False
    tie: bool = False

    @property
    def markdown(self) -> str:
        text = self.text.replace("|", "\\|").replace("\n", " ")
        if self.best:
            return f"**{text}** ★"
        return f"{text} (tie)" if self.tie else text


def text_cell(text: str, value: Any = None) -> Cell:
    return Cell(value if value is not None else text, text)


@dataclass
class Column:
    key: str  # report.json key
    label: str  # markdown header
    metric: str | None = None  # the metric it shows, for best marking
    align: Literal["left", "right"] = "right"
    rank: bool = True  # False: shown, never marked best (e.g. a mixed-loss objective)


@dataclass
class Table:
    name: str
    title: str
    columns: list[Column]
    rows: list[dict[str, Cell]] = field(default_factory=list)
    intro: str = ""
    notes: list[str] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)  # footnotes used: "inf", "nan", "best"

    def metric_cell(self, metric: str, raw: Any, missing_text: str = MISSING, rankable: bool = True) -> Cell:
        """A cell for a raw metrics.json value; records which footnotes it needs.

        ``rankable=False`` (a diverged, failed, unfinished or stale run): shown, never best."""
        v = as_number(raw)
        if v is None:
            return Cell(None, missing_text)
        if math.isnan(v):
            self.flags.add("nan")
            return Cell("nan", f"n/a{NAN_MARK}")
        if math.isinf(v):
            self.flags.add("inf")
            return Cell(json_value(v), f"diverged{INF_MARK}")
        return Cell(v, fmt_number(metric, v), number=v if rankable else None)

    def agg_cell(self, metric: str, agg: Any, missing_text: str = MISSING, rankable: bool = True) -> Cell:
        """'mean ± std (n=k)' of a seed group (an ``Agg``); ranked by the mean."""
        if agg.n == 0:
            if agg.nonfinite:
                self.flags.add("inf")
                return Cell({"mean": None, "std": None, "n": 0, "nonfinite": agg.nonfinite}, f"diverged{INF_MARK}")
            return Cell(None, missing_text)
        self.flags.add("agg")
        text = fmt_number(metric, agg.mean)
        if agg.std is not None:
            text += f" ± {fmt_spread(metric, agg.std)}"
        text += f" (n={agg.n})"
        if agg.nonfinite:
            self.flags.add("inf")
            text += f", {agg.nonfinite} diverged{INF_MARK}"
        return Cell(agg.to_json(), text, number=agg.mean if rankable else None)

    def mark_best_in_column(self, key: str, metric: str) -> None:
        self._mark([row[key] for row in self.rows if key in row], metric)

    def mark_best_in_row(self, row: dict[str, Cell], keys: list[str], metric: str) -> None:
        self._mark([row[k] for k in keys if k in row], metric)

    def _mark(self, cells: list[Cell], metric: str) -> None:
        mark_best(cells, metric, self.flags)

    def footnotes(self) -> list[str]:
        notes = list(self.notes)
        if "agg" in self.flags:
            notes.append(AGG_NOTE)
        if "best" in self.flags:
            notes.append(BEST_NOTE)
        if "tie" in self.flags:
            notes.append(TIE_NOTE)
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
        ties: dict[str, list[str]] = {}
        first = self.columns[0].key
        for row in self.rows:
            for key, cell in row.items():
                if cell.best:
                    best.setdefault(key, []).append(str(row[first].value))
                if cell.tie:
                    ties.setdefault(key, []).append(str(row[first].value))
        return {
            "title": self.title,
            "columns": [c.key for c in self.columns],
            "labels": {c.key: c.label for c in self.columns},
            "rows": [{k: cell.value for k, cell in row.items()} for row in self.rows],
            "text": [{k: cell.text for k, cell in row.items()} for row in self.rows],
            "best": best,
            "ties": ties,
            "notes": self.footnotes(),
        }
