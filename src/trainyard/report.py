"""`launch.py report`: a matrix's run directories -> report.md, report.json and PNG charts.

    python launch.py report --matrix jobs/rust_sft.yaml [--smoke] [--runs-dir runs] [--out DIR]

Reads only the run-directory contract (spec.json, status.json, metrics.json, history.json
under runs/<matrix>/<run>/), so it works on a partially finished matrix: runs that have not
started, are queued or still running are listed with their state and progress. Sections
appear only when some run has their metrics. Tables: runs (varying parameters + state +
headline metrics, best marked), per-eval-set loss / perplexity / bits per byte with an
average row, consistency across eval sets, Δ vs the matrix's baseline, TAT-QA before →
after per answer type, judge and instruction-following scores, all final metrics.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainyard.evaluation.consistency import as_number, run_consistency
from trainyard.matrix import Matrix, flatten, load_matrix
from trainyard.report_tables import (
    MISSING,
    Cell,
    Column,
    Table,
    fmt_number,
    fmt_param,
    is_fraction,
    json_value,
    text_cell,
)
from trainyard.run_dir import RunDir, write_json_atomic
from trainyard.smoke import smoke_name
from trainyard.spec import RunSpec

NOT_STARTED = "not started"
# Keys that differ between runs but are not experiment parameters.
IGNORED_VARYING = {"description"}
# Leaves too generic to stand alone as a column label ("limit" of what?).
GENERIC_LEAVES = {"name", "limit", "source", "split", "format", "config", "seed", "text_field", "enabled", "push", "private", "steps", "strategy"}
TATQA_TYPES = ("arithmetic", "count", "span", "multi-span")
MEASURE_LABELS = {"loss": "loss", "perplexity": "ppl", "bits_per_byte": "bpb", "word_perplexity": "word ppl"}
MEASURE_TITLES = {"loss": "Eval loss", "perplexity": "Eval perplexity", "bits_per_byte": "Eval bits per byte", "word_perplexity": "Eval word perplexity"}
REASON_CHARS = 80


# ----------------------------------------------------------------------------- inputs


@dataclass
class RunResult:
    """One run of the matrix as its run directory shows it now."""

    name: str
    spec: RunSpec
    params: dict[str, Any]
    path: Path
    status: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def state(self) -> str:
        return self.status.get("state") or NOT_STARTED

    @property
    def reason(self) -> str | None:
        text = self.status.get("reason") or self.status.get("error")
        return str(text).strip() if text else None

    @property
    def progress(self) -> tuple[int, int] | None:
        step, total = self.status.get("step"), self.status.get("max_steps")
        if isinstance(step, int) and isinstance(total, int) and total > 0:
            return step, total
        return None

    def state_text(self, full: bool = False) -> str:
        """'completed', 'diverged (non-finite loss at step 120)', 'running (step 40/100, 40%)'."""
        state = self.state
        if state in ("failed", "diverged", "canceled") and self.reason:
            reason = self.reason.splitlines()[-1] if not full else self.reason
            if not full and len(reason) > REASON_CHARS:
                reason = reason[: REASON_CHARS - 1] + "…"
            return f"{state} ({reason})"
        if state == "running" and self.progress:
            step, total = self.progress
            return f"running (step {step}/{total}, {100 * step / total:.0f}%)"
        return state

    @property
    def missing_text(self) -> str:
        """What a cell shows for a metric this run does not have: its state, never a blank."""
        return MISSING if self.state == "completed" else self.state

    def eval_set_order(self) -> list[str]:
        return [self.spec.eval.held_out_name] + [d.name for d in self.spec.eval.datasets]


def collect(matrix: Matrix, runs_root: Path, specs: list[RunSpec] | None = None) -> list[RunResult]:
    """Read each run's directory (absent -> 'not started'), in matrix order.

    ``specs`` are the runs to report (default: all of the matrix); each spec's ``matrix``
    field names its directory, so smoke specs read runs/<matrix>-smoke/.
    """
    varying = [k for k in matrix.varying if k not in IGNORED_VARYING]
    results = []
    for spec in specs if specs is not None else matrix.runs:
        rd = RunDir.for_run(runs_root, spec.matrix, spec.name)
        # parameters from the matrix as written (a smoke spec swaps model and data)
        original = next((r for r in matrix.runs if r.name == spec.name), spec)
        flat = flatten(original.model_dump(mode="json"))
        results.append(
            RunResult(
                name=spec.name,
                spec=spec,
                params={k: flat.get(k) for k in varying},
                path=rd.path,
                status=rd.status(),
                metrics=rd.metrics(),
                history=rd.history(),
            )
        )
    return results


def param_labels(keys: list[str]) -> dict[str, str]:
    """Short, unique column labels for varying dotted keys: train.lr -> lr, data.limit -> data.limit."""
    def short(key: str, depth: int) -> str:
        parts = key.split(".")
        if depth == 1 and parts[-1] in GENERIC_LEAVES and len(parts) > 1:
            depth = 2
        return ".".join(parts[-depth:])

    labels = {k: short(k, 1) for k in keys}
    for depth in range(2, 8):
        clashes = {lab for lab in labels.values() if list(labels.values()).count(lab) > 1}
        if not clashes:
            break
        labels = {k: (short(k, depth) if lab in clashes else lab) for k, lab in labels.items()}
    return labels


def eval_sets(results: list[RunResult]) -> list[str]:
    """Eval sets with any reported metric, in the order the specs declare them."""
    found: set[str] = set()
    for r in results:
        for key in r.metrics:
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "eval":
                found.add(parts[1])
    ordered: list[str] = []
    for r in results:
        for s in r.eval_set_order():
            if s in found and s not in ordered:
                ordered.append(s)
    return ordered + sorted(found - set(ordered))


def average(values: list[float | None]) -> tuple[float | None, int]:
    """Mean over finite values only, and how many that was (non-finite never averaged in)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return (math.fsum(finite) / len(finite) if finite else None), len(finite)


