"""PNG curves for `launch.py report` (matplotlib, Agg; no pyplot global state).

From each run's history.json: training loss, eval loss per eval set, the learning-rate
schedule and (DPO) reward accuracy / margin curves. Each run keeps one colour, dash and
marker in every chart, and later runs draw thinner on top, so runs with identical curves
stay visible. Loss axes carry the recipe's unit (CE in nats / token; DPO loss per pair);
the mixed-loss recipe plots CE, not its objective. A run whose loss became non-finite ends
its curve with an ✕ and a "diverged" label. Grid charts and bars: report_charts_grid.py.
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
from trainyard.report_inputs import common_loss_kind

if TYPE_CHECKING:
    from trainyard.report_inputs import RunResult

DPI = 110
STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
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


@dataclass(frozen=True)
class Style:
    """One run's look in every chart."""

    colour: Any
    dash: str
    marker: str
    width: float
    index: int
    count: int

    def kwargs(self, points: int) -> dict[str, Any]:
        # markers staggered per run so two identical curves never hide each other's markers
        every = max(1, points // 8)
        return {"color": self.colour, "linestyle": self.dash, "marker": self.marker, "linewidth": self.width,
                "markersize": 5 if points <= 30 else 4, "markevery": (self.index % every, every) if points > 12 else None,
                "markerfacecolor": "none" if self.index % 2 else self.colour, "alpha": 0.95}


def styles(n: int) -> list[Style]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [Style(cmap(i % cmap.N), STYLES[i % len(STYLES)], MARKERS[i % len(MARKERS)],
                  max(1.0, 2.6 - 1.4 * i / max(1, n - 1)), i, n) for i in range(n)]


def colours(n: int) -> list[Any]:
    return [s.colour for s in styles(n)]


def _curve(points: list[tuple[float, Any]]) -> Curve:
    """Finite points up to the first non-finite one (where the run diverged); one per step."""
    by_step: dict[float, Any] = {}
    for step, raw in points:
        by_step[step] = raw  # a resumed run may log a step twice: the last one wins
    steps, values = [], []
    for step, raw in sorted(by_step.items()):
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


def eval_curves(history: list[dict[str, Any]], sets: list[str], default_set: str, measure: str = "loss") -> dict[str, Curve]:
    """{eval set: curve of eval/<set>/<measure>}; 'eval_loss' (one eval set) maps to ``default_set``."""
    pts: dict[str, list[tuple[float, Any]]] = {}
    for h in history:
        if "step" not in h:
            continue
        for k, v in h.items():
            if k.startswith("eval_"):
                parts = canonical(k, sets, default_set).split("/", 2)
                if len(parts) == 3 and parts[2] == measure:
                    pts.setdefault(parts[1], []).append((float(h["step"]), v))
    return {s: _curve(p) for s, p in pts.items()}


def label(r: RunResult) -> str:
    if r.stale:
        return f"{r.name} (stale)"
    return r.name if r.state == "completed" else f"{r.name} ({r.state})"


def log_if_spread(ax: Any, values: list[float]) -> bool:
    pos = [v for v in values if v > 0 and math.isfinite(v)]
    if pos and len(pos) == len([v for v in values if math.isfinite(v)]) and max(pos) / min(pos) > LOG_SCALE_RATIO:
        ax.set_yscale("log")
        return True
    return False


def legend(ax: Any, n: int) -> None:
    if n == 0:
        return
    if n <= 6:
        ax.legend(fontsize=8, frameon=True)
    else:  # many runs: keep the plot readable, put the legend beside it
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def step_axis(ax: Any, steps: list[float]) -> None:
    """Optimizer steps are whole numbers: integer ticks, and room around a single point."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if steps:
        lo, hi = min(steps), max(steps)
        if hi - lo < 2:
            ax.set_xlim(lo - 1, hi + 1)
    ax.set_xlabel("optimizer step")
    if ax.get_yscale() == "linear":
        ax.ticklabel_format(axis="y", useOffset=False)


def save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")


def mark_divergence(ax: Any, curve: Curve, colour: Any) -> None:
    if curve.diverged_at is None or not curve.steps:
        return
    x, y = curve.steps[-1], curve.values[-1]
    ax.plot([x], [y], marker="X", markersize=10, color=colour, markeredgecolor="black", zorder=5)
    ax.annotate(f"diverged (step {curve.diverged_at:g})", (x, y), textcoords="offset points", xytext=(6, 6),
                fontsize=8, color=colour, fontweight="bold")


def absent_note(results: list[RunResult], shown: set[str], what: str) -> list[str]:
    absent = [f"{r.name} ({r.state})" for r in results if r.name not in shown]
    return [f"Not shown ({what}): {', '.join(absent)}."] if absent else []


def chart_train_loss(results: list[RunResult], sty: list[Style], path: Path) -> Chart | None:
    curves = [(r, s, train_curves(r.history, r.loss.train_key)) for r, s in zip(results, sty, strict=True)]
    curves = [(r, s, cv) for r, s, cv in curves if cv.steps or cv.diverged_at is not None]
    if not curves:
        return None
    kind = common_loss_kind([r for r, _, _ in curves])
    fig = Figure(figsize=(8, 4.8))
    ax = fig.add_subplot()
    for r, s, cv in curves:
        ax.plot(cv.steps, cv.values, label=label(r), **s.kwargs(len(cv.steps)))
        mark_divergence(ax, cv, s.colour)
    log_if_spread(ax, [v for _, _, cv in curves for v in cv.values])
    title = f"Training {kind.name}"
    ax.set_title(title)
    step_axis(ax, [x for _, _, cv in curves for x in cv.steps])
    ax.set_ylabel(f"training {kind.label}")
    ax.grid(True, alpha=0.3)
    legend(ax, len(curves))
    save(fig, path)
    notes = absent_note(results, {r.name for r, _, _ in curves}, "no training-loss history")
    if any(r.spec.recipe == "mixed_loss" for r, _, _ in curves):
        notes.append("Mixed loss: the curve is the CE part (logged as ce_loss), not the objective (1−α)·CE + α·cos.")
    return Chart("train_loss", path, title, notes)


def chart_eval_loss(results: list[RunResult], sty: list[Style], sets: list[str], path: Path) -> Chart | None:
    per_run = {r.name: eval_curves(r.history, sorted(set(sets) | set(r.eval_set_order())), r.spec.eval.held_out_name,
                                   r.loss.eval_measure) for r in results}
    names = [s for s in sets if any(s in c for c in per_run.values())]
    names += sorted({s for c in per_run.values() for s in c} - set(names))
    if not names:
        return None
    kind = common_loss_kind([r for r in results if per_run[r.name]])
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = Figure(figsize=(4.6 * ncols if len(names) > 1 else 7, 3.6 * nrows if len(names) > 1 else 4.2))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    shown: set[str] = set()
    for i, s in enumerate(names):
        ax = axes[i // ncols][i % ncols]
        values, steps = [], []
        for r, st in zip(results, sty, strict=True):
            cv = per_run[r.name].get(s)
            if cv is None or (not cv.steps and cv.diverged_at is None):
                continue
            shown.add(r.name)
            ax.plot(cv.steps, cv.values, label=label(r), **st.kwargs(len(cv.steps)))
            mark_divergence(ax, cv, st.colour)
            values += cv.values
            steps += cv.steps
        log_if_spread(ax, values)
        ax.set_title(f"Eval {kind.name}: {s}" if len(names) > 1 else f"Eval {kind.name} during training ({s})")
        step_axis(ax, steps)
        ax.set_ylabel(f"eval {kind.label}")
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
        fig.suptitle(f"Eval {kind.name} during training, per eval set", fontsize=12)
    fig.tight_layout()
    save(fig, path)
    return Chart("eval_loss", path, f"Eval {kind.name} during training", absent_note(results, shown, "no eval-loss history"))


def chart_lr(results: list[RunResult], sty: list[Style], path: Path) -> Chart | None:
    """The schedule as logged, warm-up included: linear axis, or symlog when peaks differ > 5×
    (a log axis would drop the zero learning rate of the first warm-up step)."""
    curves = [(r, s, train_curves(r.history, "learning_rate")) for r, s in zip(results, sty, strict=True)]
    curves = [(r, s, cv) for r, s, cv in curves if cv.steps]
    if not curves:
        return None
    fig = Figure(figsize=(8, 4.2))
    ax = fig.add_subplot()
    for r, s, cv in curves:
        ax.plot(cv.steps, cv.values, label=label(r), **s.kwargs(len(cv.steps)))
    peaks = [max(cv.values) for _, _, cv in curves if max(cv.values) > 0]
    notes = []
    if peaks and max(peaks) / min(peaks) > 5:
        linthresh = min(peaks) / 10
        ax.set_yscale("symlog", linthresh=linthresh, linscale=0.5)
        ax.set_ylim(0, max(peaks) * 2)
        notes.append(f"Symmetric-log axis: linear below {linthresh:.3g} so the warm-up from 0 stays visible, logarithmic above.")
    ax.set_title("Learning-rate schedule")
    step_axis(ax, [x for _, _, cv in curves for x in cv.steps])
    ax.set_ylabel("learning rate" + (" (symlog scale)" if ax.get_yscale() == "symlog" else ""))
    if ax.get_yscale() == "linear":
        ax.set_ylim(bottom=0)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3), useOffset=False)
    ax.grid(True, alpha=0.3)
    legend(ax, len(curves))
    save(fig, path)
    return Chart("lr_schedule", path, "Learning-rate schedule", notes + absent_note(results, {r.name for r, _, _ in curves}, "no learning-rate history"))


def chart_rewards(results: list[RunResult], sty: list[Style], path: Path) -> Chart | None:
    """DPO: reward accuracy and margin by step; training logs as lines, evaluations as big markers."""
    dpo = [(r, s) for r, s in zip(results, sty, strict=True) if r.spec.recipe == "dpo"]
    series = []
    for r, s in dpo:
        names = r.eval_set_order()
        tr = {m: train_curves(r.history, f"rewards/{m}") for m in ("accuracies", "margins")}
        ev = {m: next(iter(eval_curves(r.history, names, r.spec.eval.held_out_name, f"rewards/{m}").values()), Curve([], []))
              for m in ("accuracies", "margins")}
        if any(c.steps for c in (*tr.values(), *ev.values())):
            series.append((r, s, tr, ev))
    if not series:
        return None
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    steps: list[float] = []
    for ax, m, title in ((axes[0], "accuracies", "reward accuracy"), (axes[1], "margins", "reward margin")):
        for r, s, tr, ev in series:
            if tr[m].steps:
                ax.plot(tr[m].steps, tr[m].values, label=f"{label(r)} (train)", **s.kwargs(len(tr[m].steps)))
            if ev[m].steps:
                ax.plot(ev[m].steps, ev[m].values, linestyle="none", marker=s.marker, markersize=9, color=s.colour,
                        markeredgecolor="black", label=f"{label(r)} (eval)")
            steps += tr[m].steps + ev[m].steps
        ax.set_title(f"DPO {title}")
        ax.set_ylabel(title + (" (share of pairs)" if m == "accuracies" else " (chosen − rejected reward)"))
        ax.grid(True, alpha=0.3)
        if m == "accuracies":
            ax.set_ylim(-0.05, 1.05)
            ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
        else:
            ax.axhline(0.0, color="grey", linewidth=0.8, linestyle=":")
        step_axis(ax, steps)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=8, frameon=False)
    fig.tight_layout()
    save(fig, path)
    notes = ["Lines: training logs (each averages the steps since the previous log); large markers: evaluations on the held-out pairs."]
    return Chart("dpo_rewards", path, "DPO reward accuracy and margin", notes + absent_note([r for r, _ in dpo], {r.name for r, *_ in series}, "no reward logs"))


CURVE_CHARTS = ("train_loss", "eval_loss", "lr_schedule", "dpo_rewards")


def write_curve_charts(results: list[RunResult], sets: list[str], out_dir: Path) -> list[Chart]:
    sty = styles(len(results))
    charts = [
        chart_train_loss(results, sty, out_dir / "train_loss.png"),
        chart_eval_loss(results, sty, sets, out_dir / "eval_loss.png"),
        chart_lr(results, sty, out_dir / "lr_schedule.png"),
        chart_rewards(results, sty, out_dir / "dpo_rewards.png"),
    ]
    return [c for c in charts if c is not None]
