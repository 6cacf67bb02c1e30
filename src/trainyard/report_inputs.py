"""What `launch.py report` reads: each run directory, the spec it was trained with, seed groups.

A run's parameters come from its own spec.json (what it trained with), never from the
current YAML. A run whose spec.json trains differently from the YAML's spec
(``RunSpec.training_fingerprint``) is *stale*: it is shown with what changed
(``key: old → new``) and never ranked against the others. Runs that differ only in
``train.seed`` / ``data.seed`` form one :class:`Group`, reported as mean ± std (n).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainyard.contract import RunState, Status, eval_metric, eval_sets
from trainyard.evaluation.consistency import as_number
from trainyard.matrix import Matrix, flatten
from trainyard.report_tables import fmt_param, json_value
from trainyard.run_dir import RunDir, read_json
from trainyard.spec import RunSpec

NOT_STARTED = "not started"
SEED_KEYS = ("train.seed", "data.seed")
# Keys that differ between runs but are not experiment parameters.
IGNORED_VARYING = {"description"}
REASON_CHARS = 80
STALE_SHOWN = 3  # changes listed inline; the rest are in the stale-runs section


# ----------------------------------------------------------------------------- loss kinds


@dataclass(frozen=True)
class LossKind:
    """What a recipe's `loss` is, so headers and axes carry the right name and unit."""

    name: str  # "CE loss", "DPO loss"
    unit: str  # "nats / token", "per pair"
    train_key: str = "loss"  # history key of the training loss that is ranked / plotted
    eval_measure: str = "loss"  # eval/<set>/<measure> in history of the ranked eval loss
    cross_entropy: bool = True  # perplexity = exp(loss) makes sense

    @property
    def label(self) -> str:
        return f"{self.name} ({self.unit})"


CE = LossKind("CE loss", "nats / token")
# mixed_loss: the objective (1-α)·CE + α·cos is logged as `loss`; CE is ranked and plotted.
MIXED_CE = LossKind("CE loss", "nats / token", train_key="ce_loss", eval_measure="ce_loss")


def loss_kind(spec: RunSpec) -> LossKind:
    if spec.recipe == "dpo":
        loss_type = spec.dpo.loss_type if spec.dpo else "sigmoid"
        return LossKind("DPO loss", f"{loss_type}, per preference pair", cross_entropy=False)
    if spec.recipe == "mixed_loss":
        return MIXED_CE
    return CE


def common_loss_kind(results: list[RunResult]) -> LossKind:
    kinds = {r.loss for r in results}
    if len(kinds) == 1:
        return kinds.pop()
    return LossKind("loss", "units differ by recipe", cross_entropy=all(k.cross_entropy for k in kinds))


def loss_comparable(results: list[RunResult]) -> bool:
    """Whether the runs' losses may be ranked against each other: a DPO loss depends on β and
    the loss type (-log σ(β·Δ) at another β is another scale), so it is ranked only when they agree."""
    dpo = {(r.spec.dpo.beta, r.spec.dpo.loss_type, r.spec.dpo.label_smoothing) for r in results if r.spec.recipe == "dpo" and r.spec.dpo}
    return len(dpo) <= 1


LOSS_NOT_RANKED = ("DPO loss is not ranked: it depends on β and the loss type, which differ between these runs "
                   "(reward accuracy, TAT-QA and the generation scores are comparable).")


# ----------------------------------------------------------------------------- one run