# ----------------------------------------------------------------------------- tables


def runs_table(results: list[RunResult], labels: dict[str, str], sets: list[str]) -> Table:
    cols = [Column("run", "run", align="left")]
    cols += [Column(f"param:{k}", lab, align="left") for k, lab in labels.items()]
    cols.append(Column("state", "state", align="left"))
    headline = headline_metrics(results, sets)
    cols += [Column(key, label, metric=key) for key, label in headline]
    t = Table("runs", "Runs", cols)
    t.intro = "One row per run: the parameters that vary across the matrix, the run's state and its final metrics."
    for r in results:
        row = {"run": text_cell(r.name), "state": Cell(r.state, r.state_text())}
        for k in labels:
            row[f"param:{k}"] = Cell(r.params.get(k), fmt_param(r.params.get(k)))
        for key, _ in headline:
            if key.startswith("avg/"):
                row[key] = _avg_cell(t, r, key.split("/")[1], sets)
            else:
                row[key] = t.metric_cell(key, r.metrics.get(key), r.missing_text)
        t.rows.append(row)
    for key, _ in headline:
        t.mark_best_in_column(key, key if not key.startswith("avg/") else f"eval/avg/{key.split('/')[1]}")
    return t


def headline_metrics(results: list[RunResult], sets: list[str]) -> list[tuple[str, str]]:
    """(metric key, column label) of the runs table's metric columns that some run has."""
    have = set().union(*(r.metrics for r in results)) if results else set()
    cands: list[tuple[str, str]] = [("train/loss", "train loss")]
    if len(sets) == 1:
        s = sets[0]
        cands += [(f"eval/{s}/{m}", f"{s} {MEASURE_LABELS[m]}") for m in ("loss", "perplexity", "bits_per_byte")]
    elif len(sets) > 1:
        cands += [("avg/loss", f"avg eval loss ({len(sets)} sets)"), ("avg/perplexity", f"avg eval ppl ({len(sets)} sets)")]
    cands += [
        ("tatqa/exact_match", "TAT-QA EM"),
        ("tatqa/f1", "TAT-QA F1"),
        ("judge/overall", "judge"),
        ("ifeval/prompt_accuracy", "IFEval prompt"),
        ("ifeval/instruction_accuracy", "IFEval instr."),
        ("train/runtime_s", "runtime"),
        ("train/tokens_per_second", "tokens/s"),
    ]
    out = []
    for key, label in cands:
        if key.startswith("avg/"):
            if any(f"eval/{s}/{key[4:]}" in have for s in sets):
                out.append((key, label))
        elif key in have:
            out.append((key, label))
    return out


