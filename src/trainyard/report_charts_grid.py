"""PNG charts of final metrics: heatmaps over factor pairs, metric against one factor, and
per-eval-set perplexity as Δ vs the baseline (or on an axis that does not start at zero)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from trainyard.contract import eval_metric
from trainyard.evaluation.consistency import as_number
from trainyard.report_charts import Chart, colours, save
from trainyard.report_grid import Pivot, Slice
from trainyard.report_inputs import Group
from trainyard.report_tables import direction, fmt_number, fmt_spread, is_fraction


def _shown(metric: str) -> str:
    return f"eval/avg/{metric[4:]}" if metric.startswith("avg/") else metric


def _scale(metric: str) -> float:
    return 100.0 if is_fraction(metric) else 1.0


def chart_heatmap(p: Pivot, metric: str, metric_label: str, sets: list[str], path: Path) -> Chart:
    """Cells coloured by the mean (better = darker), annotated mean ± std (n); empty cells grey."""
    import numpy as np

    shown = _shown(metric)
    grid = np.full((len(p.row_values), len(p.col_values)), np.nan)
    text: dict[tuple[int, int], str] = {}
    for (i, j), g in p.cells.items():
        a = g.agg(metric, sets)
        if a.n and g.rankable:
            grid[i, j] = a.mean * _scale(metric)
        if a.n:
            t = fmt_number(shown, a.mean)
            if a.std is not None:
                t += f"\n± {fmt_spread(shown, a.std)}"
            t += (f"\n(n={a.n})" if len(g.runs) > 1 else "") + ("" if g.rankable else "\nnot ranked")
        else:
            t = g.missing_text
        text[(i, j)] = t
    fig = Figure(figsize=(1.8 + 1.7 * len(p.col_values), 1.4 + 1.0 * len(p.row_values)))
    ax = fig.add_subplot()
    import matplotlib

    cmap = matplotlib.colormaps["viridis" if direction(shown) == "max" else "viridis_r"].with_extremes(bad="#dddddd")  # empty cells grey
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto")
    finite = grid[np.isfinite(grid)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(len(p.row_values)):
        for j in range(len(p.col_values)):
            v = grid[i, j]
            dark = math.isfinite(v) and ((v > mid) == (direction(shown) != "max"))
            ax.text(j, i, text.get((i, j), "—"), ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    if finite.size >= 2:
        best = np.nanargmin(grid) if direction(shown) != "max" else np.nanargmax(grid)
        if np.sum(grid == grid.flat[best]) == 1:  # a unique best cell gets a frame, ties none
            bi, bj = divmod(int(best), grid.shape[1])
            ax.add_patch(__import__("matplotlib").patches.Rectangle((bj - 0.5, bi - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
    ax.set_xticks(range(len(p.col_values)), [p.cols.text(v) for v in p.col_values])
    ax.set_yticks(range(len(p.row_values)), [p.rows.text(v) for v in p.row_values])
    ax.set_xlabel(p.cols.label)
    ax.set_ylabel(p.rows.label)
    ax.set_title(f"{metric_label}: {p.rows.label} × {p.cols.label}", fontsize=10)
    bar = fig.colorbar(im, ax=ax)
    bar.set_label(metric_label + (" (%)" if is_fraction(metric) else ""))
    save(fig, path)
    notes = ["Red frame: the unique best cell. Grey: no finished run in that cell."]
    if p.fixed:
        notes.append("Other parameters fixed at " + ", ".join(f"{k}={v}" for k, v in p.fixed.items()) + ".")
    return Chart(path.stem, path, f"Heatmap: {metric_label}, {p.rows.label} × {p.cols.label}", notes)


def chart_slices(slices: list[Slice], metric: str, metric_label: str, sets: list[str], base: Group | None, path: Path) -> Chart | None:
    """One panel per factor: the metric against the factor's values (mean ± std for seeds)."""
    usable = [s for s in slices if sum(1 for _, g in s.points if g.agg(metric, sets).n) >= 2]
    if not usable:
        return None
    scale = _scale(metric)
    fig = Figure(figsize=(4.4 * len(usable), 3.8))
    axes = fig.subplots(1, len(usable), squeeze=False)[0]
    for ax, s in zip(axes, usable, strict=True):
        xs, ys, es, labels, ranked, is_base = [], [], [], [], [], []
        for k, (v, g) in enumerate(s.points):
            a = g.agg(metric, sets)
            if not a.n:
                continue
            x = (v[0] if isinstance(v, tuple) else v) if s.numeric else k
            xs.append(float(x))
            ys.append(a.mean * scale)
            es.append((a.std or 0.0) * scale)
            labels.append(s.factor.text(v))
            ranked.append(g.rankable)
            is_base.append(g is base)
        ax.errorbar(xs, ys, yerr=es if any(es) else None, color="tab:blue", marker="o", linewidth=1.6, capsize=4)
        for x, y, r, b in zip(xs, ys, ranked, is_base, strict=True):
            if b:
                ax.plot([x], [y], marker="*", markersize=14, color="gold", markeredgecolor="black", zorder=5)
            if not r:
                ax.plot([x], [y], marker="o", markersize=10, markerfacecolor="white", color="tab:red", zorder=4)
        pos = [x for x in xs if x > 0]
        if s.numeric and len(pos) == len(xs) and (s.factor.log_scale or max(pos) / min(pos) > 20):
            ax.set_xscale("log")
        if s.numeric:
            ax.set_xticks(xs, labels, rotation=30 if len(xs) > 4 else 0)
            ax.minorticks_off()
        else:
            ax.set_xticks(range(len(s.points)), [s.factor.text(v) for v, _ in s.points])
        ax.set_xlabel(s.factor.label)
        ax.set_ylabel(metric_label + (" (%)" if scale != 1 else ""))
        ax.ticklabel_format(axis="y", useOffset=False) if ax.get_yscale() == "linear" else None
        ax.grid(True, alpha=0.3)
        fixed = ", ".join(f"{k}={v}" for k, v in s.fixed.items())
        ax.set_title(f"vs {s.factor.label}" + (f"\n({fixed})" if fixed and len(fixed) < 60 else ""), fontsize=9)
    fig.suptitle(f"{metric_label} against each varied parameter", fontsize=11)
    fig.tight_layout()
    save(fig, path)
    notes = ["Each panel varies one parameter, the others at the baseline's (else the most common) values; "
             "error bars: ± std over seeds; ★ the baseline; hollow red: not ranked (unfinished, diverged or stale)."]
    return Chart("metric_vs_parameter", path, f"{metric_label} against each varied parameter", notes)


