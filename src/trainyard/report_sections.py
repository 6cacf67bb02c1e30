"""The metric tables of a report, over seed groups (one run each when no seed varies).

Runs, per-eval-set loss / perplexity / bits per byte with an average row, consistency across
eval sets, Δ vs the baseline (summarized when long), TAT-QA / judge / IFEval before → after
with n, and the mixed-loss objective's parts. Only rankable entries (completed with the
current spec) are ever marked ★.
"""

from __future__ import annotations

import math
from typing import Any

from trainyard.contract import TRAIN_LOSS, TRAIN_RUNTIME, TRAIN_TOKENS_PER_SECOND, eval_metric
from trainyard.evaluation.consistency import as_number, run_consistency
from trainyard.report_inputs import LOSS_NOT_RANKED, Group, LossKind, RunResult, loss_comparable
from trainyard.report_tables import (
    MISSING,
    Cell,
    Column,
    Table,
    direction,
    fmt_number,
    fmt_param,
    fmt_pct,
    is_fraction,
    json_value,
    text_cell,
)

TATQA_TYPES = ("arithmetic", "count", "span", "multi-span")
MEASURE_LABELS = {"loss": "loss", "perplexity": "ppl", "bits_per_byte": "bpb", "word_perplexity": "word ppl"}
MEASURE_TITLES = {"loss": "Eval loss", "perplexity": "Eval perplexity", "bits_per_byte": "Eval bits per byte", "word_perplexity": "Eval word perplexity"}
DELTA_SUMMARY_ROWS = 12  # a longer Δ table is summarized, the full one collapsed
AVG_NOTE = (
    "Averages are the mean over finite values only: non-finite eval sets are excluded, never "
    "averaged in. '(k of n)' means only k of the n eval sets had a finite value; such an average "
    "is shown but not ranked."
)
REWARD_ACC = "rewards/accuracies"


def unit_suffix(kind: LossKind) -> str:
    return "nats/token" if kind.unit == "nats / token" else kind.unit


def loss_metric(metric: str) -> bool:
    """train/loss or eval/<set>/loss: the recipe's own loss (not CE parts, not accuracies)."""
    return metric == TRAIN_LOSS or (metric.startswith("eval/") and metric.endswith("/loss") and metric.count("/") == 2) or metric == "avg/loss"


# ----------------------------------------------------------------------------- cells


def group_cell(t: Table, g: Group, metric: str, sets: list[str] | None = None) -> Cell:
    """One run's value, or a seed group's mean ± std (n); ranked only when rankable."""
    r = g.single
    shown = f"eval/avg/{metric[4:]}" if metric.startswith("avg/") else metric
    if r is not None:
        if metric.startswith("avg/"):
            return run_avg_cell(t, r, metric[4:], sets or [])
        raw = r.metrics.get(metric) if metric in r.metrics else r.value(metric)
        return t.metric_cell(metric, raw, r.missing_text, r.rankable)
    return t.agg_cell(shown, g.agg(metric, sets), g.missing_text, g.rankable)


def run_avg_cell(t: Table, r: RunResult, measure: str, sets: list[str]) -> Cell:
    raws = [as_number(r.metrics.get(eval_metric(s, measure))) for s in sets]
    present = [v for v in raws if v is not None]
    if not present:
        return Cell(None, r.missing_text)
    finite = [v for v in present if math.isfinite(v)]
    metric = f"eval/avg/{measure}"
    if not finite:
        return t.metric_cell(metric, json_value(present[0]))
    if AVG_NOTE not in t.notes:
        t.notes.insert(0, AVG_NOTE)
    mean = math.fsum(finite) / len(finite)
    if len(finite) < len(sets):
        # a partial average is not comparable with full ones: shown, never marked best
        return Cell({"mean": mean, "finite_sets": len(finite), "sets": len(sets)}, f"{fmt_number(metric, mean)} ({len(finite)} of {len(sets)})")
    return Cell(mean, fmt_number(metric, mean), number=mean if r.rankable else None)