def _avg_cell(t: Table, r: RunResult, measure: str, sets: list[str]) -> Cell:
    raws = [as_number(r.metrics.get(f"eval/{s}/{measure}")) for s in sets]
    present = [v for v in raws if v is not None]
    if not present:
        return Cell(None, r.missing_text)
    mean, n = average(present)
    metric = f"eval/avg/{measure}"
    if mean is None:
        # every measured set is non-finite: show it as such
        return t.metric_cell(metric, json_value(present[0]))
    if AVG_NOTE not in t.notes:
        t.notes.insert(0, AVG_NOTE)
    if n < len(sets):
        # a partial average is not comparable with full ones: shown, never marked best
        return Cell({"mean": mean, "finite_sets": n, "sets": len(sets)}, f"{fmt_number(metric, mean)} ({n} of {len(sets)})")
    return Cell(mean, fmt_number(metric, mean), number=mean)


AVG_NOTE = (
    "Averages are the mean over finite values only: non-finite eval sets are excluded, never "
    "averaged in. '(k of n)' means only k of the n eval sets had a finite value; such an average "
    "is shown but not ranked."
)


def eval_set_table(results: list[RunResult], sets: list[str], measure: str) -> Table | None:
    """Eval sets as rows, runs as columns, an average row (finite values only)."""
    keys = [f"eval/{s}/{measure}" for s in sets]
    if not any(k in r.metrics for r in results for k in keys):
        return None
    cols = [Column("eval_set", "eval set", align="left")] + [Column(r.name, r.name) for r in results]
    t = Table(f"eval_{measure}", MEASURE_TITLES[measure], cols)
    t.intro = f"Final {MEASURE_TITLES[measure].lower()} of each run (columns) on each eval set (rows)."
    for s, key in zip(sets, keys, strict=True):
        row = {"eval_set": text_cell(s)}
        for r in results:
            row[r.name] = t.metric_cell(key, r.metrics.get(key), r.missing_text)
        t.mark_best_in_row(row, [r.name for r in results], key)
        t.rows.append(row)
    if len(sets) > 1:
        avg_row = {"eval_set": text_cell("average (finite only)", "average")}
        for r in results:
            avg_row[r.name] = _avg_cell(t, r, measure, sets)
        t.mark_best_in_row(avg_row, [r.name for r in results], f"eval/avg/{measure}")
        t.rows.append(avg_row)
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


def delta_table(results: list[RunResult], baseline: str | None, sets: list[str]) -> tuple[Table | None, str | None]:
    """Metrics as rows; the baseline's value, then each run's Δ (absolute and %)."""
    if baseline is None:
        return None, "The matrix names no `baseline:` run, so there is no Δ table."
    base = next((r for r in results if r.name == baseline), None)
    if base is None or base.state != "completed" or not base.metrics:
        state = base.state_text() if base else "missing"
        return None, f"Δ vs baseline: the baseline run `{baseline}` is {state}; deltas appear once it has completed."
    others = [r for r in results if r.name != baseline]
    metrics = ["train/loss"]
    for m in ("loss", "perplexity", "bits_per_byte"):
        metrics += [f"eval/{s}/{m}" for s in sets]
    metrics += ["tatqa/exact_match", "tatqa/f1", "judge/turn1", "judge/turn2", "judge/overall", "ifeval/prompt_accuracy", "ifeval/instruction_accuracy", "train/runtime_s", "train/tokens_per_second"]
    metrics = [m for m in metrics if m in base.metrics]
    if not metrics or not others:
        return None, None
    cols = [Column("metric", "metric", align="left"), Column("baseline", f"{baseline} (baseline)")]
    cols += [Column(r.name, f"{r.name} Δ") for r in others]
    t = Table("delta_vs_baseline", f"Δ vs baseline ({baseline})", cols)
    t.intro = (
        "Each run's change from the baseline run: absolute Δ (percentage points for accuracies) and "
        "relative Δ % of the baseline value. Negative is better for loss / perplexity / bpb."
    )
    for m in metrics:
        b = as_number(base.metrics.get(m))
        row = {"metric": text_cell(m), "baseline": t.metric_cell(m, base.metrics.get(m))}
        for r in others:
            row[r.name] = _delta_cell(t, m, b, r)
        t.rows.append(row)
    return t, None