def chart_eval_bars(groups: list[Group], sets: list[str], base: Group | None, path: Path) -> Chart | None:
    """Per-set perplexity: Δ % vs the baseline when there is one, else bars from a non-zero floor."""
    measure = "perplexity"
    if not sets or not any(eval_metric(s, measure) in r.metrics for s in sets for g in groups for r in g.runs):
        return None
    if base is not None and base.rankable and base.agg(eval_metric(sets[0], measure)).n and len(groups) > 1:
        return _delta_bars(groups, sets, base, measure, path)
    return _absolute_bars(groups, sets, measure, path)


def _bars(ax: Any, groups: list[Group], sets: list[str], values: dict, errors: dict, raw: dict, floor: float, notes: list[str]) -> None:
    cols = colours(len(groups))
    width = 0.8 / len(groups)
    finite = [v for v in values.values() if v is not None and math.isfinite(v)]
    top = max(finite) if finite else 1.0
    for j, g in enumerate(groups):
        for i, s in enumerate(sets):
            x = i - 0.4 + width * (j + 0.5)
            v = values.get((g.name, s))
            first = all(values.get((g.name, t)) is None and raw.get((g.name, t)) is None for t in sets[:i])
            lab = g.name if first else None
            if v is not None and math.isfinite(v):
                ax.bar(x, v - floor, width * 0.9, bottom=floor, color=cols[j], label=lab,
                       yerr=errors.get((g.name, s)) or None, capsize=2, hatch=None if g.rankable else "..",
                       edgecolor="black" if not g.rankable else None)
            elif raw.get((g.name, s)) is not None:
                word = raw[(g.name, s)]
                ax.bar(x, (top - floor) * 0.6, width * 0.9, bottom=floor, color="white", edgecolor=cols[j], hatch="///", label=lab)
                ax.text(x, floor + (top - floor) * 0.3, word, rotation=90, ha="center", va="center", fontsize=8, fontweight="bold")
                notes.append(f"{g.name} on {s}: {word}; drawn as a hatched bar, not to scale.")
    ax.set_xticks(range(len(sets)), sets, rotation=30 if len(sets) > 5 else 0)
    ax.set_xlabel("eval set")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _absent(groups: list[Group], values: dict, raw: dict) -> list[str]:
    shown = {name for name, _ in (*values, *raw)}
    absent = [f"{g.name} ({g.state_text})" for g in groups if g.name not in shown]
    return [f"Not shown (no eval perplexity yet): {', '.join(absent)}."] if absent else []