# ----------------------------------------------------------------------------- runs


def headline_metrics(results: list[RunResult], sets: list[str], kind: LossKind) -> list[tuple[str, str, bool]]:
    """(metric, column label, ranked) of the runs table's metric columns that some run has."""
    have: set[str] = set().union(*(r.metrics for r in results)) if results else set()
    u = unit_suffix(kind)
    mixed = all(r.spec.recipe == "mixed_loss" for r in results) and results
    cands: list[tuple[str, str, bool]] = []
    if mixed:
        cands += [("train/ce_loss", f"train CE ({u})", True), (TRAIN_LOSS, "train objective", False)]
    else:
        cands.append((TRAIN_LOSS, f"train {kind.name} ({u})", True))
    if len(sets) == 1:
        s = sets[0]
        cands.append((eval_metric(s, "loss"), f"{s} {kind.name} ({u})", True))
        cands += [(eval_metric(s, m), f"{s} {MEASURE_LABELS[m]}", True) for m in ("perplexity", "bits_per_byte")]
        cands += [(eval_metric(s, REWARD_ACC), f"{s} reward accuracy", True), (eval_metric(s, "rewards/margins"), f"{s} reward margin", False)]
    elif len(sets) > 1:
        cands += [("avg/loss", f"avg eval {kind.name} ({len(sets)} sets, {u})", True), ("avg/perplexity", f"avg eval ppl ({len(sets)} sets)", True)]
    cands += [
        ("tatqa/exact_match", "TAT-QA EM", True),
        ("tatqa/f1", "TAT-QA F1", True),
        ("judge/overall", "judge", True),
        ("ifeval/prompt_accuracy", "IFEval prompt", True),
        ("ifeval/instruction_accuracy", "IFEval instr.", True),
        (TRAIN_RUNTIME, "runtime", False),
        (TRAIN_TOKENS_PER_SECOND, "tokens/s", False),
    ]
    comparable = loss_comparable(results)
    out = []
    for key, label, ranked in cands:
        ranked = ranked and (comparable or not loss_metric(key))
        if key.startswith("avg/"):
            ok = any(eval_metric(s, key[4:]) in have for s in sets)
        elif key == "train/ce_loss":
            ok = any(r.value(key) is not None for r in results)
        else:
            ok = key in have
        if ok:
            out.append((key, label, ranked))
    return out


def runs_table(groups: list[Group], labels: dict[str, str], sets: list[str], kind: LossKind, seeds: bool) -> Table:
    results = [r for g in groups for r in g.runs]
    cols = [Column("run", "seed group" if seeds else "run", align="left")]
    cols += [Column(f"param:{k}", lab, align="left") for k, lab in labels.items()]
    cols.append(Column("state", "state", align="left"))
    headline = headline_metrics(results, sets, kind)
    cols += [Column(key, label, metric=key, rank=ranked) for key, label, ranked in headline]
    t = Table("runs", "Seed groups" if seeds else "Runs", cols)
    t.intro = ("One row per group of runs that differ only in their seed: mean ± std (n) of the finished seeds."
               if seeds else "One row per run: the parameters that vary across the matrix (as the run trained them), its state and its final metrics.")
    for g in groups:
        row = {"run": text_cell(g.name), "state": Cell(g.state_text, g.state_text)}
        for k in labels:
            row[f"param:{k}"] = Cell(g.params.get(k), fmt_param(g.params.get(k)))
        for key, _, ranked in headline:
            cell = group_cell(t, g, key, sets)
            if not ranked:
                cell.number = None
            row[key] = cell
        t.rows.append(row)
    for key, _, ranked in headline:
        if ranked:
            t.mark_best_in_column(key, f"eval/avg/{key[4:]}" if key.startswith("avg/") else key)
    if any(not ranked for key, _, ranked in headline if key == TRAIN_LOSS):
        if all(r.spec.recipe == "mixed_loss" for r in results):
            t.notes.append("Mixed loss: the ranked loss is CE; the training objective (1−α)·CE + α·cos differs with α and is shown, not ranked.")
        else:
            t.notes.append(LOSS_NOT_RANKED)
    return t


