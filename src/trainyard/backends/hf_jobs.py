"""Hugging Face Jobs backend: one run = one HF Job running the trainyard image.

    python launch.py --matrix jobs/X.yaml --backend hf-jobs [--dry-run]

The job runs `job_command(spec)` in `spec.image` on `spec.resources.flavor`, with the spec
in $TRAINYARD_SPEC and the caller's Hugging Face token as the job secret HF_TOKEN (never
in env, the spec, status.json or --dry-run output). The job's disk dies with it, so the
entrypoint mirrors the run's files and its latest checkpoint into the private dataset repo
`hub.artifacts_repo` under <matrix>/<run>/ ($TRAINYARD_ARTIFACTS_REPO); `status` / `report`
sync the files back, and a re-submitted job of the same spec resumes from the checkpoint.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

from huggingface_hub import HfApi, JobHardware

from trainyard.backends.base import (
    RUN_DIR_ENV,
    SPEC_ENV,
    Backend,
    JobRef,
    extra_secret_names,
    job_command,
)
from trainyard.backends.launch import flavor_gpus, launch_command
from trainyard.errors import BackendError, did_you_mean
from trainyard.hub_storage import ARTIFACTS_REPO_ENV
from trainyard.run_dir import FINAL_STATES
from trainyard.spec import RunSpec, duration_seconds, is_local_path

FLAVORS = tuple(h.value for h in JobHardware)
SECRET_NAMES = ("HF_TOKEN",)
SECRET_PLACEHOLDER = "<secret: your Hugging Face token (hf auth login / $HF_TOKEN)>"
USER_PLACEHOLDER = "<your HF user>"
# JobStage -> trainyard state. A failing entrypoint (exit 1/2/3/130) is ERROR here; the
# run's own status.json (synced from the artifacts repo) says which of those it was.
STAGE_STATE = {
    "SCHEDULING": "queued",
    "RUNNING": "running",
    "COMPLETED": "completed",
    "ERROR": "failed",
    "CANCELED": "canceled",
    "DELETED": "canceled",
}
def _label(value: str) -> str:
    # Job labels/names are also stored as tags: alphanumerics, '-' and '_' only.
    return re.sub(r"[^A-Za-z0-9_-]", "-", value)


def spec_problems(spec: RunSpec) -> list[str]:
    """What stops this run from working as an HF Job; checked before anything is submitted."""
    problems = []
    where = f"run {spec.name!r}"
    flavor = spec.resources.flavor
    if flavor not in FLAVORS:
        hint = did_you_mean(flavor, FLAVORS)
        if "h100" in flavor.lower():
            hint = " (HF Jobs has no H100 flavor; the closest are h200 / h200x2 ..., or a100-large)"
        problems.append(f"{where} | key 'resources.flavor': unknown HF Jobs flavor {flavor!r}{hint}; valid flavors: {', '.join(FLAVORS)}")
    if spec.smoke:
        problems.append(f"{where}: --smoke runs use a tiny model built on this machine; run them with --backend local")
    if not spec.hub.artifacts_repo:
        problems.append(f"{where} | key 'hub.artifacts_repo': required for hf-jobs (a job's disk dies with it; results go to this Hub dataset repo), e.g. '{{user}}/trainyard-runs'")
    local = [(k, v) for k, v in spec.sources() if is_local_path(v)]
    for key, value in local:
        problems.append(f"{where} | key {key!r}: {value!r} is a path on this machine, which the job cannot see; push it to the Hub and use its id (or a bundled fixture:<name>)")
    return problems


class HfJobsBackend(Backend):
    name = "hf-jobs"

    def __init__(self, api: HfApi | None = None, namespace: str | None = None):
        self.api = api or HfApi()  # token: HF_TOKEN or the `hf auth login` cache
        self._namespace = namespace

    # -- what would be submitted
    def namespace(self) -> str:
        """The job owner: the logged-in user (whoami is rate-limited: asked once)."""
        if self._namespace is None:
            try:
                self._namespace = self.api.whoami(cache=True)["name"]
            except Exception as err:
                raise BackendError(f"hf-jobs: cannot tell who you are on the Hub ({err}); run `hf auth login` or set HF_TOKEN") from err
        return self._namespace

    def check(self, spec: RunSpec) -> None:
        problems = spec_problems(spec)
        if problems:
            raise BackendError("\n".join(problems))

    def payload(self, spec: RunSpec, user: str) -> dict[str, Any]:
        """`HfApi.run_job` keyword arguments for this run, secrets left out."""
        self.check(spec)
        artifacts_repo = spec.hub.artifacts_repo.replace("{user}", user)
        return {
            "image": spec.image,
            "command": launch_command(spec, job_command(spec)[-1], gpus=flavor_gpus(spec.resources.flavor)),
            "env": {
                SPEC_ENV: json.dumps(spec.model_dump(mode="json"), separators=(",", ":")),
                RUN_DIR_ENV: job_command(spec)[-1],
                ARTIFACTS_REPO_ENV: artifacts_repo,
                "PYTHONUNBUFFERED": "1",  # log lines reach `launch.py logs` as they happen
                # hf_transfer is gone from huggingface_hub>=1 (HF_HUB_ENABLE_HF_TRANSFER only warns);
                # Xet's high-performance mode is its successor for big downloads/uploads.
                "HF_XET_HIGH_PERFORMANCE": "1",
            },
            "flavor": spec.resources.flavor,
            "timeout": duration_seconds(spec.resources.timeout),  # the API's default is 30 min: always ours
            "labels": {"trainyard-matrix": _label(spec.matrix), "trainyard-run": _label(spec.name)},
            "name": _label(f"trainyard-{spec.matrix}-{spec.name}"),
        }

    def render(self, spec: RunSpec) -> dict[str, Any]:
        user = self._namespace or USER_PLACEHOLDER  # a dry run needs no network
        secrets = dict.fromkeys(SECRET_NAMES, SECRET_PLACEHOLDER)
        secrets.update({name: f"<secret: ${name} from your environment>" for name in extra_secret_names(spec)})
        return {"namespace": user, **self.payload(spec, user), "secrets": secrets}

    # -- submit and follow
    def _token(self) -> str:
        from huggingface_hub import get_token

        token = self.api.token if isinstance(self.api.token, str) else get_token()
        if not token:
            raise BackendError("hf-jobs: no Hugging Face token; run `hf auth login` or export HF_TOKEN (it travels to the job as the secret HF_TOKEN)")
        return token

    def submit(self, spec: RunSpec) -> JobRef:
        self.check(spec)
        token = self._token()
        ns = self.namespace()
        payload = self.payload(spec, ns)
        secrets = {"HF_TOKEN": token}
        for name in extra_secret_names(spec):  # e.g. the judge's API key, read here, sent as a secret
            if not os.environ.get(name):
                raise BackendError(f"hf-jobs: run {spec.name!r} has eval.judge.api_key_env={name}, but ${name} is not set here; export it (it travels only as a job secret)")
            secrets[name] = os.environ[name]
        try:
            info = self.api.run_job(**payload, secrets=secrets, namespace=ns)
        except Exception as err:
            raise BackendError(f"hf-jobs: submitting run {spec.name!r} failed: {err}") from err
        return JobRef(
            backend=self.name,
            id=info.id,
            url=info.url,
            extra={"namespace": info.owner.name or ns, "artifacts_repo": payload["env"][ARTIFACTS_REPO_ENV], "flavor": payload["flavor"]},
        )

    def _ns(self, job: JobRef) -> str:
        return (job.extra or {}).get("namespace") or self.namespace()

    def state(self, job: JobRef) -> tuple[str, str | None]:
        info = self.api.inspect_job(job_id=job.id, namespace=self._ns(job))
        stage = str(getattr(info.status.stage, "value", info.status.stage))
        state = STAGE_STATE.get(stage, "running")
        detail = info.status.message
        if stage == "DELETED":
            detail = detail or "the job was deleted"
        elif stage not in STAGE_STATE:
            detail = f"unknown HF Jobs stage {stage!r}" + (f": {detail}" if detail else "")
        return state, detail

    def logs(self, job: JobRef, follow: bool = False) -> Iterator[str]:
        yield from self.api.fetch_job_logs(job_id=job.id, namespace=self._ns(job), follow=follow)

    def cancel(self, job: JobRef) -> None:
        if self.state(job)[0] in FINAL_STATES:
            return
        try:
            self.api.cancel_job(job_id=job.id, namespace=self._ns(job))
        except Exception:
            if self.state(job)[0] not in FINAL_STATES:  # ended meanwhile: nothing to cancel
                raise
