"""`launch.py report`: a matrix's run directories -> report.md, report.json and PNG charts.

    python launch.py report --matrix jobs/rust_sft.yaml [--smoke] [--runs-dir runs] [--out DIR]

Reads only the run-directory contract (spec.json, status.json, metrics.json, history.json
under runs/<matrix>/<run>/), so it works on a partially finished matrix. Each run's
parameters come from its own spec.json; a run trained with a spec that differs from the
YAML's is marked stale (what changed) and never ranked. Runs that differ only in their
seed are reported as mean ± std (n). Sections: findings, runs, grid pivots, per-eval-set
tables, consistency, Δ vs baseline, TAT-QA / judge / IFEval before → after, DPO rewards,
per-run progress and eval progression, failed and stale runs, charts, appendices.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainyard.contract import eval_metric
from trainyard.evaluation.consistency import run_consistency
from trainyard.matrix import Matrix, load_matrix
from trainyard.report_findings import best_group, findings
from trainyard.report_grid import factors, pivot_table, pivots, reference, slices
from trainyard.report_inputs import (
    NOT_STARTED,
    Group,
    LossKind,
    RunResult,
    collect,
    common_loss_kind,
    group_runs,
    loss_comparable,
    report_keys,
    result_eval_sets,
    seed_keys,
)
from trainyard.report_progress import eval_progression_table, progress, progress_table, reward_table
from trainyard.report_sections import (
    all_metrics_table,
    consistency_table,
    delta_summary,
    delta_table,
    eval_set_table,
    ifeval_table,
    judge_table,
    loss_metric,
    objective_table,
    runs_table,
    tatqa_table,
    unit_suffix,
)
from trainyard.report_tables import Table
from trainyard.run_dir import write_json_atomic
from trainyard.smoke import smoke_name
from trainyard.spec import RunSpec

__all__ = ["RunResult", "build_report", "collect", "main_report", "param_labels", "run_report"]

# Leaves too generic to stand alone as a column label ("limit" of what?).
GENERIC_LEAVES = {"name", "limit", "source", "split", "format", "config", "seed", "text_field", "enabled", "push", "private", "steps", "strategy"}


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


def primary_metric(results: list[RunResult], sets: list[str], kind: LossKind) -> tuple[str, str] | None:
    """The metric a study is about: TAT-QA EM for a DPO study that measures it, else eval loss."""
    have = set().union(*(r.metrics for r in results)) if results else set()
    if any(r.spec.recipe == "dpo" for r in results):
        if "tatqa/exact_match" in have:
            return "tatqa/exact_match", "TAT-QA exact match"
        acc = next((eval_metric(s, "rewards/accuracies") for s in sets if eval_metric(s, "rewards/accuracies") in have), None)
        if acc and not loss_comparable(results):
            return acc, f"{acc.split('/')[1]} reward accuracy"
    if len(sets) > 1:
        return "avg/loss", f"avg eval {kind.name} ({len(sets)} sets, {unit_suffix(kind)})"
    if sets:
        return eval_metric(sets[0], "loss"), f"{sets[0]} eval {kind.name} ({unit_suffix(kind)})"
    if "train/loss" in have:
        return "train/loss", f"train {kind.name} ({unit_suffix(kind)})"
    return None


def finding_metrics(results: list[RunResult], sets: list[str], primary: tuple[str, str] | None) -> list[tuple[str, str]]:
    have = set().union(*(r.metrics for r in results)) if results else set()
    out = [primary] if primary else []
    cands = []
    if len(sets) > 1:
        cands.append(("avg/perplexity", f"avg eval perplexity ({len(sets)} sets)"))
    elif sets:
        cands += [(eval_metric(sets[0], "loss"), f"{sets[0]} eval loss"), (eval_metric(sets[0], "perplexity"), f"{sets[0]} perplexity"),
                  (eval_metric(sets[0], "rewards/accuracies"), f"{sets[0]} reward accuracy")]
    cands += [("tatqa/exact_match", "TAT-QA exact match"), ("tatqa/f1", "TAT-QA F1"), ("judge/overall", "judge score (1–10)"),
              ("ifeval/prompt_accuracy", "IFEval prompt-level accuracy"), ("ifeval/instruction_accuracy", "IFEval instruction-level accuracy")]
    comparable = loss_comparable(results)
    for key, label in cands:
        if not comparable and loss_metric(key):
            continue
        present = any(eval_metric(s, key[4:]) in have for s in sets) if key.startswith("avg/") else key in have
        if present and all(key != k for k, _ in out):
            out.append((key, label))
    return out


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


@dataclass
class Sections:
    """Everything render_markdown lays out, in order."""

    findings: list[str]
    tables: dict[str, Table]
    pivots: list[str]
    delta_full: Table | None
    progressions: list[Table]
    individual: list[Table]
    appendix: Table | None
    notes: list[str]


def build_report(matrix: Matrix, runs_root: str | Path, out_dir: str | Path, specs: list[RunSpec] | None = None) -> Report:
    """Write report.md, report.json and charts for ``matrix`` into ``out_dir``.

    ``specs``: the runs to report (default: all); smoke specs (matrix ``<name>-smoke``) make
    it read runs/<name>-smoke/.
    """
    from trainyard.report_charts import CURVE_CHARTS, write_curve_charts
    from trainyard.report_charts_grid import chart_eval_bars, chart_heatmap, chart_slices

    runs_root, out_dir = Path(runs_root), Path(out_dir)
    specs = list(specs) if specs is not None else list(matrix.runs)
    name = specs[0].matrix if specs else matrix.name
    out_dir.mkdir(parents=True, exist_ok=True)
    results = collect(matrix, runs_root, specs)
    keys = report_keys(matrix)
    labels = param_labels(keys)
    groups = group_runs(results, keys, labels)
    seeded = any(len(g.runs) > 1 for g in groups)
    if not seeded:  # every seed is its own experiment here: one row per run, seed as a column
        groups = [Group(r.name, [r], {k: r.params.get(k) for k in keys}) for r in results]
    group_labels = {k: v for k, v in labels.items() if not (seeded and k in seed_keys(keys))}
    factor_keys = [k for k in keys if k not in seed_keys(keys)]
    sets = result_eval_sets(results)
    kind = common_loss_kind(results) if results else LossKind("loss", "")
    base = next((g for g in groups if any(r.name == matrix.baseline for r in g.runs)), None)

    tables: dict[str, Table] = {}
    notes: list[str] = []
    tables["runs"] = runs_table(groups, group_labels, sets, kind, seeded)
    primary = primary_metric(results, sets, kind)
    fs = factors(groups, factor_keys, labels)
    ref = reference(groups, fs, base)
    pvs = pivots(groups, fs, ref)
    pivot_names = []
    if primary:
        for p in pvs:
            t = pivot_table(p, primary[0], primary[1], sets)
            tables[t.name] = t
            pivot_names.append(t.name)
    for measure in ("loss", "perplexity", "bits_per_byte"):
        t = eval_set_table(groups, sets, measure, kind)
        if t is not None:
            tables[t.name] = t
    for t in (objective_table(groups, sets), consistency_table(results)):
        if t is not None:
            tables[t.name] = t
    delta, note = delta_table(groups, base, matrix.baseline, sets)
    delta_full = None
    if delta is not None:
        summary = delta_summary(delta, groups, base, sets) if base is not None else None
        if summary is not None:
            tables[summary.name] = summary
            delta_full = delta
        tables[delta.name] = delta
    if note:
        notes.append(note)
    for t in (tatqa_table(groups), judge_table(groups), ifeval_table(groups), reward_table(results)):
        if t is not None:
            tables[t.name] = t
    tables["progress"] = progress_table(results)
    progressions = [t for r in results if (t := eval_progression_table(r)) is not None]
    individual = []
    if seeded:
        singles = [Group(r.name, [r], {k: r.params.get(k) for k in keys}) for r in results]
        t = runs_table(singles, labels, sets, kind, seeds=False)
        t.name, t.title = "individual_runs", "Individual runs"
        individual.append(t)
        for measure in ("loss", "perplexity"):
            et = eval_set_table(singles, sets, measure, kind)
            if et is not None:
                et.name, et.title = f"individual_{et.name}", f"{et.title}, individual runs"
                individual.append(et)
    best = best_group(primary[0], groups, sets) if primary else None
    found = findings(groups, results, base, sets, finding_metrics(results, sets, primary), best)

    charts = write_curve_charts(results, sets, out_dir)
    bars = chart_eval_bars(groups, sets, base, out_dir / "eval_perplexity.png")
    charts += [bars] if bars else []
    if primary:
        for p in pvs:
            charts.append(chart_heatmap(p, primary[0], primary[1], sets, out_dir / f"heatmap_{p.name[len('pivot_'):]}.png"))
        sl = chart_slices(slices(groups, fs, ref, pvs), primary[0], primary[1], sets, base, out_dir / "metric_vs_parameter.png")
        charts += [sl] if sl else []
    made = {c.path.name for c in charts}
    for old in out_dir.glob("*.png"):
        if old.name not in made and (old.stem in (*CURVE_CHARTS, "eval_perplexity", "metric_vs_parameter") or old.stem.startswith("heatmap_")):
            old.unlink()  # a chart from an earlier report that no longer has data

    sections = Sections(found, tables, pivot_names, delta_full, progressions, individual,
                        all_metrics_table(results), notes)
    md = render_markdown(matrix, name, runs_root, results, sections, charts)
    md_path, json_path = out_dir / "report.md", out_dir / "report.json"
    md_path.write_text(md)
    all_tables = {**tables, **{t.name: t for t in individual}, **{t.name: t for t in progressions}}
    data = {
        "matrix": name,
        "matrix_file": str(matrix.path),
        "description": matrix.description,
        "runs_dir": str(runs_root / name),
        "baseline": matrix.baseline,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "varying": {k: labels[k] for k in labels},
        "seed_keys": seed_keys(keys) if seeded else [],
        "eval_sets": sets,
        "loss_unit": {"name": kind.name, "unit": kind.unit},
        "primary_metric": primary[0] if primary else None,
        "states": _state_counts(results),
        "findings": found,
        "groups": [{"name": g.name, "runs": [r.name for r in g.runs], "params": g.params, "rankable": g.rankable} for g in groups],
        "factors": [{"label": f.label, "keys": f.keys} for f in fs],
        "runs": [
            {
                "name": r.name,
                "state": r.state,
                "state_text": r.state_text(full=True),
                "reason": r.reason,
                "progress": list(r.progress) if r.progress else None,
                "params": r.params,
                "stale": r.stale,
                "changes": [{"key": k, "trained": old, "yaml": new} for k, old, new in r.changes],
                "spec_problem": r.spec_problem,
                "rankable": r.rankable,
                "metrics": r.metrics,
                "progress_summary": progress(r).to_json(),
                "consistency": {m: s.to_json() for m, s in run_consistency(r.metrics).items()},
            }
            for r in results
        ],
        "tables": {k: t.to_json() for k, t in all_tables.items()},
        "notes": notes,
        "charts": {c.name: {"path": c.path.name, "title": c.title, "notes": c.notes} for c in charts},
    }
    write_json_atomic(json_path, data)
    return Report(name, out_dir, md_path, json_path, [c.path for c in charts], all_tables, data)


def _state_counts(results: list[RunResult]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.state] = counts.get(r.state, 0) + 1
    return counts


SECTION_ORDER = ("eval_loss", "eval_perplexity", "eval_bits_per_byte", "objective_parts", "consistency")
LATER_ORDER = ("tatqa", "judge", "ifeval", "dpo_rewards", "progress")


def render_markdown(matrix: Matrix, name: str, runs_root: Path, results: list[RunResult], s: Sections, charts: list[Any]) -> str:
    counts = _state_counts(results)
    summary = ", ".join(f"{n} {st}" for st, n in sorted(counts.items(), key=lambda kv: -kv[1]))
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
    stale = [r for r in results if r.stale]
    if stale:
        out += ["", f"> {len(stale)} run(s) were trained with a spec that differs from the YAML now (stale): "
                "shown with their trained parameters, never ranked. See *Stale runs*."]
    out += ["", "## Findings", ""] + [f"- {f}" for f in s.findings] + [""]
    t = s.tables
    out.append(t["runs"].to_markdown())
    for key in s.pivots:
        out.append(t[key].to_markdown())
    for key in SECTION_ORDER:
        if key in t:
            out.append(t[key].to_markdown())
    if "delta_summary" in t:
        out.append(t["delta_summary"].to_markdown())
        out += [f"<details><summary>Full Δ vs baseline table ({len(s.delta_full.rows)} rows)</summary>", "",
                s.delta_full.to_markdown(level=3), "</details>", ""]
    elif "delta_vs_baseline" in t:
        out.append(t["delta_vs_baseline"].to_markdown())
    for note in s.notes:
        out += [f"_{note}_", ""]
    for key in LATER_ORDER:
        if key in t:
            out.append(t[key].to_markdown())
    if s.progressions:
        out += ["## Eval progression", "", "Every evaluation during training, per run (click to open)."  , ""]
        for p in s.progressions:
            out += [f"<details><summary>{p.title[len('Eval progression: '):]} ({len(p.rows)} evaluations)</summary>", "",
                    p.to_markdown(level=3), "</details>", ""]

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
    if stale:
        out += ["## Stale runs", "", "Trained with a spec that differs from the matrix file now (`key: trained → YAML now`); "
                "their parameters above are the trained ones. `--restart` re-runs them with the current spec.", ""]
        for r in stale:
            if r.spec_problem:
                out.append(f"- **{r.name}**: {r.spec_problem}")
            else:
                out.append(f"- **{r.name}**: " + "; ".join(f"`{k}`: {_p(old)} → {_p(new)}" for k, old, new in r.changes))
        out.append("")

    if charts:
        out += ["## Charts", ""]
        for c in charts:
            out += [f"### {c.title}", "", f"![{c.title}]({c.path.name})", ""]
            out += [f"<sub>{n}</sub>  " for n in c.notes]
            if c.notes:
                out.append("")
    if s.individual:
        out += ["## Appendix: individual runs", ""]
        for it in s.individual:
            out += [f"<details><summary>{it.title}</summary>", "", it.to_markdown(level=3), "</details>", ""]
    if s.appendix is not None:
        out += ["<details><summary>All final metrics (metrics.json of every run)</summary>", "", s.appendix.to_markdown(level=3), "</details>", ""]
    return "\n".join(out).rstrip() + "\n"


def _p(v: Any) -> str:
    from trainyard.report_tables import fmt_param

    return fmt_param(v)


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