# ----------------------------------------------------------------------------- eval sets


def eval_set_table(groups: list[Group], sets: list[str], measure: str, kind: LossKind) -> Table | None:
    """Eval sets as rows, groups as columns, an average row (finite values only)."""
    keys = [eval_metric(s, measure) for s in sets]
    if not any(k in r.metrics for g in groups for r in g.runs for k in keys):
        return None
    cols = [Column("eval_set", "eval set", align="left")] + [Column(g.name, g.name) for g in groups]
    title = MEASURE_TITLES[measure]
    if measure == "loss":
        title = f"Eval {kind.name} ({unit_suffix(kind)})"
    t = Table(f"eval_{measure}", title, cols)
    t.intro = f"Final {title[0].lower() + title[1:]} of each run (columns) on each eval set (rows)."
    names = [g.name for g in groups]
    ranked = measure != "loss" or loss_comparable([r for g in groups for r in g.runs])
    if not ranked:
        t.notes.append(LOSS_NOT_RANKED)
    for s, key in zip(sets, keys, strict=True):
        row = {"eval_set": text_cell(s)}
        for g in groups:
            row[g.name] = group_cell(t, g, key)
        if ranked:
            t.mark_best_in_row(row, names, key)
        t.rows.append(row)
    if len(sets) > 1:
        avg_row = {"eval_set": text_cell("average (finite only)", "average")}
        for g in groups:
            avg_row[g.name] = group_cell(t, g, f"avg/{measure}", sets)
        t.mark_best_in_row(avg_row, names, f"eval/avg/{measure}")
        t.rows.append(avg_row)
    return t


def objective_table(groups: list[Group], sets: list[str]) -> Table | None:
    """Mixed loss: the objective's parts per eval set, shown apart from the ranked CE."""
    if not any(r.spec.recipe == "mixed_loss" for g in groups for r in g.runs):
        return None
    parts = (("ce_loss", "CE (nats/token)"), ("cos_loss", "cosine loss"), ("mixed_loss", "objective (1−α)·CE + α·cos"),
             ("token_accuracy", "token accuracy"))
    rows = [(s, m, lab) for s in sets for m, lab in parts if any(eval_metric(s, m) in r.metrics for g in groups for r in g.runs)]
    if not rows:
        return None
    cols = [Column("metric", "eval set / part", align="left")] + [Column(g.name, g.name) for g in groups]
    t = Table("objective_parts", "Mixed-loss objective, by part (not ranked)", cols)
    t.intro = ("The training objective's parts on each eval set, token-weighted. Runs are ranked on CE (the tables "
               "above); the objective mixes CE with the cosine term at each run's own α, so it is not comparable across runs.")
    for s, m, lab in rows:
        row = {"metric": text_cell(f"{s}: {lab}", eval_metric(s, m))}
        for g in groups:
            cell = group_cell(t, g, eval_metric(s, m))
            cell.number = None
            row[g.name] = cell
        t.rows.append(row)
    return t


