"""Consistency of one run across several eval sets, as the studies report it.

For the per-set values of one measure (perplexity or loss) of one run:

- ``range``: max - min
- ``std``: population standard deviation (the sets are the whole population, not a sample)
- ``relative_spread_pct``: (max - min) / mean * 100

Non-finite members (a diverged set's ``inf``/``nan``, stored as strings in metrics.json) are
excluded and named, never averaged in. With fewer than two finite members the statistics are
``None`` and ``reason`` says why.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

MEASURES = ("perplexity", "loss")


def as_number(value: Any) -> float | None:
    """A metric value as float: numbers as is, "inf"/"-inf"/"nan" strings as their floats.

    Returns None for anything else (missing, bools, other strings), so callers can tell
    "not measured" (None) from "measured but non-finite" (inf/nan).
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in ("inf", "+inf", "-inf", "nan", "infinity", "-infinity"):
        return float(value.strip().lower())
    return None


@dataclass(frozen=True)
class Spread:
    """Spread of one measure over the eval sets of one run."""

    measure: str
    members: dict[str, float]  # the finite values used, by set name
    excluded: dict[str, str] = field(default_factory=dict)  # set name -> "inf" / "nan"
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    range: float | None = None
    std: float | None = None
    relative_spread_pct: float | None = None
    reason: str | None = None  # why the statistics are None (or partly None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def spread(values: Mapping[str, Any], measure: str = "perplexity") -> Spread:
    """Spread statistics of ``{set_name: value}``; values may be floats or "inf"/"nan" strings.

    Missing values (None) are ignored: a set the run did not report is not a member.
    """
    members: dict[str, float] = {}
    excluded: dict[str, str] = {}
    for name, raw in values.items():
        v = as_number(raw)
        if v is None:
            continue
        if math.isfinite(v):
            members[name] = v
        else:
            excluded[name] = "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if len(members) < 2:
        why = f"needs at least 2 finite eval sets, has {len(members)}"
        if excluded:
            why += f" (non-finite: {', '.join(sorted(excluded))})"
        return Spread(measure, members, excluded, reason=why)

    vals = list(members.values())
    lo, hi = min(vals), max(vals)
    mean = math.fsum(vals) / len(vals)
    rel = None
    reason = None
    if mean != 0:
        rel = (hi - lo) / mean * 100.0
    else:
        reason = "relative spread undefined: the mean is 0"
    return Spread(
        measure,
        members,
        excluded,
        min=lo,
        max=hi,
        mean=mean,
        range=hi - lo,
        std=statistics.pstdev(vals),
        relative_spread_pct=rel,
        reason=reason,
    )


def eval_set_values(metrics: Mapping[str, Any], measure: str) -> dict[str, Any]:
    """``{set: value}`` of ``eval/<set>/<measure>`` in a flat metrics dict (raw values)."""
    out: dict[str, Any] = {}
    suffix = "/" + measure
    for key, value in metrics.items():
        if key.startswith("eval/") and key.endswith(suffix):
            name = key[len("eval/"): -len(suffix)]
            if name and "/" not in name:
                out[name] = value
    return out


def run_consistency(metrics: Mapping[str, Any], measures: tuple[str, ...] = MEASURES) -> dict[str, Spread]:
    """Spread of each measure over every eval set a run's final metrics report."""
    return {m: spread(eval_set_values(metrics, m), m) for m in measures}
