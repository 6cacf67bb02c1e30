"""Grid views of a matrix: factors (varied keys), pivot tables over each crossed pair, slices.

A *factor* is a varied key, or several keys that always change together (``lora.r`` and
``lora.alpha`` in r16/a32 vs r32/a64). A pivot over factors A × B holds the seed groups
whose other factors sit at the reference values (the baseline's, else the most common), so
every cell is one experiment, never a mix. A pair is shown only when it is crossed (some
group changes both A and B); one-at-a-time factors get a slice (metric against the factor).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from trainyard.report_inputs import Group
from trainyard.report_sections import group_cell
from trainyard.report_tables import MISSING, Cell, Column, Table, fmt_param, mark_best, text_cell


@dataclass
class Factor:
    keys: list[str]
    label: str

    def value(self, g: Group) -> Any:
        vals = tuple(g.params.get(k) for k in self.keys)
        return vals[0] if len(vals) == 1 else vals

    def text(self, value: Any) -> str:
        if isinstance(value, tuple):
            return "/".join(fmt_param(v) for v in value)
        return fmt_param(value)

    @property
    def log_scale(self) -> bool:
        return self.keys[0].rsplit(".", 1)[-1] in ("lr", "learning_rate", "weight_decay")


def _hashable(v: Any) -> Any:
    return repr(v)


def _sort_key(v: Any) -> tuple:
    first = v[0] if isinstance(v, tuple) else v
    if isinstance(first, bool) or first is None:
        return (1, str(first))
    if isinstance(first, (int, float)):
        return (0, float(first))
    return (1, str(first))


def factors(groups: list[Group], keys: list[str], labels: dict[str, str]) -> list[Factor]:
    """Varied keys with ≥ 2 values among the groups; keys that co-vary one-to-one are merged."""
    varied = [k for k in keys if len({_hashable(g.params.get(k)) for g in groups}) > 1]
    out: list[Factor] = []
    used: set[str] = set()
    for k in varied:
        if k in used:
            continue
        members = [k]
        for other in varied:
            if other != k and other not in used and _one_to_one(groups, k, other):
                members.append(other)
        used.update(members)
        out.append(Factor(members, "/".join(labels.get(m, m) for m in members)))
    return out


def _one_to_one(groups: list[Group], a: str, b: str) -> bool:
    pairs = {(_hashable(g.params.get(a)), _hashable(g.params.get(b))) for g in groups}
    return len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs})


def reference(groups: list[Group], fs: list[Factor], baseline: Group | None) -> dict[str, Any]:
    """Per factor label: the baseline's value, else the most common one (first on ties)."""
    ref: dict[str, Any] = {}
    for f in fs:
        if baseline is not None:
            ref[f.label] = f.value(baseline)
            continue
        counts: dict[Any, int] = {}
        firsts: dict[Any, Any] = {}
        for g in groups:
            v = f.value(g)
            counts[_hashable(v)] = counts.get(_hashable(v), 0) + 1
            firsts.setdefault(_hashable(v), v)
        ref[f.label] = firsts[max(counts, key=lambda h: counts[h])]
    return ref


def _at_reference(g: Group, fs: list[Factor], ref: dict[str, Any], free: list[Factor]) -> bool:
    return all(_hashable(f.value(g)) == _hashable(ref[f.label]) for f in fs if f not in free)


@dataclass
class Pivot:
    rows: Factor
    cols: Factor
    row_values: list[Any]
    col_values: list[Any]
    cells: dict[tuple[int, int], Group]  # (row index, col index) -> group
    fixed: dict[str, Any]  # other factors' values (label -> value)

    @property
    def name(self) -> str:
        return f"pivot_{_slug(self.rows.label)}__{_slug(self.cols.label)}"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def pivots(groups: list[Group], fs: list[Factor], ref: dict[str, Any]) -> list[Pivot]:
    """One pivot per crossed pair of factors (the factor with more values as rows)."""
    out = []
    for a, b in itertools.combinations(fs, 2):
        members = [g for g in groups if _at_reference(g, fs, ref, [a, b])]
        crossed = any(_hashable(a.value(g)) != _hashable(ref[a.label]) and _hashable(b.value(g)) != _hashable(ref[b.label]) for g in members)
        if not crossed:
            continue
        rows, cols = (a, b) if len({_hashable(a.value(g)) for g in members}) >= len({_hashable(b.value(g)) for g in members}) else (b, a)
        rv = sorted({_hashable(rows.value(g)): rows.value(g) for g in members}.values(), key=_sort_key)
        cv = sorted({_hashable(cols.value(g)): cols.value(g) for g in members}.values(), key=_sort_key)
        cells = {}
        for g in members:
            i = [_hashable(v) for v in rv].index(_hashable(rows.value(g)))
            j = [_hashable(v) for v in cv].index(_hashable(cols.value(g)))
            cells.setdefault((i, j), g)
        fixed = {f.label: f.text(ref[f.label]) for f in fs if f not in (a, b)}
        out.append(Pivot(rows, cols, rv, cv, cells, fixed))
    return out


@dataclass
class Slice:
    factor: Factor
    points: list[tuple[Any, Group]]  # (factor value, group), sorted by value
    fixed: dict[str, Any]

    @property
    def numeric(self) -> bool:
        return all(isinstance(v[0] if isinstance(v, tuple) else v, (int, float)) and not isinstance(v, bool) for v, _ in self.points)


def slices(groups: list[Group], fs: list[Factor], ref: dict[str, Any], pivoted: list[Pivot]) -> list[Slice]:
    """Metric against each factor that is in no pivot (others at the reference)."""
    in_pivot = {p.rows.label for p in pivoted} | {p.cols.label for p in pivoted}
    out = []
    for f in fs:
        if f.label in in_pivot:
            continue
        pts = [(f.value(g), g) for g in groups if _at_reference(g, fs, ref, [f])]
        if len(pts) >= 2:
            out.append(Slice(f, sorted(pts, key=lambda p: _sort_key(p[0])), {o.label: o.text(ref[o.label]) for o in fs if o is not f}))
    return out


def pivot_table(p: Pivot, metric: str, metric_label: str, sets: list[str]) -> Table:
    """Rows × columns = the two factors' values; each cell the group's mean ± std (n)."""
    cols = [Column("row", f"{p.rows.label} \\ {p.cols.label}", align="left")]
    cols += [Column(f"c{j}", p.cols.text(v)) for j, v in enumerate(p.col_values)]
    t = Table(p.name, f"{metric_label}: {p.rows.label} × {p.cols.label}", cols)
    fixed = ", ".join(f"{k}={v}" for k, v in p.fixed.items())
    t.intro = f"{metric_label} of each ({p.rows.label}, {p.cols.label}) cell" + (f"; other parameters fixed at {fixed}" if fixed else "") + "."
    cells: list[Cell] = []
    for i, rv in enumerate(p.row_values):
        row = {"row": text_cell(p.rows.text(rv), _json(rv))}
        for j in range(len(p.col_values)):
            g = p.cells.get((i, j))
            row[f"c{j}"] = group_cell(t, g, metric, sets) if g is not None else Cell(None, MISSING)
            cells.append(row[f"c{j}"])
        t.rows.append(row)
    mark_best(cells, metric, t.flags)
    return t


def _json(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v

