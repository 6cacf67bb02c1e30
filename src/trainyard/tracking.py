"""Trackio wiring: project = matrix name, one Trackio run per experiment, config = the spec.

We use our own small callback instead of transformers' TrackioCallback because that one
logs TrainingArguments as config and ignores `server_url`; ours logs the spec (which never
holds secrets) and honours tracking.space_id / tracking.server_url. Local SQLite under
TRACKIO_DIR by default, so it works offline.

One curve per experiment: the Trackio run an experiment logs to is recorded in its run
directory (tracking.json) and in each checkpoint, so every resume continues that run, and
steps an earlier segment already logged are not logged again (after a kill the trainer
re-trains the steps after its last checkpoint). A fresh run directory (a first launch,
`--restart`) is a new experiment and gets a new Trackio run; when the project already has
a run of that name it is named `<run>@<YYYYmmdd-HHMMSS>`, so `trackio show` tells them
apart. End-of-run values go under summary/<name>, never onto a curve.
"""

from __future__ import annotations

import logging
import math
import re
import time
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from trainyard import callback_state
from trainyard.contract import summary_metric
from trainyard.metrics import canonical_dict, is_trainer_summary, safe_exp
from trainyard.run_dir import RunDir, read_json, write_json_atomic
from trainyard.spec import RunSpec

log = logging.getLogger(__name__)
SECRET_KEY = re.compile(r"(^|[_-])(token|secret|password|passwd|api[_-]?key|credentials?)$", re.IGNORECASE)
TRACKING_FILE = "tracking.json"  # in the run dir: {project, name, run_id} of the experiment's Trackio run


