"""PNG charts for `launch.py report` (matplotlib, Agg; no pyplot global state).

From each run's history.json (the trainer's log_history): training-loss curves, eval-loss
curves per eval set, the learning-rate schedule; from metrics.json: per-eval-set perplexity
bars. Each run keeps one colour in every chart. A run whose loss became non-finite ends its
curve with an ✕ and a "diverged" label; its perplexity bar is hatched and labelled, never
drawn as a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from trainyard.evaluation.consistency import as_number
from trainyard.metrics import canonical
from trainyard.report_tables import fmt_number

if TYPE_CHECKING:
    from trainyard.report import RunResult

DPI = 110
# Runs with near-identical curves would hide each other: each run also gets its own dash.
STYLES = ("-", "--", "-.", ":")
LOG_SCALE_RATIO = 20.0  # use a log axis when max / min of the plotted values exceeds this


@dataclass
class Chart:
    name: str
    path: Path
    title: str
    notes: list[str] = field(default_factory=list)


@dataclass
class Curve:
    steps: list[float]
    values: list[float]
    diverged_at: float | None = None  # first step with a non-finite value


def colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _curve(points: list[tuple[float, Any]]) -> Curve:
    """Finite points up to the first non-finite one (where the run diverged)."""
    steps, values = [], []
    for step, raw in sorted(points, key=lambda p: p[0]):
        v = as_number(raw)
        if v is None:
            continue
        if not math.isfinite(v):
            return Curve(steps, values, diverged_at=step)
        steps.append(step)
        values.append(v)
    return Curve(steps, values)


def train_curves(history: list[dict[str, Any]], key: str) -> Curve:
    """A training-log series (``loss``, ``learning_rate``) by optimizer step."""
    pts = [(float(h["step"]), h[key]) for h in history if key in h and "step" in h and not any(k.startswith("eval_") for k in h)]
    return _curve(pts)


def eval_curves(history: list[dict[str, Any]], sets: list[str], default_set: str) -> dict[str, Curve]:
    """{eval set: eval-loss curve}; 'eval_loss' (a single eval set) maps to ``default_set``."""
    pts: dict[str, list[tuple[float, Any]]] = {}
    for h in history:
        if "step" not in h:
            continue
        for k, v in h.items():
            if k.startswith("eval_") and k.endswith("_loss"):
                name = canonical(k, sets, default_set)  # eval/<set>/loss
                parts = name.split("/")
                if len(parts) == 3 and parts[2] == "loss":
                    pts.setdefault(parts[1], []).append((float(h["step"]), v))
    return {s: _curve(p) for s, p in pts.items()}


def _label(r: RunResult) -> str:
    return r.name if r.state == "completed" else f"{r.name} ({r.state})"


def _log_if_spread(ax: Any, values: list[float]) -> bool:
    pos = [v for v in values if v > 0 and math.isfinite(v)]
    if pos and max(pos) / min(pos) > LOG_SCALE_RATIO:
        ax.set_yscale("log")
        return True
    return False


def _legend(fig: Figure, ax: Any, n: int) -> None:
    if n == 0:
        return
    if n <= 6:
        ax.legend(fontsize=8, frameon=True)
    else:  # many runs: keep the plot readable, put the legend beside it
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _step_axis(ax: Any) -> None:
    """Optimizer steps are whole numbers; plain loss values (no '+6.902' offset)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimizer step")
    if ax.get_yscale() == "linear":
        ax.ticklabel_format(axis="y", useOffset=False)


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")


def _mark_divergence(ax: Any, curve: Curve, colour: Any) -> None:
    if curve.diverged_at is None:
        return
    if curve.steps:
        x, y = curve.steps[-1], curve.values[-1]
        ax.plot([x], [y], marker="X", markersize=10, color=colour, markeredgecolor="black", zorder=5)
        ax.annotate(f"diverged (step {curve.diverged_at:g})", (x, y), textcoords="offset points", xytext=(6, 6),
                    fontsize=8, color=colour, fontweight="bold")