def _delta_cell(t: Table, metric: str, base: float | None, r: RunResult) -> Cell:
    raw = r.metrics.get(metric)
    v = as_number(raw)
    if v is None:
        return Cell(None, r.missing_text)
    if not math.isfinite(v):
        return t.metric_cell(metric, raw)
    if base is None or not math.isfinite(base):
        return Cell({"value": v, "delta": None, "delta_pct": None}, "n/a (baseline non-finite)")
    d = v - base
    pct = d / abs(base) * 100 if base != 0 else None
    # accuracies are fractions: their absolute change reads best in percentage points
    text = f"{d * 100:+.1f} pp" if is_fraction(metric) else _signed(fmt_number(metric, abs(d)), d)
    if pct is not None:
        # a tiny change must not read as "-0.0%"
        text += f" ({pct:+.1f}%)" if abs(pct) >= 0.1 or pct == 0 else f" ({pct:+.2g}%)"
    return Cell({"value": v, "delta": d, "delta_pct": pct}, text)


def _signed(text: str, d: float) -> str:
    return ("-" if d < 0 else "+") + text


def tatqa_table(results: list[RunResult]) -> Table | None:
    """Per answer type, before → after training (tatqa_before/... → tatqa/...)."""
    have = [r for r in results if any(k.startswith("tatqa/") for k in r.metrics)]
    if not have:
        return None
    keys: set[str] = set()
    for r in have:
        keys |= {k.split("/", 1)[1] for k in r.metrics if k.startswith(("tatqa/", "tatqa_before/"))}
    types = sorted({k.split("/")[0] for k in keys if k.count("/") == 1}, key=_type_order)
    rows: list[tuple[str, str]] = []  # (label, key below tatqa/)
    for measure, short in (("exact_match", "EM"), ("f1", "F1")):
        if measure in keys:
            rows.append((f"overall {short}", measure))
    if "scale_accuracy" in keys:
        rows.append(("scale accuracy", "scale_accuracy"))
    for ty in types:
        for measure, short in (("exact_match", "EM"), ("f1", "F1")):
            if f"{ty}/{measure}" in keys:
                rows.append((f"{ty} {short}", f"{ty}/{measure}"))
    cols = [Column("metric", "TAT-QA", align="left")] + [Column(r.name, r.name) for r in results]
    t = Table("tatqa", "TAT-QA: before → after training", cols)
    t.intro = (
        "TAT-QA scores with the official metric's semantics (exact match and DROP-style F1), per "
        "answer type, before training → after training (Δ in percentage points)."
    )
    for label, sub in rows:
        count = next((r.metrics.get(f"tatqa/{sub.split('/')[0]}/count") for r in have if "/" in sub), None)
        shown = f"{label} (n={int(count)})" if isinstance(count, (int, float)) and label.split()[-1] == "EM" else label
        row = {"metric": text_cell(shown, f"tatqa/{sub}")}
        for r in results:
            row[r.name] = _before_after_cell(t, sub, r)
        t.rows.append(row)
    return t


def _type_order(ty: str) -> tuple[int, str]:
    return (TATQA_TYPES.index(ty) if ty in TATQA_TYPES else len(TATQA_TYPES), ty)


def _before_after_cell(t: Table, sub: str, r: RunResult) -> Cell:
    after_raw, before_raw = r.metrics.get(f"tatqa/{sub}"), r.metrics.get(f"tatqa_before/{sub}")
    metric = f"tatqa/{sub}"
    after, before = as_number(after_raw), as_number(before_raw)
    if after is None and before is None:
        return Cell(None, r.missing_text)
    after_cell = t.metric_cell(metric, after_raw, r.missing_text)
    if before is None:
        return after_cell
    before_cell = t.metric_cell(metric, before_raw)
    text = f"{before_cell.text} → {after_cell.text}"
    if after is not None and math.isfinite(after) and math.isfinite(before):
        text += f" ({(after - before) * 100:+.1f} pp)"
    return Cell({"before": json_value(before), "after": json_value(after)}, text)


def scores_table(results: list[RunResult], name: str, title: str, intro: str, metrics: list[tuple[str, str]]) -> Table | None:
    present = [(k, lab) for k, lab in metrics if any(k in r.metrics for r in results)]
    if not present:
        return None
    cols = [Column("metric", "metric", align="left")] + [Column(r.name, r.name) for r in results]
    t = Table(name, title, cols, intro=intro)
    for key, label in present:
        row = {"metric": text_cell(label, key)}
        for r in results:
            row[r.name] = t.metric_cell(key, r.metrics.get(key), r.missing_text)
        t.mark_best_in_row(row, [r.name for r in results], key)
        t.rows.append(row)
    return t


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
            row[r.name] = t.metric_cell(key, r.metrics.get(key), r.missing_text)
        t.rows.append(row)
    return t


# ----------------------------------------------------------------------------- the report


