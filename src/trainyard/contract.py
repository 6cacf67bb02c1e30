"""The run contract, defined once: run states, status.json, entrypoint exit codes, metric names.

Every reader and writer of a run directory (the entrypoint, the backends, `status`,
`report`, the k8s podFailurePolicy, the tests) imports these names instead of spelling
strings by hand. Pure Python: the launcher imports it without torch.
"""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, ConfigDict


class RunState(str, enum.Enum):
    """The `state` of status.json."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    DIVERGED = "diverged"
    CANCELED = "canceled"

    def __str__(self) -> str:  # f-strings and tables show the plain value
        return self.value

    @property
    def final(self) -> bool:
        return self in FINAL_STATES

    @classmethod
    def parse(cls, value: Any) -> RunState | None:
        try:
            return cls(value)
        except ValueError:
            return None


FINAL_STATES = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.DIVERGED, RunState.CANCELED})
ACTIVE_STATES = frozenset({RunState.QUEUED, RunState.RUNNING})
# Final results: re-running the matrix keeps them (a diverged run would diverge again).
DONE_STATES = frozenset({RunState.COMPLETED, RunState.DIVERGED})


class ExitCode(enum.IntEnum):
    """`python -m trainyard.run` exit codes. Backends derive their retry rules from these."""

    COMPLETED = 0
    FAILED = 1  # unexpected: the traceback is in logs/run.log; a retry may help
    BAD_INPUT = 2  # the spec or the data is wrong: a retry cannot fix it
    DIVERGED = 3  # training went non-finite or spiked: a retry would diverge again
    LOCKED = 75  # another process trains this run directory; nothing was written (EX_TEMPFAIL)
    CANCELED = 130  # SIGTERM/SIGINT after a checkpoint: resumable

    @classmethod
    def for_state(cls, state: RunState) -> ExitCode:
        return {
            RunState.COMPLETED: cls.COMPLETED,
            RunState.DIVERGED: cls.DIVERGED,
            RunState.CANCELED: cls.CANCELED,
        }.get(state, cls.FAILED)


# Exit codes a retry cannot fix (k8s podFailurePolicy FailJob, HF Jobs attempts). LOCKED is
# retryable: the other trainer (e.g. a pod still terminating) lets go, and a retry resumes.
NO_RETRY_EXIT_CODES = (ExitCode.BAD_INPUT, ExitCode.DIVERGED, ExitCode.CANCELED)


def fold_legacy_error(fields: dict[str, Any]) -> dict[str, Any]:
    """`error` (the spelling before the contract had one reason field) becomes `reason`,
    unless a reason is given too. Returns a copy without `error`."""
    fields = dict(fields)
    legacy = fields.pop("error", None)
    if fields.get("reason") is None and legacy is not None:
        fields["reason"] = legacy
    return fields


class Status(BaseModel):
    """status.json. Unknown keys are kept (older/newer writers), so reading never fails."""

    model_config = ConfigDict(extra="allow")

    state: RunState = RunState.QUEUED
    updated_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    # the one field that says why a run is failed / diverged / canceled (never `error`)
    reason: str | None = None
    divergence: dict[str, Any] | None = None  # diverged runs: {step, metric, value} that tripped the guard
    step: int | None = None
    max_steps: int | None = None
    loss: float | str | None = None
    pid: int | None = None  # the trainer's process (with `host`)
    host: str | None = None
    launcher_pid: int | None = None  # the local launcher that queued the run
    resumed_from: str | None = None
    warnings: list[str] = []
    note: str | None = None
    job: dict[str, Any] | None = None  # remote backends: the job record (launcher side)
    backend: str | None = None
    submitted_at: float | None = None
    pushed_to: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to status.json (unset fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Status:
        data = fold_legacy_error(data or {})
        if RunState.parse(data.get("state")) is None:
            data.pop("state", None)
        try:
            return cls.model_validate(data)
        except Exception:  # a hand-edited or foreign file: keep what parses
            return cls(state=RunState.parse(data.get("state")) or RunState.QUEUED, reason=str(data.get("reason") or "") or None)


# ----------------------------------------------------------------------------- metric names
# metrics.json and Trackio use flat names: train/<x>, eval/<set>/<x>, judge/..., ifeval/...
TRAIN_LOSS = "train/loss"  # the last logged training loss (a curve point)
TRAIN_MEAN_LOSS = "train/mean_loss"  # mean of every optimizer step's loss, each step once across resumes (step_loss.py)
TRAIN_TOKENS = "train/tokens"  # non-padding tokens seen, whole run
TRAIN_TOKENS_PER_SECOND = "train/tokens_per_second"  # whole run, across resumes
TRAIN_RUNTIME = "train/runtime_s"  # training time summed over every segment
WALL_TIME = "run/wall_time_s"  # entrypoint wall time summed over every segment
SEGMENTS = "run/segments"  # how many processes trained this run (1 + resumes)
PADDING_FRACTION = "train/padding_fraction"
# End-of-run values in Trackio (whole-run train metrics, the final exact evaluation): logged
# once under summary/<name>, never as one more point of the <name> curve.
SUMMARY_PREFIX = "summary/"


def summary_metric(name: str) -> str:
    """'summary/<name>', e.g. summary_metric('eval/heldout/loss') -> 'summary/eval/heldout/loss'."""
    return f"{SUMMARY_PREFIX}{name}"


def eval_metric(eval_set: str, measure: str) -> str:
    """'eval/<set>/<measure>', e.g. eval_metric('heldout', 'loss') -> 'eval/heldout/loss'."""
    return f"eval/{eval_set}/{measure}"


def parse_eval_metric(key: str) -> tuple[str, str] | None:
    """'eval/<set>/<measure>' -> (set, measure); None for other names. Sets may not hold '/'."""
    if not key.startswith("eval/"):
        return None
    rest = key[len("eval/"):]
    if "/" not in rest:
        return None
    name, measure = rest.split("/", 1)
    return (name, measure) if name and measure else None


def eval_sets(metrics: dict[str, Any], measure: str = "loss") -> dict[str, Any]:
    """{set: value} of every eval/<set>/<measure> in a flat metrics dict."""
    out = {}
    for key, value in metrics.items():
        parsed = parse_eval_metric(key)
        if parsed and parsed[1] == measure:
            out[parsed[0]] = value
    return out