@dataclass
class RunResult:
    """One run of the matrix as its run directory shows it now."""

    name: str
    spec: RunSpec  # what the run trained with (spec.json), else the YAML's spec
    params: dict[str, Any]
    path: Path
    status: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    # (dotted key, trained value, value in the YAML now) when spec.json trains differently
    changes: list[tuple[str, Any, Any]] = field(default_factory=list)
    spec_problem: str | None = None  # spec.json unreadable: the run cannot be compared

    @property
    def state(self) -> str:
        if not self.status:
            return NOT_STARTED
        return str(Status.from_dict(self.status).state)

    @property
    def reason(self) -> str | None:
        text = Status.from_dict(self.status).reason if self.status else None
        return str(text).strip() if text else None

    @property
    def stale(self) -> bool:
        return bool(self.changes) or self.spec_problem is not None

    @property
    def rankable(self) -> bool:
        """Completed with the current spec: the only runs ranked, aggregated, starred."""
        return self.state == RunState.COMPLETED.value and not self.stale

    @property
    def loss(self) -> LossKind:
        return loss_kind(self.spec)

    @property
    def progress(self) -> tuple[int, int] | None:
        step, total = self.status.get("step"), self.status.get("max_steps")
        if isinstance(step, int) and isinstance(total, int) and total > 0:
            return step, total
        return None

    def stale_text(self, limit: int = STALE_SHOWN) -> str:
        if self.spec_problem:
            return f"stale: {self.spec_problem}"
        shown = [f"{k}: {fmt_param(old)} → {fmt_param(new)}" for k, old, new in self.changes[:limit]]
        more = len(self.changes) - limit
        return "stale: " + "; ".join(shown) + (f"; +{more} more" if more > 0 else "")

    def state_text(self, full: bool = False) -> str:
        """'completed', 'diverged (non-finite loss at step 120)', 'running (step 40/100, 40%)'."""
        state = self.state
        if state in ("failed", "diverged", "canceled") and self.reason:
            reason = self.reason.splitlines()[-1] if not full else self.reason
            if not full and len(reason) > REASON_CHARS:
                reason = reason[: REASON_CHARS - 1] + "…"
            text = f"{state} ({reason})"
        elif state == "running" and self.progress:
            step, total = self.progress
            text = f"running (step {step}/{total}, {100 * step / total:.0f}%)"
        else:
            text = state
        if self.stale:
            text += f" ({self.stale_text(len(self.changes) if full else STALE_SHOWN)})"
        return text

    @property
    def missing_text(self) -> str:
        """What a cell shows for a metric this run does not have: its state, never a blank."""
        return "—" if self.state == "completed" else self.state

    def eval_set_order(self) -> list[str]:
        return [self.spec.eval.held_out_name] + [d.name for d in self.spec.eval.datasets]

    def value(self, metric: str, sets: list[str] | None = None) -> float | None:
        """A final metric as a number; 'avg/<measure>' = mean over ``sets`` when every one is finite."""
        if metric.startswith("avg/"):
            measure = metric[4:]
            vals = [as_number(self.metrics.get(eval_metric(s, measure))) for s in sets or []]
            if not vals or any(v is None or not math.isfinite(v) for v in vals):
                return None
            return math.fsum(vals) / len(vals)  # type: ignore[arg-type]
        if metric == "train/ce_loss" and metric not in self.metrics:
            return self.last_logged("ce_loss")
        return as_number(self.metrics.get(metric))

    def last_logged(self, key: str) -> float | None:
        """The last value of a training-log key in history.json (e.g. mixed loss `ce_loss`)."""
        for h in reversed(self.history):
            if key in h and not any(k.startswith("eval_") for k in h):
                return as_number(h[key])
        return None


def read_run(runs_root: Path, spec: RunSpec, original: RunSpec, varying: list[str]) -> RunResult:
    """The run directory of ``spec`` (absent -> 'not started'), compared with the YAML's spec."""
    rd = RunDir.for_run(runs_root, spec.matrix, spec.name)
    trained, problem = spec, None
    raw = read_json(rd.spec_file)
    if raw is not None:
        try:
            trained = RunSpec.model_validate(raw)
        except Exception as exc:  # written by another version of the schema
            problem = f"spec.json does not validate against the current schema ({str(exc).splitlines()[0]})"
    elif rd.spec_file.exists():
        problem = "spec.json is not valid JSON"
    changes = [] if problem else spec_changes(trained, spec)
    # a smoke spec stands for the matrix's run: show the YAML's values unless it is stale
    shown = original if (spec.smoke and not changes and not problem) else trained
    flat = flatten(shown.model_dump(mode="json"))
    return RunResult(
        name=spec.name,
        spec=trained,
        params={k: flat.get(k) for k in varying},
        path=rd.path,
        status=rd.status(),
        metrics=rd.metrics(),
        history=rd.history(),
        changes=changes,
        spec_problem=problem,
    )


