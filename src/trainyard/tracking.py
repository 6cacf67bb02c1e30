"""Trackio wiring: project = matrix name, run = run name, config = the resolved spec.

We use our own small callback instead of transformers' TrackioCallback because that one
logs TrainingArguments as config and ignores `server_url`; ours logs the spec (which never
holds secrets) and honours tracking.space_id / tracking.server_url. Local SQLite under
TRACKIO_DIR by default, so it works offline.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from transformers import TrainerCallback

from trainyard.metrics import canonical_dict, safe_exp
from trainyard.spec import RunSpec

log = logging.getLogger(__name__)
SECRET_KEY = re.compile(r"(^|[_-])(token|secret|password|passwd|api[_-]?key|credentials?)$", re.IGNORECASE)


def redact(obj: Any) -> Any:
    """Drop values under secret-looking keys (defence in depth: the schema has none)."""
    if isinstance(obj, dict):
        return {k: ("<redacted>" if SECRET_KEY.search(str(k)) else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def tracking_config(spec: RunSpec) -> dict[str, Any]:
    return redact(spec.model_dump(mode="json"))


class TrackioLogger(TrainerCallback):
    """Logs every trainer log (train and eval) under the contract's metric names."""

    def __init__(self, spec: RunSpec, eval_names: list[str], extra_config: dict[str, Any] | None = None):
        self.spec = spec
        self.eval_names = eval_names
        self.extra_config = extra_config or {}
        self.run = None

    def start(self) -> None:
        import trackio

        t = self.spec.tracking
        self.run = trackio.init(
            project=self.spec.tracking_project,
            name=self.spec.name,
            group=t.group or self.spec.matrix,  # one matrix = one group in the dashboard
            config={**tracking_config(self.spec), **self.extra_config},
            space_id=t.space_id,
            server_url=t.server_url,
            private=t.private,
            resume="allow",
            embed=False,
            auto_log_gpu=False,
        )

    def on_train_begin(self, args, state, control, **kwargs):
        if self.run is None and state.is_world_process_zero:
            self.start()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.run is None or not logs:
            return
        metrics = canonical_dict(logs, self.eval_names, self.spec.eval.held_out_name)
        for key, value in list(metrics.items()):
            # in-training curves of perplexity too (the exact token-weighted value is the final one)
            ppl_key = key.removesuffix("/loss") + "/perplexity"
            if key.startswith("eval/") and key.endswith("/loss") and ppl_key not in metrics:
                metrics[ppl_key] = safe_exp(value)
        finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
        if finite:
            self.log(finite, step=state.global_step)

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.run is None:
            self.start()
        import trackio

        trackio.log(metrics, step=step)

    def finish(self) -> None:
        if self.run is not None:
            import trackio

            trackio.finish()
            self.run = None