@dataclass
class Report:
    matrix: str
    out_dir: Path
    markdown_path: Path
    json_path: Path
    charts: list[Path]
    tables: dict[str, Table]
    data: dict[str, Any]


def build_report(matrix: Matrix, runs_root: str | Path, out_dir: str | Path, specs: list[RunSpec] | None = None) -> Report:
    """Write report.md, report.json and charts for ``matrix`` into ``out_dir``.

    ``specs``: the runs to report (default: all); smoke specs (matrix ``<name>-smoke``) make
    it read runs/<name>-smoke/.
    """
    from trainyard.report_charts import write_charts

    runs_root, out_dir = Path(runs_root), Path(out_dir)
    specs = list(specs) if specs is not None else list(matrix.runs)
    name = specs[0].matrix if specs else matrix.name
    out_dir.mkdir(parents=True, exist_ok=True)
    results = collect(matrix, runs_root, specs)
    labels = param_labels([k for k in matrix.varying if k not in IGNORED_VARYING])
    sets = eval_sets(results)

    tables: dict[str, Table] = {}
    notes: list[str] = []
    tables["runs"] = runs_table(results, labels, sets)
    for measure in ("loss", "perplexity", "bits_per_byte"):
        t = eval_set_table(results, sets, measure)
        if t is not None:
            tables[t.name] = t
    for t in (consistency_table(results),):
        if t is not None:
            tables[t.name] = t
    delta, note = delta_table(results, matrix.baseline, sets)
    if delta is not None:
        tables[delta.name] = delta
    if note:
        notes.append(note)
    optional = [
        tatqa_table(results),
        scores_table(results, "judge", "Judge scores (MT-Bench style, 1–10)", "Mean single-answer ratings by the judge model, per turn and overall.",
                     [("judge/turn1", "turn 1"), ("judge/turn2", "turn 2"), ("judge/overall", "overall"),
                      ("judge_before/overall", "overall, before training"), ("judge/missing", "unparseable ratings")]),
        scores_table(results, "ifeval", "Instruction following (IFEval)", "Instruction-level accuracy and prompt-level (all instructions followed) success rate.",
                     [("ifeval/instruction_accuracy", "instruction-level accuracy"), ("ifeval/prompt_accuracy", "prompt-level accuracy"),
                      ("ifeval_before/instruction_accuracy", "instruction-level, before training"), ("ifeval_before/prompt_accuracy", "prompt-level, before training")]),
    ]
    for t in optional:
        if t is not None:
            tables[t.name] = t
    appendix = all_metrics_table(results)

    charts = write_charts(results, sets, out_dir)
    md = render_markdown(matrix, name, runs_root, results, tables, appendix, charts, notes)
    md_path, json_path = out_dir / "report.md", out_dir / "report.json"
    md_path.write_text(md)
    data = {
        "matrix": name,
        "matrix_file": str(matrix.path),
        "description": matrix.description,
        "runs_dir": str(runs_root / name),
        "baseline": matrix.baseline,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "varying": {k: labels[k] for k in labels},
        "eval_sets": sets,
        "states": _state_counts(results),
        "runs": [
            {
                "name": r.name,
                "state": r.state,
                "state_text": r.state_text(full=True),
                "reason": r.reason,
                "progress": list(r.progress) if r.progress else None,
                "params": r.params,
                "metrics": r.metrics,
                "consistency": {m: s.to_json() for m, s in run_consistency(r.metrics).items()},
            }
            for r in results
        ],
        "tables": {k: t.to_json() for k, t in tables.items()},
        "notes": notes,
        "charts": {c.name: {"path": c.path.name, "title": c.title, "notes": c.notes} for c in charts},
    }
    write_json_atomic(json_path, data)
    return Report(name, out_dir, md_path, json_path, [c.path for c in charts], tables, data)


def _state_counts(results: list[RunResult]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.state] = counts.get(r.state, 0) + 1
    return counts