def spec_changes(trained: RunSpec, current: RunSpec) -> list[tuple[str, Any, Any]]:
    """What trains differently between the run's spec.json and the YAML's spec (sorted keys)."""
    if trained.smoke and current.smoke:
        # the tiny model's directory differs between machines, not the experiment
        current = current.model_copy(update={"model": current.model.model_copy(update={"name": trained.model.name})})
    if trained.training_fingerprint() == current.training_fingerprint():
        return []
    skip = set(RunSpec.EXECUTION_SECTIONS)
    old = flatten(trained.model_dump(mode="json", exclude=skip))
    new = flatten(current.model_dump(mode="json", exclude=skip))
    changes = [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if trained.smoke and current.smoke:
        # bundled fixtures are absolute paths of the checkout that ran the smoke: the same file elsewhere is no change
        changes = [c for c in changes if not _same_fixture(c[1], c[2])]
    return changes


def _same_fixture(a: Any, b: Any) -> bool:
    from trainyard.fixtures import FIXTURES_DIR

    marker = f"/{Path(FIXTURES_DIR).name}/"
    return isinstance(a, str) and isinstance(b, str) and marker in a and marker in b and a.split(marker)[-1] == b.split(marker)[-1]


def collect(matrix: Matrix, runs_root: Path, specs: list[RunSpec] | None = None) -> list[RunResult]:
    """Read each run's directory, in matrix order. ``specs``: the runs to report (smoke specs
    read runs/<matrix>-smoke/)."""
    varying = report_keys(matrix)
    by_name = {r.name: r for r in matrix.runs}
    return [read_run(Path(runs_root), s, by_name.get(s.name, s), varying) for s in (specs if specs is not None else matrix.runs)]


def report_keys(matrix: Matrix) -> list[str]:
    return [k for k in matrix.varying if k not in IGNORED_VARYING]


def result_eval_sets(results: list[RunResult]) -> list[str]:
    """Eval sets with any reported metric, in the order the specs declare them."""
    found: set[str] = set()
    for r in results:
        for measure in ("loss", "perplexity", "bits_per_byte"):
            found |= set(eval_sets(r.metrics, measure))
    ordered: list[str] = []
    for r in results:
        for s in r.eval_set_order():
            if s in found and s not in ordered:
                ordered.append(s)
    return ordered + sorted(found - set(ordered))


# ----------------------------------------------------------------------------- seed groups


@dataclass
class Agg:
    """Mean ± sample std over the finite values of a group's rankable runs."""

    values: list[float]
    nonfinite: int = 0  # rankable runs whose value is inf / nan (excluded)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return math.fsum(self.values) / len(self.values)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) >= 2 else None

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean if self.values else None, "std": self.std, "n": self.n,
                "values": [json_value(v) for v in self.values], "nonfinite": self.nonfinite}


@dataclass
class Group:
    """Runs that differ only in their seeds (one run when no seed varies)."""

    name: str
    runs: list[RunResult]
    params: dict[str, Any]  # the non-seed varying keys

    @property
    def single(self) -> RunResult | None:
        return self.runs[0] if len(self.runs) == 1 else None

    @property
    def rankable(self) -> bool:
        return all(r.rankable for r in self.runs)

    def agg(self, metric: str, sets: list[str] | None = None) -> Agg:
        values, bad = [], 0
        for r in self.runs:
            if not r.rankable:
                continue
            v = r.value(metric, sets)
            if v is None:
                raw = as_number(r.metrics.get(metric))
                bad += raw is not None and not math.isfinite(raw)
                continue
            if math.isfinite(v):
                values.append(v)
            else:
                bad += 1
        return Agg(values, bad)

    def mean(self, metric: str, sets: list[str] | None = None) -> float | None:
        a = self.agg(metric, sets)
        return a.mean if a.n else None

    @property
    def state_text(self) -> str:
        if self.single:
            return self.single.state_text()
        counts: dict[str, int] = {}
        for r in self.runs:
            key = r.state + (" (stale)" if r.stale else "")
            counts[key] = counts.get(key, 0) + 1
        return ", ".join(f"{n} {s}" for s, n in counts.items())

    @property
    def missing_text(self) -> str:
        return self.single.missing_text if self.single else ("—" if self.rankable else self.state_text)


def seed_keys(keys: list[str]) -> list[str]:
    return [k for k in keys if k in SEED_KEYS]


def group_runs(results: list[RunResult], keys: list[str], labels: dict[str, str]) -> list[Group]:
    """Runs with equal non-seed parameters, in matrix order; named by those parameters."""
    seeds = seed_keys(keys)
    factors = [k for k in keys if k not in seeds]
    if not seeds:
        return [Group(r.name, [r], {k: r.params.get(k) for k in factors}) for r in results]
    groups: dict[str, Group] = {}
    for r in results:
        params = {k: r.params.get(k) for k in factors}
        key = repr(sorted(params.items()))
        if key not in groups:
            name = ", ".join(f"{labels.get(k, k)}={fmt_param(v)}" for k, v in params.items()) or "all runs"
            groups[key] = Group(name, [], params)
        groups[key].runs.append(r)
    return list(groups.values())
