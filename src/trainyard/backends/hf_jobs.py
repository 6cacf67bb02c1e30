"""Hugging Face Jobs backend: one run = one HF Job running the trainyard image.

    python launch.py --matrix jobs/X.yaml --backend hf-jobs [--dry-run]

The job runs `hf_job_command(spec)` on `spec.resources.flavor`, with the spec in
$TRAINYARD_SPEC and the caller's Hugging Face token as the job secret HF_TOKEN (never in
env, the spec, status.json or --dry-run output). With no `image:` in the matrix it runs a
public CUDA PyTorch image and first installs this checkout's wheel from the artifacts repo
(backends/wheel.py: no registry needed); a matrix's own `image:` runs as is. The job's disk
dies with it, so the entrypoint mirrors the run's files and its latest checkpoint into the
private dataset repo `hub.artifacts_repo` under <matrix>/<run>/ ($TRAINYARD_ARTIFACTS_REPO)
and logs its curves to a private Trackio Space (tracking.remote_space) unless the matrix
names one; `status` / `report` sync the files back, and a retried attempt or re-submitted
job of the same spec resumes from the checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shlex
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
from trainyard.backends.wheel import BASE_IMAGE, WheelError, WheelRef, ensure_uploaded, wheel_ref
from trainyard.contract import FINAL_STATES, NO_RETRY_EXIT_CODES
from trainyard.errors import BackendError, did_you_mean
from trainyard.hub_storage import ARTIFACTS_REPO_ENV
from trainyard.spec import DEFAULT_IMAGE, RunSpec, duration_seconds, is_local_path

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
    remote_space = spec.tracking.remote_space or ""
    unknown = sorted(set(re.findall(r"{([^{}]*)}", remote_space)) - {"user", "matrix"})
    if unknown:
        problems.append(f"{where} | key 'tracking.remote_space': unknown placeholder(s) {unknown} in {remote_space!r}; use {{user}} and {{matrix}}")
    local = [(k, v) for k, v in spec.sources() if is_local_path(v)]
    for key, value in local:
        problems.append(f"{where} | key {key!r}: {value!r} is a path on this machine, which the job cannot see; push it to the Hub and use its id (or a bundled fixture:<name>)")
    return problems


def uses_wheel(spec: RunSpec) -> bool:
    """No image of the user's own: the public base image installs the project wheel."""
    return spec.image == DEFAULT_IMAGE


def hf_job_command(spec: RunSpec, wheel: WheelRef | None) -> list[str]:
    """The job's command: [install the wheel, then] the entrypoint.

    Exit codes a retry cannot fix (bad input, divergence, a cancel) end the job cleanly, so
    HF Jobs' `attempts` retries only real failures; the run's status.json, synced back,
    still says failed / diverged / canceled. The one place this command is built.
    """
    run = shlex.join(launch_command(spec, job_command(spec)[-1], gpus=flavor_gpus(spec.resources.flavor)))
    no_retry = "|".join(str(int(c)) for c in NO_RETRY_EXIT_CODES)
    steps = [wheel.install_script()] if wheel is not None else []
    steps.append(f'{run}; code=$?; case $code in {no_retry}) echo "trainyard: exit $code is not retried"; exit 0;; esac; exit $code')
    return ["bash", "-c", " && ".join(steps)]


def tracking_destination(spec: RunSpec, user: str) -> tuple[str | None, str | None]:
    """(Trackio space_id to log to, its URL) for a run on HF Jobs; (None, None) when off.

    The matrix's own space_id / server_url win; otherwise tracking.remote_space, a private
    Space in the job owner's namespace named after the matrix, so the curves outlive the job.
    """
    t = spec.tracking
    if not t.enabled:
        return None, None
    if t.space_id:
        return t.space_id, f"https://huggingface.co/spaces/{t.space_id}"
    if t.server_url:
        return None, t.server_url.split("?", 1)[0]  # a write_token query stays out of records
    if not t.remote_space or spec_problems(spec):
        return None, None
    space = t.remote_space.format(user=user, matrix=_label(spec.matrix))
    return space, f"https://huggingface.co/spaces/{space}"


def with_tracking(spec: RunSpec, space: str | None) -> RunSpec:
    """The spec the job runs: the resolved Trackio Space filled in (an execution setting)."""
    if space is None or spec.tracking.space_id == space:
        return spec
    return spec.model_copy(update={"tracking": spec.tracking.model_copy(update={"space_id": space, "private": True})})