def render_markdown(matrix: Matrix, name: str, runs_root: Path, results: list[RunResult], tables: dict[str, Table],
                    appendix: Table | None, charts: list[Any], notes: list[str]) -> str:
    counts = _state_counts(results)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    out = [f"# Report: {name}", ""]
    if matrix.description:
        out += [str(matrix.description).strip(), ""]
    out += [
        f"- matrix file: `{matrix.path}`",
        f"- run directories: `{runs_root / name}/`",
        f"- runs: {len(results)} ({summary})",
    ]
    if matrix.baseline:
        out.append(f"- baseline: `{matrix.baseline}`")
    out.append(f"- generated: {time.strftime('%Y-%m-%d %H:%M:%S')}")
    if any(r.spec.smoke for r in results):
        out += ["", "> Smoke run: tiny local model, bundled fixture data, steps capped. The numbers check the "
                "pipeline, not the study; parameters are shown as the matrix file sets them."]
    if counts.get("completed", 0) < len(results):
        out += ["", "> This matrix is not finished: tables show what is done so far; unfinished runs show their state."]
    out.append("")
    for key in ("runs", "eval_loss", "eval_perplexity", "eval_bits_per_byte", "consistency", "delta_vs_baseline", "tatqa", "judge", "ifeval"):
        if key in tables:
            out.append(tables[key].to_markdown())
    for note in notes:
        out += [f"_{note}_", ""]

    problems = [r for r in results if r.state in ("failed", "diverged", "canceled")]
    if problems:
        out += ["## Failed, diverged and canceled runs", ""]
        for r in problems:
            reason = r.reason or "no reason recorded"
            where = f" at step {r.status['step']}" if isinstance(r.status.get("step"), int) and r.state == "diverged" and "step" not in reason else ""
            lines = [ln for ln in reason.splitlines() if ln.strip()] or [reason]
            # the last line of a traceback names the error; the tail shows where
            out.append(f"- **{r.name}**: {r.state}{where}: {lines[-1].strip()}")
            if len(lines) > 1:
                out += ["", "  ```", *(f"  {line}" for line in lines[-15:]), "  ```"]
            out.append(f"  (logs: `{r.path / 'logs' / 'run.log'}`)")
        out.append("")

    if charts:
        out += ["## Charts", ""]
        for c in charts:
            out += [f"### {c.title}", "", f"![{c.title}]({c.path.name})", ""]
            out += [f"<sub>{n}</sub>  " for n in c.notes]
            if c.notes:
                out.append("")
    if appendix is not None:
        out += ["<details><summary>All final metrics (metrics.json of every run)</summary>", "", appendix.to_markdown(level=3), "</details>", ""]
    return "\n".join(out).rstrip() + "\n"


# ----------------------------------------------------------------------------- CLI


def main_report(matrix: Matrix, specs: list[RunSpec], runs_dir: str | Path = "runs", out: str | Path | None = None) -> int:
    """cli.py's `report` subcommand: the (already selected, maybe smoke) runs of a loaded matrix.

    Prints the paths written; returns the exit code.
    """
    name = specs[0].matrix if specs else matrix.name
    runs_root = Path(runs_dir)
    if not (runs_root / name).is_dir():
        hint = " (did you mean --smoke?)" if (runs_root / smoke_name(name)).is_dir() else ""
        print(f"note: {runs_root / name}/ does not exist yet; every run is reported as '{NOT_STARTED}'{hint}", file=sys.stderr)
    out_dir = Path(out) if out else Path("reports") / name
    report = build_report(matrix, runs_root, out_dir, specs)
    print(f"wrote {report.markdown_path}")
    print(f"wrote {report.json_path}")
    for chart in report.charts:
        print(f"wrote {chart}")
    return 0


def run_report(matrix_path: str | Path, runs_dir: str | Path = "runs", out: str | Path | None = None, smoke: bool = False) -> int:
    """Load a matrix file and report it (the smoke run's results with ``smoke``)."""
    from trainyard.errors import SpecError
    from trainyard.smoke import smoke_spec

    try:
        matrix = load_matrix(matrix_path)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 2
    # the report reads results only: the smoke model path is never loaded
    specs = [smoke_spec(s, "<tiny-local-model>") for s in matrix.runs] if smoke else matrix.runs
    return main_report(matrix, specs, runs_dir, out)


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--matrix", required=True, help="matrix YAML, e.g. jobs/rust_sft.yaml")
    parser.add_argument("--smoke", action="store_true", help="report the --smoke run of the matrix (runs/<matrix>-smoke/)")
    parser.add_argument("--runs-dir", default="runs", help="root of the run directories (default: runs)")
    parser.add_argument("--out", default=None, help="output directory (default: reports/<matrix>/)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainyard.report", description=__doc__.split("\n\n")[0])
    add_report_arguments(parser)
    args = parser.parse_args(argv)
    return run_report(args.matrix, args.runs_dir, args.out, args.smoke)


if __name__ == "__main__":
    sys.exit(main())
