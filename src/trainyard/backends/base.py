"""The interface every remote backend implements (local execution lives in local.py).

One run = one spec + one entrypoint: a backend turns a RunSpec into one job that runs
`python -m trainyard.run` in the trainyard image with the spec in $TRAINYARD_SPEC (the
spec never holds secrets; HF_TOKEN travels only as the platform's secret). The job's id
is recorded in the local run directory (status.json "job"), so `status`, `logs`, `cancel`
and `report` find it again from any machine that has the matrix file and runs/.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from trainyard.spec import RunSpec

SPEC_ENV = "TRAINYARD_SPEC"
RUN_DIR_ENV = "TRAINYARD_RUN_DIR"


@dataclass
class JobRef:
    backend: str
    id: str
    url: str | None = None
    extra: dict[str, Any] | None = None


class Backend(ABC):
    name: str

    @abstractmethod
    def render(self, spec: RunSpec) -> dict[str, Any]:
        """The exact job payload / manifest for this run (what --dry-run shows). No secrets."""

    @abstractmethod
    def submit(self, spec: RunSpec) -> JobRef:
        """Submit one run; raise with a clear message on failure."""

    @abstractmethod
    def state(self, job: JobRef) -> tuple[str, str | None]:
        """-> (trainyard state: queued|running|completed|failed|canceled, detail message)."""

    @abstractmethod
    def logs(self, job: JobRef, follow: bool = False) -> Iterator[str]:
        """Lines of the job's log."""

    @abstractmethod
    def cancel(self, job: JobRef) -> None:
        """Stop the job (idempotent)."""

    def validate_payload(self, payload: dict[str, Any]) -> list[str]:
        """Offline problems with a rendered payload (--dry-run); default: none known."""
        return []

    def fetch_results(self, jobs: list[JobRef]) -> dict[str, dict[str, bytes]]:
        """The small result files (RESULT_FILES) of finished or running jobs, by job id.

        Backends whose outputs live remotely (a volume, a Hub repo) copy them back here;
        the caller writes them into the local run directory. Default: nothing to fetch.
        """
        return {}


RESULT_FILES = ("status.json", "metrics.json", "history.json", "README.md")


def extra_secret_names(spec: RunSpec) -> list[str]:
    """Environment variables besides HF_TOKEN a run needs as secrets (the judge's API key)."""
    judge = spec.eval.judge
    if judge is not None and judge.base_url and judge.api_key_env:
        return [judge.api_key_env]
    return []


def job_command(spec: RunSpec, run_dir: str | None = None) -> list[str]:
    """The container command of every remote job (run_dir default: /output/<run>)."""
    return ["python", "-m", "trainyard.run", "--run-dir", run_dir or "/output/" + spec.name]