def chart_train_loss(results: list[RunResult], cols: list[Any], path: Path) -> Chart | None:
    curves = [(r, c, train_curves(r.history, "loss")) for r, c in zip(results, cols, strict=True)]
    curves = [(r, c, cv) for r, c, cv in curves if cv.steps or cv.diverged_at is not None]
    if not curves:
        return None
    fig = Figure(figsize=(8, 4.8))
    ax = fig.add_subplot()
    for k, (r, c, cv) in enumerate(curves):
        ax.plot(cv.steps, cv.values, color=c, linewidth=1.6, linestyle=STYLES[k % len(STYLES)], label=_label(r),
                marker="o" if len(cv.steps) < 15 else None, markersize=3)
        _mark_divergence(ax, cv, c)
    _log_if_spread(ax, [v for _, _, cv in curves for v in cv.values])
    ax.set_title("Training loss")
    _step_axis(ax)
    ax.set_ylabel("training loss (nats / token)")
    ax.grid(True, alpha=0.3)
    _legend(fig, ax, len(curves))
    _save(fig, path)
    return Chart("train_loss", path, "Training loss", _absent_note(results, {r.name for r, _, _ in curves}, "no training-loss history"))


def chart_eval_loss(results: list[RunResult], cols: list[Any], sets: list[str], path: Path) -> Chart | None:
    per_run = {r.name: eval_curves(r.history, sorted(set(sets) | set(r.eval_set_order())), r.spec.eval.held_out_name) for r in results}
    names = [s for s in sets if any(s in c for c in per_run.values())]
    names += sorted({s for c in per_run.values() for s in c} - set(names))
    if not names:
        return None
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = Figure(figsize=(4.6 * ncols if len(names) > 1 else 7, 3.6 * nrows if len(names) > 1 else 4.2))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    shown: set[str] = set()
    for i, s in enumerate(names):
        ax = axes[i // ncols][i % ncols]
        values = []
        for k, (r, c) in enumerate(zip(results, cols, strict=True)):
            cv = per_run[r.name].get(s)
            if cv is None or (not cv.steps and cv.diverged_at is None):
                continue
            shown.add(r.name)
            ax.plot(cv.steps, cv.values, color=c, marker="o", markersize=4, linewidth=1.6,
                    linestyle=STYLES[k % len(STYLES)], label=_label(r))
            _mark_divergence(ax, cv, c)
            values += cv.values
        _log_if_spread(ax, values)
        ax.set_title(f"Eval loss: {s}" if len(names) > 1 else f"Eval loss during training ({s})")
        _step_axis(ax)
        ax.set_ylabel("eval loss (nats / token)")
        ax.grid(True, alpha=0.3)
    for j in range(len(names), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=8, frameon=False)
    if len(names) > 1:
        fig.suptitle("Eval loss during training, per eval set", fontsize=12)
    fig.tight_layout()
    _save(fig, path)
    return Chart("eval_loss", path, "Eval loss during training", _absent_note(results, shown, "no eval-loss history"))


def chart_eval_perplexity(results: list[RunResult], cols: list[Any], sets: list[str], path: Path) -> Chart | None:
    """Grouped bars: eval sets on x, one bar per run; non-finite bars hatched and labelled."""
    if not sets:
        return None
    runs = [(r, c) for r, c in zip(results, cols, strict=True) if any(f"eval/{s}/perplexity" in r.metrics for s in sets)]
    if not runs:
        return None
    vals = {(r.name, s): as_number(r.metrics.get(f"eval/{s}/perplexity")) for r, _ in runs for s in sets}
    finite = [v for v in vals.values() if v is not None and math.isfinite(v)]
    fig = Figure(figsize=(max(6.5, 1.2 + len(sets) * (0.5 + 0.32 * len(runs))), 4.8))
    ax = fig.add_subplot()
    log = _log_if_spread(ax, finite)
    top = (max(finite) if finite else 1.0) * (3.0 if log else 1.15)
    bottom = (min(finite) / 2.0) if (log and finite) else 0.0
    width = 0.8 / len(runs)
    notes = []
    for j, (r, c) in enumerate(runs):
        for i, s in enumerate(sets):
            x = i - 0.4 + width * (j + 0.5)
            v = vals[(r.name, s)]
            if v is None:
                continue
            label = _label(r) if i == 0 or all(vals[(r.name, t)] is None for t in sets[:i]) else None
            if math.isfinite(v):
                ax.bar(x, v - bottom if log else v, width * 0.92, bottom=bottom if log else 0, color=c, label=label)
                if len(runs) * len(sets) <= 24:
                    ax.annotate(fmt_number("eval/x/perplexity", v), (x, v), textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)
            else:
                word = "n/a" if math.isnan(v) else "diverged"
                ax.bar(x, top - bottom, width * 0.92, bottom=bottom, color="white", edgecolor=c, hatch="///", linewidth=1.2, label=label)
                ax.text(x, bottom + (top - bottom) * 0.5 if not log else math.sqrt(top * bottom), word, rotation=90,
                        ha="center", va="center", fontsize=8, color="black", fontweight="bold",
                        bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
                notes.append(f"{r.name} on {s}: {word} (value {'nan' if math.isnan(v) else 'inf'}); drawn as a hatched bar, not to scale.")
    ax.set_ylim(bottom if log else 0, top)
    ax.set_xticks(range(len(sets)), sets)
    ax.set_xlabel("eval set")
    ax.set_ylabel("perplexity" + (" (log scale)" if log else "") + ", lower is better")
    ax.set_title("Final perplexity per eval set")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _save(fig, path)
    return Chart("eval_perplexity", path, "Final perplexity per eval set", notes + _absent_note(results, {r.name for r, _ in runs}, "no eval perplexity yet"))


def chart_lr(results: list[RunResult], cols: list[Any], path: Path) -> Chart | None:
    curves = [(r, c, train_curves(r.history, "learning_rate")) for r, c in zip(results, cols, strict=True)]
    curves = [(r, c, cv) for r, c, cv in curves if cv.steps]
    if not curves:
        return None
    fig = Figure(figsize=(8, 4.2))
    ax = fig.add_subplot()
    for k, (r, c, cv) in enumerate(curves):
        ax.plot(cv.steps, cv.values, color=c, linewidth=1.8, linestyle=STYLES[k % len(STYLES)], label=_label(r))
    peaks = [max(cv.values) for _, _, cv in curves if max(cv.values) > 0]
    if peaks and max(peaks) / min(peaks) > 5:
        # peaks orders of magnitude apart: a log axis keeps the small-lr runs' shapes visible;
        # the decay towards 0 runs off the bottom of the axis
        ax.set_yscale("log")
        ax.set_ylim(min(peaks) / 100, max(peaks) * 2)
    ax.set_title("Learning-rate schedule")
    _step_axis(ax)
    ax.set_ylabel("learning rate" + (" (log scale)" if ax.get_yscale() == "log" else ""))
    if ax.get_yscale() == "linear":
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3), useOffset=False)
    ax.grid(True, alpha=0.3)
    _legend(fig, ax, len(curves))
    _save(fig, path)
    return Chart("lr_schedule", path, "Learning-rate schedule", _absent_note(results, {r.name for r, _, _ in curves}, "no learning-rate history"))


def _absent_note(results: list[RunResult], shown: set[str], what: str) -> list[str]:
    absent = [f"{r.name} ({r.state})" for r in results if r.name not in shown]
    return [f"Not shown ({what}): {', '.join(absent)}."] if absent else []


def write_charts(results: list[RunResult], sets: list[str], out_dir: Path) -> list[Chart]:
    """Every chart the runs have data for, as PNGs in ``out_dir``; stale ones are removed."""
    out_dir = Path(out_dir)
    cols = colours(len(results))
    charts = [
        chart_train_loss(results, cols, out_dir / "train_loss.png"),
        chart_eval_loss(results, cols, sets, out_dir / "eval_loss.png"),
        chart_eval_perplexity(results, cols, sets, out_dir / "eval_perplexity.png"),
        chart_lr(results, cols, out_dir / "lr_schedule.png"),
    ]
    made = [c for c in charts if c is not None]
    for name in ("train_loss", "eval_loss", "eval_perplexity", "lr_schedule"):
        stale = out_dir / f"{name}.png"
        if stale.exists() and all(c.name != name for c in made):
            stale.unlink()  # a chart from an earlier report that no longer has data
    return made