def redact(obj: Any) -> Any:
    """Drop values under secret-looking keys (defence in depth: the schema has none)."""
    if isinstance(obj, dict):
        return {k: ("<redacted>" if SECRET_KEY.search(str(k)) else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def tracking_config(spec: RunSpec) -> dict[str, Any]:
    return redact(spec.model_dump(mode="json"))


class TrackioLogger(TrainerCallback, ExportableState):
    """Logs every trainer log (train and eval) under the contract's metric names."""

    def __init__(self, spec: RunSpec, eval_names: list[str], rundir: RunDir | None = None, resumed: bool = False,
                 extra_config: dict[str, Any] | None = None):
        self.spec = spec
        self.eval_names = eval_names
        self.rundir = rundir
        self.resumed = resumed
        self.extra_config = extra_config or {}
        self.run = None
        self.record: dict[str, Any] | None = None
        self.logged_through = -1  # steps up to here are in Trackio already (earlier segments)

    @property
    def remote(self) -> bool:
        return bool(self.spec.tracking.space_id or self.spec.tracking.server_url)

    def state(self) -> dict:  # stored in each checkpoint: a job on a fresh disk finds its run again
        return {"args": {}, "attributes": {"record": dict(self.record or {})}}

    def start(self, from_checkpoint: dict[str, Any] | None = None) -> None:
        import trackio

        t = self.spec.tracking
        project = self.spec.tracking_project
        record = self._known_record(project, from_checkpoint)
        if record:
            name, resume = record["name"], "allow"
        elif self.resumed:  # a run dir from before tracking.json: its run carries the plain name
            name, resume = self.spec.name, "allow"
        else:
            name, resume = self._fresh_name(project), "never"
        self.run = trackio.init(
            project=project,
            name=name,
            group=t.group or self.spec.matrix,  # one matrix = one group in the dashboard
            config={**tracking_config(self.spec), **self.extra_config},
            space_id=t.space_id,
            server_url=t.server_url,
            private=t.private,
            resume=resume,
            embed=False,
            auto_log_gpu=False,
        )
        if record and record.get("run_id") not in (None, self.run.id):
            # nothing of the earlier segment reached Trackio's storage (killed before its
            # first flush): the new run id gets the whole curve, backfilled from the history
            log.info("Trackio holds no run %s of %r; continuing as run id %s", record.get("run_id"), name, self.run.id)
        if resume == "allow":
            last = self._stored_last_step()
            self.logged_through = -1 if last is None else int(last)
        self.record = {"project": project, "name": self.run.name, "run_id": self.run.id}
        if self.rundir is not None:
            write_json_atomic(self.rundir.path / TRACKING_FILE, self.record)
        log.info("Trackio run %s/%s (id %s)%s", project, self.run.name, self.run.id,
                 f", continuing after step {self.logged_through}" if self.logged_through >= 0 else "")

    def _known_record(self, project: str, from_checkpoint: dict[str, Any] | None) -> dict[str, Any] | None:
        for record in (read_json(self.rundir.path / TRACKING_FILE) if self.rundir else None, from_checkpoint):
            if isinstance(record, dict) and record.get("name") and record.get("project") == project:
                return record
        return None

    def _fresh_name(self, project: str) -> str:
        """The run's name, unless the project already has a run of that name (an earlier
        experiment of this run, set aside by --restart): then <name>@<start time>."""
        if self.remote:
            return self.spec.name  # a new Trackio run id all the same (resume="never")
        from trackio.sqlite_storage import SQLiteStorage

        try:
            taken = set(SQLiteStorage.get_runs(project))
        except Exception:  # no database yet
            taken = set()
        return self.spec.name if self.spec.name not in taken else f"{self.spec.name}@{time.strftime('%Y%m%d-%H%M%S')}"

    def _stored_last_step(self) -> int | None:
        """The last step Trackio holds for this run: read from the local database, or what
        trackio.init fetched from the Space / server when it resumed the run."""
        if self.remote:
            return getattr(self.run, "_initial_last_step", None)
        from trackio.sqlite_storage import SQLiteStorage

        return SQLiteStorage.get_max_step_for_run(self.run.project, self.run.name, run_id=self.run.id)

    def on_train_begin(self, args, state, control, **kwargs):
        if self.run is None and state.is_world_process_zero:
            self.start(callback_state.saved_attributes(self, state).get("record"))
            self._backfill(state.log_history)
        callback_state.register(self, state)

    def _backfill(self, history: list[dict[str, Any]]) -> None:
        """Steps the resumed checkpoint holds that never reached Trackio (a killed process
        loses the logs it had not flushed yet): logged now, from the trainer's history."""
        for entry in history:
            step = entry.get("step")
            if isinstance(step, int) and step > self.logged_through and not is_trainer_summary(entry):
                self.log(self._curve_metrics(entry), step=step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.run is None or not logs or is_trainer_summary(logs):
            return  # the trainer's end-of-train() averages: execute logs whole-run summaries
        if state.global_step <= self.logged_through:
            return  # an earlier segment logged this step before it was killed
        self.log(self._curve_metrics(logs), step=state.global_step)

    def _curve_metrics(self, logs: dict[str, Any]) -> dict[str, float]:
        metrics = canonical_dict({k: v for k, v in logs.items() if k != "step"}, self.eval_names, self.spec.eval.held_out_name)
        for key, value in list(metrics.items()):
            # in-training curves of perplexity too (the exact token-weighted value is the final one)
            ppl_key = key.removesuffix("/loss") + "/perplexity"
            if key.startswith("eval/") and key.endswith("/loss") and ppl_key not in metrics:
                metrics[ppl_key] = safe_exp(value)
        return metrics

    def log_summary(self, metrics: dict[str, Any], step: int | None) -> None:
        """End-of-run values (whole-run train metrics, final exact evals) as summary/<name>."""
        self.log({summary_metric(k): v for k, v in metrics.items()}, step=step)

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        finite = {k: float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        if not finite:
            return
        if self.run is None:
            self.start()
        import trackio

        trackio.log(finite, step=step)

    def finish(self) -> None:
        if self.run is not None:
            import trackio

            trackio.finish()
            self.run = None