class HfJobsBackend(Backend):
    name = "hf-jobs"

    def __init__(self, api: HfApi | None = None, namespace: str | None = None, storage=None):
        self.api = api or HfApi()  # token: HF_TOKEN or the `hf auth login` cache
        self._namespace = namespace
        self._storage = storage  # repo calls (the wheel upload); default: hub_storage's HfApi
        self._wheels: dict[str, WheelRef] = {}  # artifacts repo -> the wheel uploaded there

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

    def wheel(self, spec: RunSpec, user: str) -> WheelRef | None:
        if not uses_wheel(spec):
            return None
        repo = spec.hub.artifacts_repo.replace("{user}", user)
        try:
            return self._wheels.get(repo) or wheel_ref(repo)
        except WheelError as err:
            raise BackendError(f"hf-jobs: run {spec.name!r}: {err}") from err

    def payload(self, spec: RunSpec, user: str) -> dict[str, Any]:
        """`HfApi.run_job` keyword arguments for this run, secrets left out."""
        self.check(spec)
        artifacts_repo = spec.hub.artifacts_repo.replace("{user}", user)
        space, _ = tracking_destination(spec, user)
        job_spec = with_tracking(spec, space)
        return {
            "image": BASE_IMAGE if uses_wheel(spec) else spec.image,
            "command": hf_job_command(spec, self.wheel(spec, user)),
            "env": {
                SPEC_ENV: json.dumps(job_spec.model_dump(mode="json"), separators=(",", ":")),
                RUN_DIR_ENV: job_command(spec)[-1],
                ARTIFACTS_REPO_ENV: artifacts_repo,
                "PYTHONUNBUFFERED": "1",  # log lines reach `launch.py logs` as they happen
                # hf_transfer is gone from huggingface_hub>=1 (HF_HUB_ENABLE_HF_TRANSFER only warns);
                # Xet's high-performance mode is its successor for big downloads/uploads.
                "HF_XET_HIGH_PERFORMANCE": "1",
            },
            "flavor": spec.resources.flavor,
            "timeout": duration_seconds(spec.resources.timeout),  # the API's default is 30 min: always ours
            "attempts": 1 + spec.resources.retries,  # a retried attempt resumes from the uploaded checkpoint
            "labels": {"trainyard-matrix": _label(spec.matrix), "trainyard-run": _label(spec.name)},
            "name": _label(f"trainyard-{spec.matrix}-{spec.name}"),
        }

    def render(self, spec: RunSpec) -> dict[str, Any]:
        user = self._namespace or USER_PLACEHOLDER  # a dry run needs no network
        secrets = dict.fromkeys(SECRET_NAMES, SECRET_PLACEHOLDER)
        secrets.update({name: f"<secret: ${name} from your environment>" for name in extra_secret_names(spec)})
        payload = self.payload(spec, user)
        _, url = tracking_destination(spec, user)
        return {"namespace": user, **payload, "secrets": secrets, "trainyard": self.describe(spec, user, url)}

    def describe(self, spec: RunSpec, user: str, tracking_url: str | None) -> dict[str, Any]:
        """What --dry-run adds beside the payload (not sent): install step and Trackio destination."""
        wheel = self.wheel(spec, user)
        if wheel is None:
            install = f"none: runs the matrix's own image {spec.image} as is"
        else:
            install = (
                f"{BASE_IMAGE} + pip install of datasets/{wheel.repo}/{wheel.path_in_repo} (this checkout, source hash {wheel.digest}) "
                "with the pinned extras. Cache: the wheel is built and uploaded at submit only if that path is not in the repo yet "
                "(same sources = same path, uploaded once); every job installs it afresh (pip has no cache across jobs, ~2-4 min of the job)"
            )
        tracking = f"Trackio at {tracking_url} (project {spec.tracking_project}, group {spec.tracking.group or spec.matrix})" if tracking_url else "off: curves stay in the job (history.json still comes back)"
        return {"install": install, "tracking": tracking}

    def prices(self) -> tuple[dict[str, float], str]:
        """USD/hour per flavor: the Hub's `list_jobs_hardware()` when online, else the dated table."""
        from huggingface_hub import constants

        from trainyard.backends.cost import hourly_prices

        return hourly_prices(None if constants.HF_HUB_OFFLINE else self.api)

    # -- submit and follow
    def _token(self) -> str:
        from huggingface_hub import get_token

        token = self.api.token if isinstance(self.api.token, str) else get_token()
        if not token:
            raise BackendError("hf-jobs: no Hugging Face token; run `hf auth login` or export HF_TOKEN (it travels to the job as the secret HF_TOKEN)")
        return token

    def prepare(self, spec: RunSpec) -> None:
        """Build and upload the project wheel once per artifacts repo (skipped if already there)."""
        ns = self.namespace()
        ref = self.wheel(spec, ns)
        if ref is None or ref.repo in self._wheels:
            return
        try:
            from trainyard import hub_storage

            ensure_uploaded(ref, self._storage or hub_storage._hub_api())
        except WheelError as err:
            raise BackendError(f"hf-jobs: {err}") from err
        except Exception as err:
            raise BackendError(f"hf-jobs: cannot upload the trainyard wheel to datasets/{ref.repo} ({err}); check that your token can write there (hub.artifacts_repo)") from err
        self._wheels[ref.repo] = ref

    def submit(self, spec: RunSpec) -> JobRef:
        self.check(spec)
        token = self._token()
        ns = self.namespace()
        self.prepare(spec)
        payload = self.payload(spec, ns)
        _, tracking_url = tracking_destination(spec, ns)
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
            extra={
                "namespace": info.owner.name or ns,
                "artifacts_repo": payload["env"][ARTIFACTS_REPO_ENV],
                "flavor": payload["flavor"],
                "attempts": payload["attempts"],
                **({"tracking_url": tracking_url} if tracking_url else {}),
            },
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
