"""Per-run progress from history.json and metrics.json: how far, how fast, where it was best.

- progress table: best eval step / total, train–eval gap at the end, epochs completed,
  wall time, training time, steps / hour, tokens seen;
- eval progression per run: every evaluation's loss (and perplexity for CE recipes), with the
  improvement over the first evaluation;
- DPO: reward accuracy and margin at the first log → the last (training) and the first
  eval → the final eval (held-out pairs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from trainyard.contract import (
    TRAIN_RUNTIME,
    TRAIN_TOKENS,
    WALL_TIME,
    eval_metric,
    parse_eval_metric,
)
from trainyard.evaluation.consistency import as_number
from trainyard.metrics import canonical
from trainyard.report_inputs import RunResult
from trainyard.report_tables import MISSING, Cell, Column, Table, fmt_number, fmt_pct, text_cell

REWARD_ACC = "rewards/accuracies"
REWARD_MARGIN = "rewards/margins"


def _is_eval(h: dict[str, Any]) -> bool:
    return any(k.startswith("eval_") for k in h)


def train_points(r: RunResult, key: str) -> list[tuple[int, float]]:
    """(step, value) of a training-log key, finite values only, once per step (last wins)."""
    pts: dict[int, float] = {}
    for h in r.history:
        if key in h and "step" in h and not _is_eval(h):
            v = as_number(h[key])
            if v is not None and math.isfinite(v):
                pts[int(h["step"])] = v
    return sorted(pts.items())


def eval_points(r: RunResult, measure: str) -> dict[str, list[tuple[int, float]]]:
    """{eval set: [(step, value)]} of eval/<set>/<measure> in history.json (finite only)."""
    names = r.eval_set_order()
    out: dict[str, dict[int, float]] = {}
    for h in r.history:
        if "step" not in h or not _is_eval(h):
            continue
        for k, raw in h.items():
            if not k.startswith("eval_"):
                continue
            parsed = parse_eval_metric(canonical(k, names, r.spec.eval.held_out_name))
            v = as_number(raw)
            if parsed and parsed[1] == measure and v is not None and math.isfinite(v):
                out.setdefault(parsed[0], {})[int(h["step"])] = v
    ordered = [s for s in names if s in out] + sorted(set(out) - set(names))
    return {s: sorted(out[s].items()) for s in ordered}


def total_steps(r: RunResult) -> int | None:
    if isinstance(r.status.get("max_steps"), int) and r.status["max_steps"] > 0:
        return r.status["max_steps"]
    steps = [int(h["step"]) for h in r.history if isinstance(h.get("step"), (int, float))]
    return max(steps) if steps else None


def steps_done(r: RunResult) -> int | None:
    steps = [int(h["step"]) for h in r.history if isinstance(h.get("step"), (int, float))]
    if steps:
        return max(steps)
    return r.status.get("step") if isinstance(r.status.get("step"), int) else None


@dataclass
class Progress:
    best_step: int | None
    best_set: str | None
    best_loss: float | None
    total: int | None
    done: int | None
    gap: float | None  # final eval loss - last training loss (same loss kind)
    epochs: float | None
    wall_s: float | None
    train_s: float | None
    steps_per_hour: float | None
    tokens: float | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def progress(r: RunResult) -> Progress:
    kind = r.loss
    evals = eval_points(r, kind.eval_measure)
    best_set = next(iter(evals), None)
    best_step = best_loss = None
    if best_set:
        best_step, best_loss = min(evals[best_set], key=lambda p: (p[1], p[0]))
    last_train = train_points(r, kind.train_key)
    final_eval = as_number(r.metrics.get(eval_metric(best_set, "loss"))) if best_set else None
    if final_eval is None and best_set:
        final_eval = evals[best_set][-1][1]
    gap = None
    if last_train and final_eval is not None and math.isfinite(final_eval):
        gap = final_eval - last_train[-1][1]
    epochs = [as_number(h.get("epoch")) for h in r.history if h.get("epoch") is not None]
    epochs = [e for e in epochs if e is not None and math.isfinite(e)]
    wall = as_number(r.metrics.get(WALL_TIME))
    st = r.status
    if wall is None and isinstance(st.get("started_at"), (int, float)) and isinstance(st.get("finished_at"), (int, float)):
        wall = float(st["finished_at"] - st["started_at"])
    train_s = as_number(r.metrics.get(TRAIN_RUNTIME))
    done = steps_done(r)
    sph = done / (train_s / 3600) if done and train_s else None
    tokens = as_number(r.metrics.get(TRAIN_TOKENS))
    if tokens is None:
        seen = [as_number(h.get("num_input_tokens_seen") or h.get("num_tokens")) for h in r.history if not _is_eval(h)]
        seen = [t for t in seen if t is not None]
        tokens = seen[-1] if seen else None
    return Progress(best_step, best_set, best_loss, total_steps(r), done, gap, max(epochs) if epochs else None,
                    wall, train_s, sph, tokens)


def fmt_duration(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def progress_table(results: list[RunResult]) -> Table:
    cols = [
        Column("run", "run", align="left"),
        Column("steps", "steps done / total"),
        Column("best_eval_step", "best eval step / total"),
        Column("gap", "train–eval gap (end)"),
        Column("epochs", "epochs"),
        Column("wall", "wall time"),
        Column("train_time", "training time"),
        Column("steps_per_hour", "steps / hour"),
        Column("tokens", "tokens seen"),
    ]
    t = Table("progress", "Per-run progress", cols)
    t.intro = (
        "Best eval step = the evaluation with the lowest eval loss (first eval set); train–eval gap = "
        "final eval loss − last logged training loss (positive: eval is worse than train); steps / hour "
        "over the training time (all segments)."
    )
    for r in results:
        p = progress(r)
        miss = r.missing_text if r.state != "completed" else MISSING
        row = {"run": text_cell(r.name)}
        row["steps"] = Cell([p.done, p.total], f"{p.done} / {p.total}") if p.done is not None and p.total else Cell(None, miss)
        if p.best_step is not None:
            where = f" ({p.best_set})" if len(r.eval_set_order()) > 1 else ""
            row["best_eval_step"] = Cell({"step": p.best_step, "total": p.total, "set": p.best_set, "loss": p.best_loss},
                                         f"{p.best_step} / {p.total}{where}")
        else:
            row["best_eval_step"] = Cell(None, miss)
        row["gap"] = Cell(p.gap, _signed(p.gap)) if p.gap is not None else Cell(None, miss)
        row["epochs"] = Cell(p.epochs, f"{p.epochs:.2f}") if p.epochs is not None else Cell(None, miss)
        row["wall"] = Cell(p.wall_s, fmt_duration(p.wall_s)) if p.wall_s is not None else Cell(None, miss)
        row["train_time"] = Cell(p.train_s, fmt_duration(p.train_s)) if p.train_s is not None else Cell(None, miss)
        row["steps_per_hour"] = Cell(p.steps_per_hour, f"{p.steps_per_hour:,.0f}") if p.steps_per_hour is not None else Cell(None, miss)
        row["tokens"] = Cell(p.tokens, f"{int(p.tokens):,}") if p.tokens is not None else Cell(None, miss)
        t.rows.append(row)
    units = sorted({r.loss.label for r in results})
    t.notes.append("Loss units: " + "; ".join(units) + ".")
    return t


def _signed(v: float) -> str:
    return f"{v:+.4f}"


def eval_progression_table(r: RunResult, max_sets: int = 3) -> Table | None:
    """Every evaluation of one run: loss (+ perplexity for CE) per set, improvement vs the first."""
    kind = r.loss
    evals = eval_points(r, kind.eval_measure)
    if not evals:
        return None
    sets = list(evals)[:max_sets]
    steps = sorted({s for name in sets for s, _ in evals[name]})
    cols = [Column("step", "step")]
    for name in sets:
        cols.append(Column(f"{name}/loss", f"{name} {kind.name}"))
        if kind.cross_entropy:
            cols.append(Column(f"{name}/perplexity", f"{name} ppl"))
    dpo = eval_points(r, REWARD_ACC) if r.spec.recipe == "dpo" else {}
    margins = eval_points(r, REWARD_MARGIN) if r.spec.recipe == "dpo" else {}
    if dpo:
        cols += [Column("reward_acc", "reward accuracy"), Column("reward_margin", "reward margin")]
    first_set = sets[0]
    cols.append(Column("improvement", f"vs first eval ({first_set} {'ppl' if kind.cross_entropy else 'loss'})"))
    t = Table(f"eval_progression_{r.name}", f"Eval progression: {r.name}", cols)
    first = evals[first_set][0][1]
    for step in steps:
        row = {"step": Cell(step, str(step))}
        for name in sets:
            v = dict(evals[name]).get(step)
            row[f"{name}/loss"] = Cell(v, fmt_number("eval/x/loss", v)) if v is not None else Cell(None, MISSING)
            if kind.cross_entropy:
                ppl = math.exp(v) if v is not None and v < 709 else None
                row[f"{name}/perplexity"] = Cell(ppl, fmt_number("eval/x/perplexity", ppl)) if ppl is not None else Cell(None, MISSING)
        if dpo:
            acc = dict(next(iter(dpo.values()))).get(step)
            mar = dict(next(iter(margins.values()), [])).get(step) if margins else None
            row["reward_acc"] = Cell(acc, fmt_number("x/accuracy", acc)) if acc is not None else Cell(None, MISSING)
            row["reward_margin"] = Cell(mar, fmt_number(REWARD_MARGIN, mar)) if mar is not None else Cell(None, MISSING)
        v = dict(evals[first_set]).get(step)
        if v is None:
            row["improvement"] = Cell(None, MISSING)
        else:
            a, b = (math.exp(first), math.exp(v)) if kind.cross_entropy and max(first, v) < 709 else (first, v)
            pct = (b - a) / abs(a) * 100 if a else None
            row["improvement"] = Cell(pct, "first" if step == steps[0] else (fmt_pct(pct) if pct is not None else MISSING))
        t.rows.append(row)
    if len(evals) > max_sets:
        t.notes.append(f"First {max_sets} of {len(evals)} eval sets shown; report.json has all final values.")
    return t


@dataclass
class StartEnd:
    start: float
    start_step: int
    end: float
    end_step: int

    def text(self, metric: str) -> str:
        def f(v: float) -> str:
            return fmt_number(metric, v)

        return f"{f(self.start)} → {f(self.end)} (steps {self.start_step} → {self.end_step})"

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def start_end(points: list[tuple[int, float]]) -> StartEnd | None:
    if not points:
        return None
    return StartEnd(points[0][1], points[0][0], points[-1][1], points[-1][0])


def reward_table(results: list[RunResult]) -> Table | None:
    """DPO: reward accuracy and margin, first → last training log and first → last eval."""
    dpo = [r for r in results if r.spec.recipe == "dpo"]
    if not any(train_points(r, REWARD_ACC) or eval_points(r, REWARD_ACC) for r in dpo):
        return None
    cols = [Column("run", "run", align="left"),
            Column("train_acc", "train reward accuracy"), Column("train_margin", "train reward margin"),
            Column("eval_acc", "eval reward accuracy"), Column("eval_margin", "eval reward margin")]
    t = Table("dpo_rewards", "DPO rewards: start → end", cols)
    t.intro = (
        "Reward accuracy = share of preference pairs whose chosen answer gets the higher implicit reward "
        "β·log(π/π_ref); margin = mean chosen − rejected reward. Training: first logged step → last; eval: "
        "first evaluation on the held-out pairs → the last."
    )
    for r in dpo:
        row = {"run": text_cell(r.name)}
        for key, pts in (("train_acc", train_points(r, REWARD_ACC)), ("train_margin", train_points(r, REWARD_MARGIN)),
                         ("eval_acc", next(iter(eval_points(r, REWARD_ACC).values()), [])),
                         ("eval_margin", next(iter(eval_points(r, REWARD_MARGIN).values()), []))):
            se = start_end(pts)
            metric = REWARD_ACC if key.endswith("acc") else REWARD_MARGIN
            row[key] = Cell(se.to_json(), se.text(metric)) if se else Cell(None, r.missing_text)
        t.rows.append(row)
    if any((pts := train_points(r, REWARD_ACC)) and pts[0][1] == 0 and (m := train_points(r, REWARD_MARGIN)) and m[0][1] == 0 for r in dpo):
        t.notes.append(
            "A first training log of 0% with margin 0 is the reference point, not a measurement: before the "
            "first update the policy equals the reference, every implicit reward is exactly 0, and accuracy "
            "counts chosen > rejected strictly. The first evaluation is the meaningful start.")
    return t