def consistency_table(results: list[RunResult]) -> Table | None:
    per_run = {r.name: run_consistency(r.metrics) for r in results}
    if not any(len(c["perplexity"].members) + len(c["perplexity"].excluded) >= 2 for c in per_run.values()):
        return None
    cols = [Column("run", "run", align="left")]
    for measure, short in (("perplexity", "ppl"), ("loss", "loss")):
        cols += [
            Column(f"{measure}/range", f"{short} max−min"),
            Column(f"{measure}/std", f"{short} std"),
            Column(f"{measure}/relative_spread_pct", f"{short} spread %"),
        ]
    cols.append(Column("excluded", "excluded (non-finite)", align="left"))
    cols.append(Column("note", "note", align="left"))
    t = Table("consistency", "Consistency across eval sets", cols)
    t.intro = (
        "How evenly each run does across its eval sets: max − min, population standard deviation "
        "and relative spread = (max − min) / mean × 100. Non-finite sets are excluded and named."
    )
    t.notes.append("Smaller is more consistent. Statistics need at least 2 finite eval sets; otherwise n/a with the reason.")
    for r in results:
        c = per_run[r.name]
        row = {"run": text_cell(r.name)}
        if not r.metrics:
            for col in cols[1:]:
                row[col.key] = Cell(None, r.missing_text)
            t.rows.append(row)
            continue
        for measure in ("perplexity", "loss"):
            sp = c[measure]
            metric = f"eval/x/{measure}"
            for stat in ("range", "std", "relative_spread_pct"):
                v = getattr(sp, stat)
                if v is None:
                    row[f"{measure}/{stat}"] = Cell(None, "n/a")
                elif stat == "relative_spread_pct":
                    row[f"{measure}/{stat}"] = Cell(v, f"{v:.1f}%", number=v)
                else:
                    row[f"{measure}/{stat}"] = Cell(v, fmt_number(metric, v), number=v)
        excl = {**c["perplexity"].excluded, **c["loss"].excluded}
        row["excluded"] = Cell(sorted(excl), ", ".join(f"{k} ({v})" for k, v in sorted(excl.items())) or "none")
        reasons = [f"{m}: {c[m].reason}" for m in ("perplexity", "loss") if c[m].reason]
        if len(reasons) == 2 and c["perplexity"].reason == c["loss"].reason:
            reasons = [str(c["loss"].reason)]
        row["note"] = Cell("; ".join(reasons) or None, "; ".join(reasons) or MISSING)
        t.rows.append(row)
    return t


# ----------------------------------------------------------------------------- Δ vs baseline


def delta_metrics(groups: list[Group], sets: list[str]) -> list[str]:
    metrics = [TRAIN_LOSS]
    if all(r.spec.recipe == "mixed_loss" for g in groups for r in g.runs):
        metrics = ["train/ce_loss"]
    for m in ("loss", "perplexity", "bits_per_byte", REWARD_ACC):
        metrics += [eval_metric(s, m) for s in sets]
    metrics += ["tatqa/exact_match", "tatqa/f1", "judge/turn1", "judge/turn2", "judge/overall", "ifeval/prompt_accuracy",
                "ifeval/instruction_accuracy", TRAIN_RUNTIME, TRAIN_TOKENS_PER_SECOND]
    return [m for m in metrics if any(r.value(m) is not None or m in r.metrics for g in groups for r in g.runs)]


def delta(g: Group, base: Group, metric: str, sets: list[str] | None = None) -> dict[str, Any] | None:
    """Δ of means, Δ %, and whether |Δ| is within one std of either group (seeds only)."""
    a, b = g.agg(metric, sets), base.agg(metric, sets)
    if not a.n or not b.n:
        return None
    d = a.mean - b.mean
    pct = d / abs(b.mean) * 100 if b.mean != 0 else None
    stds = [s for s in (a.std, b.std) if s is not None]
    noise = max(stds) if stds else None
    return {"value": a.mean, "baseline": b.mean, "delta": d, "delta_pct": pct, "std": noise,
            "within_std": (abs(d) <= noise) if noise is not None else None, "n": a.n, "baseline_n": b.n}


def delta_text(metric: str, info: dict[str, Any]) -> str:
    d, pct = info["delta"], info["delta_pct"]
    # accuracies are fractions: their absolute change reads best in percentage points
    text = f"{d * 100:+.1f} pp" if is_fraction(metric) else ("-" if d < 0 else "+") + fmt_number(metric, abs(d))
    if pct is not None:
        text += f" ({fmt_pct(pct)})"
    if info["within_std"] is True:
        text += ", within 1 std"
    elif info["within_std"] is False:
        text += ", > 1 std"
    return text


