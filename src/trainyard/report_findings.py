"""The report's headline: findings stated from the numbers, never written by hand.

Per ranked metric: the best group (unique; exact ties are said to be ties), its value and its
Δ vs the baseline (with "within 1 std" for seed groups); then every diverged / failed run
with its reason, every stale run with what changed, and what is unfinished.
"""

from __future__ import annotations

from trainyard.report_inputs import Group, RunResult
from trainyard.report_progress import REWARD_ACC, eval_points, start_end, train_points
from trainyard.report_sections import delta, delta_text
from trainyard.report_tables import direction, fmt_number, fmt_spread


def _value_text(metric: str, g: Group, sets: list[str]) -> str:
    a = g.agg(metric, sets)
    shown = f"eval/avg/{metric[4:]}" if metric.startswith("avg/") else metric
    text = fmt_number(shown, a.mean)
    if len(g.runs) > 1:
        text += f" ± {fmt_spread(shown, a.std)}" if a.std is not None else ""
        text += f" (n={a.n})"
    return text


def _winners(metric: str, groups: list[Group], sets: list[str]) -> tuple[list[tuple[Group, float]], list[Group]]:
    """(every ranked group with its value, the groups at the best value); ([], []) when nothing ranks."""
    way = direction(f"eval/avg/{metric[4:]}" if metric.startswith("avg/") else metric)
    ranked = [(g, g.mean(metric, sets)) for g in groups if g.rankable]
    ranked = [(g, v) for g, v in ranked if v is not None]
    if way is None or not ranked:
        return [], []
    best_v = (min if way == "min" else max)(v for _, v in ranked)
    return ranked, [g for g, v in ranked if v == best_v]


def best_finding(metric: str, label: str, groups: list[Group], base: Group | None, sets: list[str]) -> str | None:
    ranked, winners = _winners(metric, groups, sets)
    if not ranked:
        return None
    if len(ranked) == 1:
        return f"{label}: only **{winners[0].name}** has a ranked value ({_value_text(metric, winners[0], sets)})."
    if len(winners) == len(ranked):
        return f"{label}: all {len(ranked)} ranked runs tie at {_value_text(metric, winners[0], sets)} (no difference)."
    if len(winners) > 1:
        return f"{label}: tie between {', '.join(f'**{g.name}**' for g in winners)} at {_value_text(metric, winners[0], sets)} (no single best)."
    best = winners[0]
    text = f"{label}: best **{best.name}** at {_value_text(metric, best, sets)}"
    if base is not None and base.rankable:
        if best is base:
            text += " — the baseline itself"
        else:
            shown = f"eval/avg/{metric[4:]}" if metric.startswith("avg/") else metric
            info = delta(best, base, metric, sets)
            if info is not None:
                text += f", {delta_text(shown, info)} vs the baseline {base.name} ({_value_text(metric, base, sets)})"
    return text + "."


def problem_findings(results: list[RunResult]) -> list[str]:
    out = []
    for r in results:
        if r.state in ("diverged", "failed", "canceled"):
            reason = (r.reason or "no reason recorded").splitlines()[-1].strip()
            step = r.status.get("step")
            where = f" at step {step}" if isinstance(step, int) and r.state == "diverged" and "step" not in reason else ""
            out.append(f"**{r.name}** {r.state}{where}: {reason} — not ranked.")
    for r in results:
        if r.stale:
            out.append(f"**{r.name}** is {r.stale_text()} (trained value → YAML now); re-run it with `--restart` to compare it — not ranked.")
    unfinished = [r.name for r in results if r.state in ("queued", "running", "not started")]
    if unfinished:
        out.append(f"{len(unfinished)} of {len(results)} runs not finished ({', '.join(unfinished)}): the findings cover finished runs only.")
    return out


def dpo_findings(groups: list[Group], primary_best: Group | None) -> list[str]:
    """Reward accuracy start → end of the best run (else the first DPO run): eval and training."""
    runs = [r for g in ([primary_best] if primary_best else []) + groups for r in g.runs if r.spec.recipe == "dpo" and r.rankable]
    for r in runs:
        ev = start_end(next(iter(eval_points(r, REWARD_ACC).values()), []))
        tr = start_end(train_points(r, REWARD_ACC))
        parts = ([f"held-out pairs {ev.text(REWARD_ACC)}"] if ev else []) + ([f"training logs {tr.text(REWARD_ACC)}"] if tr else [])
        if parts:
            return [f"Reward accuracy of **{r.name}**: " + "; ".join(parts) + "."]
    return []


def findings(groups: list[Group], results: list[RunResult], base: Group | None, sets: list[str],
             metrics: list[tuple[str, str]], primary_best: Group | None) -> list[str]:
    out = [f for m, label in metrics if (f := best_finding(m, label, groups, base, sets))]
    out += dpo_findings(groups, primary_best)
    out += problem_findings(results)
    if not out:
        out.append("No run has finished with results yet.")
    return out


def best_group(metric: str, groups: list[Group], sets: list[str]) -> Group | None:
    """The unique best group (None on a tie or when nothing ranks)."""
    _, winners = _winners(metric, groups, sets)
    return winners[0] if len(winners) == 1 else None