def _nonfinite_word(g: Group, metric: str) -> str | None:
    for r in g.runs:
        v = as_number(r.metrics.get(metric))
        if v is not None and not math.isfinite(v):
            return "n/a" if math.isnan(v) else "diverged"
    return None


def _delta_bars(groups: list[Group], sets: list[str], base: Group, measure: str, path: Path) -> Chart:
    others = [g for g in groups if g is not base]
    values, errors, raw = {}, {}, {}
    for g in others:
        for s in sets:
            m = eval_metric(s, measure)
            a, b = g.agg(m) if g.rankable else _any_agg(g, m), base.agg(m)
            if a.n and b.n:
                values[(g.name, s)] = (a.mean - b.mean) / b.mean * 100
                if a.std is not None:
                    errors[(g.name, s)] = a.std / b.mean * 100
            elif (word := _nonfinite_word(g, m)) is not None:
                raw[(g.name, s)] = word
    fig = Figure(figsize=(max(6.5, 1.5 + len(sets) * (0.5 + 0.3 * len(others))), 4.6))
    ax = fig.add_subplot()
    notes: list[str] = []
    _bars(ax, others, sets, values, errors, raw, 0.0, notes)
    ax.axhline(0, color="black", linewidth=1.0)
    ax.set_ylabel(f"Δ perplexity vs {base.name} (%), lower is better")
    ax.set_title(f"Final perplexity per eval set: Δ vs the baseline {base.name}")
    save(fig, path)
    notes += _absent(others, values, raw)
    notes.insert(0, f"Bars: (perplexity − baseline) / baseline × 100 per eval set; 0 = the baseline {base.name}. "
                    "Dotted bars: not ranked (unfinished, diverged or stale). Absolute values: the Eval perplexity table.")
    return Chart("eval_perplexity", path, "Final perplexity per eval set (Δ vs baseline)", notes)


def _any_agg(g: Group, metric: str):
    """A non-rankable group's finite values, to draw (dotted), never to rank."""
    from trainyard.report_inputs import Agg

    vals = [as_number(r.metrics.get(metric)) for r in g.runs]
    return Agg([v for v in vals if v is not None and math.isfinite(v)])


def _absolute_bars(groups: list[Group], sets: list[str], measure: str, path: Path) -> Chart:
    values, errors, raw = {}, {}, {}
    for g in groups:
        for s in sets:
            m = eval_metric(s, measure)
            a = g.agg(m) if g.rankable else _any_agg(g, m)
            if a.n:
                values[(g.name, s)] = a.mean
                if a.std is not None:
                    errors[(g.name, s)] = a.std
            elif (word := _nonfinite_word(g, m)) is not None:
                raw[(g.name, s)] = word
    finite = [v for v in values.values() if math.isfinite(v)]
    fig = Figure(figsize=(max(6.5, 1.5 + len(sets) * (0.5 + 0.3 * len(groups))), 4.6))
    ax = fig.add_subplot()
    notes: list[str] = []
    lo, hi = (min(finite), max(finite)) if finite else (1.0, 2.0)
    log = lo > 0 and hi / lo > 20
    floor = lo / 1.5 if log else max(0.0, lo - 0.15 * (hi - lo or hi))
    _bars(ax, groups, sets, values, errors, raw, floor, notes)
    if log:
        ax.set_yscale("log")
    ax.set_ylim(floor, hi * (2.0 if log else 1.0) + (0 if log else 0.1 * (hi - floor)))
    ax.set_ylabel("perplexity" + (" (log scale)" if log else "") + ", lower is better")
    ax.set_title("Final perplexity per eval set")
    save(fig, path)
    notes += _absent(groups, values, raw)
    if floor > 0:
        notes.insert(0, f"The axis starts at {floor:.3g}, not at 0, so the differences between runs are visible.")
    return Chart("eval_perplexity", path, "Final perplexity per eval set", notes)