def _delta_cell(t: Table, metric: str, g: Group, base: Group) -> Cell:
    r = g.single
    if r is not None and not r.rankable:
        raw = r.metrics.get(metric)
        v = as_number(raw) if raw is not None else r.value(metric)
        if v is None:
            return Cell(None, r.missing_text)
        if not math.isfinite(v):
            return t.metric_cell(metric, raw)
        info = delta(Group(g.name, [_as_rankable(r)], g.params), base, metric)
        if info is None:
            return Cell(None, "n/a (baseline non-finite)")
        return Cell(info, delta_text(metric, info) + f" ({r.state}{', stale' if r.stale else ''}, not ranked)")
    info = delta(g, base, metric)
    if info is None:
        a = g.agg(metric)
        if a.nonfinite:
            t.flags.add("inf")
            return Cell("inf", "diverged†")
        if a.n and not base.agg(metric).n:
            return Cell({"value": a.mean, "delta": None, "delta_pct": None}, "n/a (baseline non-finite)")
        return Cell(None, g.missing_text)
    return Cell(info, delta_text(metric, info))


def _as_rankable(r: RunResult) -> RunResult:
    """A copy treated as rankable, to compute (and show, never rank) an unfinished run's Δ."""
    from dataclasses import replace

    return replace(r, status={**r.status, "state": "completed"}, changes=[], spec_problem=None)


def delta_table(groups: list[Group], base: Group | None, baseline: str | None, sets: list[str]) -> tuple[Table | None, str | None]:
    """Metrics as rows; the baseline's value, then each group's Δ (absolute and %)."""
    if baseline is None:
        return None, "The matrix names no `baseline:` run, so there is no Δ table."
    if base is None:
        return None, f"Δ vs baseline: the baseline run `{baseline}` is not among the reported runs."
    if not base.rankable or not any(r.metrics for r in base.runs):
        return None, f"Δ vs baseline: the baseline run `{baseline}` is {base.state_text}; deltas appear once it has completed with the current spec."
    others = [g for g in groups if g is not base]
    metrics = delta_metrics(groups, sets)
    cols = [Column("metric", "metric", align="left"), Column("baseline", f"{base.name} (baseline)")] + [Column(g.name, g.name) for g in others]
    t = Table("delta_vs_baseline", f"Δ vs baseline ({base.name})", cols)
    t.intro = (
        "Each run's change from the baseline: absolute Δ (percentage points for accuracies) and "
        "relative Δ % of the baseline value. Negative is better for loss / perplexity / bpb."
    )
    if any(len(g.runs) > 1 for g in groups):
        t.notes.append("Seed groups: Δ of the means; 'within 1 std' = |Δ| ≤ the larger of the two groups' std (not a real difference).")
    for m in metrics:
        row = {"metric": text_cell(m), "baseline": group_cell(t, base, m)}
        row["baseline"].number = None
        for g in others:
            row[g.name] = _delta_cell(t, m, g, base)
        t.rows.append(row)
    return t, None


def delta_summary(full: Table, groups: list[Group], base: Group, sets: list[str]) -> Table | None:
    """A long Δ table in a few rows: per measure, the mean Δ % over eval sets and the best / worst set."""
    if len(full.rows) <= DELTA_SUMMARY_ROWS or len(sets) < 2:
        return None
    others = [g for g in groups if g is not base]
    cols = [Column("metric", "measure", align="left"), Column("baseline", f"{base.name} (baseline)")]
    cols += [Column(g.name, g.name, align="left") for g in others]
    t = Table("delta_summary", f"Δ vs baseline ({base.name}), summary", cols)
    t.intro = f"Mean Δ % over the {len(sets)} eval sets, and the set that improved most / least; the full table is collapsed below."
    cell_of = {row["metric"].value: row for row in full.rows}
    for measure in ("loss", "perplexity", "bits_per_byte"):
        keys = [eval_metric(s, measure) for s in sets if eval_metric(s, measure) in cell_of]
        if not keys:
            continue
        row = {"metric": text_cell(f"eval {MEASURE_LABELS[measure]} ({len(keys)} sets)", measure),
               "baseline": group_cell(t, base, f"avg/{measure}", sets)}
        row["baseline"].number = None
        for g in others:
            pcts = {k.split("/")[1]: cell_of[k][g.name].value["delta_pct"] for k in keys
                    if isinstance(cell_of[k][g.name].value, dict) and cell_of[k][g.name].value.get("delta_pct") is not None}
            if not pcts:
                row[g.name] = Cell(None, g.missing_text)
                continue
            mean = math.fsum(pcts.values()) / len(pcts)
            way = direction(eval_metric("x", measure))
            best = (min if way == "min" else max)(pcts, key=lambda s: pcts[s])
            worst = (max if way == "min" else min)(pcts, key=lambda s: pcts[s])
            partial = f" ({len(pcts)} of {len(keys)} sets)" if len(pcts) < len(keys) else ""
            row[g.name] = Cell({"mean_delta_pct": mean, "best_set": best, "worst_set": worst, "sets": len(pcts)},
                               f"{fmt_pct(mean)}{partial}; best {best} {fmt_pct(pcts[best])}, worst {worst} {fmt_pct(pcts[worst])}")
        t.rows.append(row)
    for key, row in cell_of.items():
        if not str(key).startswith("eval/"):
            t.rows.append({"metric": row["metric"], "baseline": row["baseline"], **{g.name: row[g.name] for g in others}})
    return t


# ----------------------------------------------------------------------------- generation evals


def _n_text(ns: set[int]) -> str:
    if not ns:
        return MISSING
    return str(ns.pop()) if len(ns) == 1 else "–".join(str(n) for n in (min(ns), max(ns)))


def _count(results: list[RunResult], keys: list[str]) -> set[int]:
    out = set()
    for r in results:
        for k in keys:
            v = as_number(r.metrics.get(k))
            if v is not None and math.isfinite(v):
                out.add(int(v))
    return out


def before_after_table(groups: list[Group], name: str, title: str, intro: str, prefix: str,
                       rows: list[tuple[str, str, list[str]]]) -> Table | None:
    """rows: (label, metric below ``prefix/``, count metrics for n). Cells 'before → after (Δ pp)'."""
    results = [r for g in groups for r in g.runs]
    present = [(lab, sub, n) for lab, sub, n in rows
               if any(f"{prefix}/{sub}" in r.metrics or f"{prefix}_before/{sub}" in r.metrics for r in results)]
    if not present:
        return None
    cols = [Column("metric", "metric", align="left"), Column("n", "n")] + [Column(g.name, g.name) for g in groups]
    t = Table(name, title, cols, intro=intro)
    for label, sub, counts in present:
        metric = f"{prefix}/{sub}"
        row = {"metric": text_cell(label, metric)}
        ns = _count(results, counts)
        row["n"] = Cell(sorted(ns) if len(ns) > 1 else (next(iter(ns)) if ns else None), _n_text(set(ns)))
        for g in groups:
            row[g.name] = _before_after_cell(t, g, prefix, sub)
        if sub != "missing":  # a count of unparseable ratings is a health check, not a score
            t.mark_best_in_row(row, [g.name for g in groups], metric)
        t.rows.append(row)
    return t


def _before_after_cell(t: Table, g: Group, prefix: str, sub: str) -> Cell:
    metric, before_metric = f"{prefix}/{sub}", f"{prefix}_before/{sub}"
    after_cell = group_cell(t, g, metric)
    b = g.agg(before_metric) if not g.single else None
    before_raw = g.single.metrics.get(before_metric) if g.single else (b.mean if b and b.n else None)
    before = as_number(before_raw)
    if before is None:
        return after_cell
    before_cell = t.metric_cell(before_metric, before_raw)
    after = after_cell.number if after_cell.number is not None else as_number(after_cell.value if not isinstance(after_cell.value, dict) else after_cell.value.get("mean"))
    text = f"{before_cell.text} → {after_cell.text}"
    if after is not None and math.isfinite(after) and math.isfinite(before):
        d = after - before
        text += f" ({d * 100:+.1f} pp)" if is_fraction(metric) else f" ({d:+.2f})"
    return Cell({"before": json_value(before), "after": after_cell.value}, text, number=after_cell.number)


def tatqa_rows(results: list[RunResult]) -> list[tuple[str, str, list[str]]]:
    keys: set[str] = set()
    for r in results:
        keys |= {k.split("/", 1)[1] for k in r.metrics if k.startswith(("tatqa/", "tatqa_before/"))}
    types = sorted({k.split("/")[0] for k in keys if k.count("/") == 1 and k.endswith(("/exact_match", "/f1"))}, key=_type_order)
    n_all = ["tatqa/questions", "tatqa_before/questions"]
    rows: list[tuple[str, str, list[str]]] = []
    for measure, short in (("exact_match", "EM"), ("f1", "F1")):
        if measure in keys:
            rows.append((f"overall {short}", measure, n_all))
    if "scale_accuracy" in keys:
        rows.append(("scale accuracy", "scale_accuracy", n_all))
    for ty in types:
        n = [f"tatqa/{ty}/questions", f"tatqa_before/{ty}/questions"]
        for measure, short in (("exact_match", "EM"), ("f1", "F1")):
            if f"{ty}/{measure}" in keys:
                rows.append((f"{ty} {short}", f"{ty}/{measure}", n))
    return rows


def _type_order(ty: str) -> tuple[int, str]:
    return (TATQA_TYPES.index(ty) if ty in TATQA_TYPES else len(TATQA_TYPES), ty)


def tatqa_table(groups: list[Group]) -> Table | None:
    results = [r for g in groups for r in g.runs]
    if not any(k.startswith("tatqa/") for r in results for k in r.metrics):
        return None
    return before_after_table(
        groups, "tatqa", "TAT-QA: before → after training",
        "TAT-QA scores with the official metric's semantics (exact match and DROP-style F1), overall, per answer "
        "type and per answer source, before training → after training (Δ in percentage points); n = questions.",
        "tatqa", tatqa_rows(results))


def judge_table(groups: list[Group]) -> Table | None:
    n = ["judge/questions", "judge_before/questions"]
    return before_after_table(
        groups, "judge", "Judge scores (MT-Bench style, 1–10)",
        "Mean single-answer ratings by the judge model, per turn and overall, before → after training when "
        "eval.compare_before is set; n = questions (2 turns each).", "judge",
        [("turn 1", "turn1", n), ("turn 2", "turn2", n), ("overall", "overall", n), ("unparseable ratings", "missing", n)])


def ifeval_table(groups: list[Group]) -> Table | None:
    return before_after_table(
        groups, "ifeval", "Instruction following (IFEval)",
        "Prompt-level (all instructions followed) and instruction-level accuracy, strict, before → after "
        "training when eval.compare_before is set; n = prompts / instructions.", "ifeval",
        [("prompt-level accuracy", "prompt_accuracy", ["ifeval/prompts", "ifeval_before/prompts"]),
         ("instruction-level accuracy", "instruction_accuracy", ["ifeval/instructions", "ifeval_before/instructions"]),
         ("prompt-level, loose", "prompt_accuracy_loose", ["ifeval/prompts", "ifeval_before/prompts"]),
         ("instruction-level, loose", "instruction_accuracy_loose", ["ifeval/instructions", "ifeval_before/instructions"])])


def all_metrics_table(results: list[RunResult]) -> Table | None:
    keys = sorted(set().union(*(r.metrics for r in results))) if results else []
    if not keys:
        return None
    shown = [r for r in results if r.metrics]
    cols = [Column("metric", "metric", align="left")] + [Column(r.name, r.name) for r in shown]
    t = Table("all_metrics", "All final metrics", cols)
    for key in keys:
        row = {"metric": text_cell(key)}
        for r in shown:
            row[r.name] = t.metric_cell(key, r.metrics.get(key), r.missing_text, rankable=False)
        t.rows.append(row)
    return t

