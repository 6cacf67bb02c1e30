"""Kubernetes backend: one run = one batch/v1 Job in the trainyard namespace.

The Job runs `python -m trainyard.run --run-dir /output/<matrix>/<run>` in spec.image
with the spec in $TRAINYARD_SPEC; HF_TOKEN comes from the `hf-token` Secret through a
secretKeyRef, never as a value. The runs PVC (k8s/base/storage.yaml) is mounted at
/output, so a retried or resubmitted run resumes from checkpoints/ on it.

Retries: exit codes 2 (bad spec/data), 3 (diverged) and 130 (canceled) fail the Job at
once (retrying cannot help); a pod disrupted by preemption, eviction or a drained node is
replaced without counting against `resources.retries`; anything else (a crash, OOM) is
retried up to `resources.retries` times.

Results come back through the API, since the launcher is usually outside the cluster: a
short-lived fetch pod mounts the runs volume read-only and prints the small result files
(status/metrics/history JSON, model card) base64-encoded to its log, which the launcher
reads and decodes. It needs only pods create/get/delete and pods/log (k8s/base/rbac.yaml),
works after the Job's pods are gone, and does not depend on the training image.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from typing import Any

from trainyard import contract
from trainyard.backends.base import (
    RESULT_FILES,
    RUN_DIR_ENV,
    SPEC_ENV,
    Backend,
    JobRef,
    extra_secret_names,
    job_command,
)
from trainyard.spec import RunSpec, duration_seconds

NAMESPACE_ENV = "TRAINYARD_K8S_NAMESPACE"
DEFAULT_NAMESPACE = "trainyard"
FETCH_IMAGE_ENV = "TRAINYARD_K8S_FETCH_IMAGE"
DEFAULT_FETCH_IMAGE = "busybox:1.37"
OUTPUT_MOUNT = "/output"
CACHE_MOUNT = "/cache"
CONTAINER = "train"
RUNNER_SERVICE_ACCOUNT = "trainyard-runner"
ENV_CONFIGMAP = "trainyard-env"
TOKEN_SECRET, TOKEN_KEY = "hf-token", "HF_TOKEN"
JUDGE_SECRET = "trainyard-judge"
GPU_RESOURCE = "nvidia.com/gpu"
LABEL_MATRIX, LABEL_RUN, LABEL_ROLE = "trainyard.io/matrix", "trainyard.io/run", "trainyard.io/role"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
# run.py exit codes that a retry cannot fix: bad input, diverged, canceled
NO_RETRY_EXIT_CODES = [int(code) for code in contract.NO_RETRY_EXIT_CODES]
TTL_AFTER_FINISHED_S = 7 * 24 * 3600  # finished Jobs (and their pod logs) kept a week
TERMINATION_GRACE_S = 300  # SIGTERM -> the run saves a checkpoint before it stops
FETCH_TIMEOUT_S = 180
K8S_VERSION = "1.32"  # schema version for offline validation (kubernetes-validate)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")

# Prints "@@file <path>" + base64 for each existing file, then "@@end" (a truncated log
# is detected by the missing end marker). Only sh, [ and base64: busybox has them.
FETCH_SCRIPT = 'cd "$TRAINYARD_FETCH_ROOT" || exit 3\nfor p in "$@"; do\n  if [ -f "$p" ]; then echo "@@file $p"; base64 "$p"; fi\ndone\necho "@@end"\n'


def _digest(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def job_name(matrix: str, run: str) -> str:
    """A DNS-1123 label (<= 63 chars) for the Job of matrix/run, unique per pair.

    `<matrix>-<run>` when that is already a valid label; otherwise lowercased, invalid
    characters replaced by '-', cut to fit and suffixed with a hash of the exact names,
    so 'Rust_SFT'/'5k' and 'rust-sft'/'5k' never share a Job.
    """
    plain = f"{matrix}-{run}"
    if len(plain) <= 63 and _DNS_LABEL.match(plain):
        return plain
    stem = re.sub(r"[^a-z0-9-]+", "-", plain.lower())
    stem = re.sub(r"-{2,}", "-", stem).strip("-")[: 63 - 9].rstrip("-")
    return f"{stem}-{_digest(matrix + '/' + run)}" if stem else f"trainyard-{_digest(matrix + '/' + run)}"


def label_value(text: str) -> str:
    """A valid label value (<= 63 chars of [A-Za-z0-9_.-]); hash-suffixed when changed."""
    if len(text) <= 63 and _LABEL_VALUE.match(text):
        return text
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-_.")[: 63 - 9].rstrip("-_.")
    return f"{stem}-{_digest(text)}" if stem else _digest(text)


def namespace_of(spec: RunSpec) -> str:
    return spec.resources.namespace or os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE


def run_dir_of(spec: RunSpec) -> str:
    return f"{OUTPUT_MOUNT}/{spec.matrix}/{spec.name}"


def render_job(spec: RunSpec) -> dict[str, Any]:
    """The batch/v1 Job manifest of one run (camelCase, as `kubectl apply` takes it)."""
    res = spec.resources
    labels = {
        "app.kubernetes.io/part-of": "trainyard",
        "app.kubernetes.io/managed-by": "trainyard",
        LABEL_MATRIX: label_value(spec.matrix),
        LABEL_RUN: label_value(spec.name),
    }
    annotations = {"trainyard.io/matrix-name": spec.matrix, "trainyard.io/run-name": spec.name, "trainyard.io/fingerprint": spec.fingerprint()}
    requests = {"cpu": res.cpu, "memory": res.memory}
    # No CPU limit: CFS throttling slows tokenization / data loading for nothing.
    limits = {"memory": res.memory}
    if res.gpus:
        limits[GPU_RESOURCE] = str(res.gpus)
    env = [
        {"name": SPEC_ENV, "value": json.dumps(spec.model_dump(mode="json"), separators=(",", ":"))},
        {"name": RUN_DIR_ENV, "value": run_dir_of(spec)},
        # A push needs the token, so a missing Secret must stop the pod; otherwise it is
        # optional (public models and data work without one).
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": TOKEN_SECRET, "key": TOKEN_KEY, "optional": not spec.hub.push}}},
    ]
    # The judge's API key: `kubectl -n trainyard create secret generic trainyard-judge --from-literal=NAME=...`
    env += [{"name": n, "valueFrom": {"secretKeyRef": {"name": JUDGE_SECRET, "key": n}}} for n in extra_secret_names(spec)]
    mounts = [{"name": "runs", "mountPath": OUTPUT_MOUNT}, {"name": "dshm", "mountPath": "/dev/shm"}]
    volumes: list[dict[str, Any]] = [
        {"name": "runs", "persistentVolumeClaim": {"claimName": res.pvc}},
        # DataLoader workers and NCCL need more shared memory than the container's 64Mi
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
    ]
    if res.cache_pvc:
        mounts.append({"name": "hf-cache", "mountPath": CACHE_MOUNT})
        volumes.append({"name": "hf-cache", "persistentVolumeClaim": {"claimName": res.cache_pvc}})
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": RUNNER_SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
        "containers": [
            {
                "name": CONTAINER,
                "image": spec.image,
                "command": job_command(spec, run_dir_of(spec)),
                "env": env,
                "envFrom": [{"configMapRef": {"name": ENV_CONFIGMAP, "optional": True}}],
                "resources": {"requests": requests, "limits": limits},
                "volumeMounts": mounts,
            }
        ],
        "volumes": volumes,
    }
    if res.node_selector:
        pod_spec["nodeSelector"] = dict(res.node_selector)
    if res.tolerations:
        pod_spec["tolerations"] = [t.model_dump(exclude_none=True) for t in res.tolerations]
    if res.priority_class:
        pod_spec["priorityClassName"] = res.priority_class
    manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(spec.matrix, spec.name), "namespace": namespace_of(spec), "labels": labels, "annotations": annotations},
        "spec": {
            "backoffLimit": res.retries,
            "activeDeadlineSeconds": duration_seconds(res.timeout),
            "ttlSecondsAfterFinished": TTL_AFTER_FINISHED_S,
            # never two pods of one run writing the same run directory
            "podReplacementPolicy": "Failed",
            "podFailurePolicy": {
                "rules": [
                    # first: a preempted/evicted pod exits 130 after its checkpoint, and
                    # must be replaced, not fail the Job (first matching rule wins)
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                    {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": NO_RETRY_EXIT_CODES}},
                ]
            },
            "template": {"metadata": {"labels": dict(labels), "annotations": dict(annotations)}, "spec": pod_spec},
        },
    }
    _client_model("V1Job", manifest)  # the client's own schema: typos fail here, offline
    return manifest


def render_fetch_pod(namespace: str, pvc: str, paths: list[str], image: str | None = None) -> dict[str, Any]:
    """A pod that prints the given files (relative to the runs volume) to its log."""
    name = f"trainyard-fetch-{secrets.token_hex(4)}"
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "trainyard", LABEL_ROLE: "fetch"}},
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": FETCH_TIMEOUT_S,
            "serviceAccountName": RUNNER_SERVICE_ACCOUNT,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "fetch",
                    "image": image or os.environ.get(FETCH_IMAGE_ENV) or DEFAULT_FETCH_IMAGE,
                    "command": ["sh", "-c", FETCH_SCRIPT, "fetch", *paths],
                    "env": [{"name": "TRAINYARD_FETCH_ROOT", "value": OUTPUT_MOUNT}],
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
                    "volumeMounts": [{"name": "runs", "mountPath": OUTPUT_MOUNT, "readOnly": True}],
                }
            ],
            "volumes": [{"name": "runs", "persistentVolumeClaim": {"claimName": pvc, "readOnly": True}}],
        },
    }
    _client_model("V1Pod", manifest)
    return manifest


def parse_fetch_log(text: str) -> dict[str, bytes]:
    """FETCH_SCRIPT's output -> {path: content}; raises if the end marker is missing."""
    import base64

    files: dict[str, list[str]] = {}
    current: list[str] | None = None
    ended = False
    for line in text.splitlines():
        if line.startswith("@@file "):
            current = files.setdefault(line[len("@@file ") :], [])
        elif line == "@@end":
            ended = True
            break
        elif current is not None:
            current.append(line.strip())
    if not ended:
        raise RuntimeError("fetch pod output is incomplete (no end marker); retry, or read the files from the volume directly")
    return {p: base64.b64decode("".join(chunks)) for p, chunks in files.items()}


def validate_offline(manifest: dict[str, Any]) -> list[str]:
    """kubernetes-validate --strict against the bundled K8S_VERSION schema ([] if clean)."""
    try:
        import kubernetes_validate
    except ImportError:
        return []
    try:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        return [f"{manifest['kind']} {manifest['metadata']['name']}: {where}: {exc.message}"]
    return []


def _client_model(kind: str, manifest: dict[str, Any]) -> Any:
    from kubernetes import client

    return getattr(client, kind).model_validate(manifest)  # extra="forbid": unknown keys raise


def _ref_parts(job: JobRef) -> tuple[str, str]:
    return job.id, (job.extra or {}).get("namespace", DEFAULT_NAMESPACE)


class KubernetesBackend(Backend):
    name = "k8s"

    def __init__(self, api_client: Any = None, poll_s: float = 2.0):
        self._api_client = api_client  # tests pass one pointed at a fake API server
        self.poll_s = poll_s

    # -- clients (created on first use: render / --dry-run need no cluster)
    @property
    def api_client(self) -> Any:
        if self._api_client is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                try:
                    config.load_kube_config()
                except (config.ConfigException, FileNotFoundError, TypeError) as exc:
                    raise RuntimeError(f"no Kubernetes credentials: set KUBECONFIG or run inside a cluster ({exc})") from exc
            self._api_client = client.ApiClient()
        return self._api_client

    @property
    def batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self.api_client)

    @property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client)

    # -- Backend
    def render(self, spec: RunSpec) -> dict[str, Any]:
        return render_job(spec)

    def validate_payload(self, payload: dict[str, Any]) -> list[str]:
        return validate_offline(payload)

    def submit(self, spec: RunSpec) -> JobRef:
        from kubernetes.client.exceptions import ApiException

        manifest = render_job(spec)
        name, ns = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        ref = JobRef(backend=self.name, id=name, extra={"namespace": ns, "pvc": spec.resources.pvc, "run_dir": run_dir_of(spec)})
        body = _client_model("V1Job", manifest)
        for attempt in range(30):
            try:
                self.batch.create_namespaced_job(ns, body)
                return ref
            except ApiException as exc:
                if exc.status != 409:
                    raise RuntimeError(f"cannot create Job {ns}/{name}: {_api_message(exc)}") from exc
            # A Job of that name exists: the same run still going is fine (idempotent
            # submit); a finished one is replaced (the new pod resumes from checkpoints/).
            if attempt == 0:
                existing = self._read_job(name, ns)
                if existing is not None and self._job_state(existing)[0] in ("queued", "running"):
                    old = (existing.metadata.annotations or {}).get("trainyard.io/fingerprint")
                    if old != spec.fingerprint():
                        raise RuntimeError(f"Job {ns}/{name} is still running an older spec of run {spec.name!r}; cancel it first")
                    return ref
                self.cancel(ref)
            time.sleep(self.poll_s)  # the old Job's deletion takes a moment
        raise RuntimeError(f"Job {ns}/{name} still exists after deleting it; try again shortly")

    def state(self, job: JobRef) -> tuple[str, str | None]:
        name, ns = _ref_parts(job)
        obj = self._read_job(name, ns)
        if obj is None:
            return "failed", f"Job {ns}/{name} not found (deleted, or removed {TTL_AFTER_FINISHED_S // 86400} days after it finished)"
        return self._job_state(obj)

    def logs(self, job: JobRef, follow: bool = False) -> Iterator[str]:
        """The newest pod's log lines (no newlines); with follow, then later retries' pods."""
        name, ns = _ref_parts(job)
        last = None  # the pod streamed last: following moves on only to newer ones
        while True:
            pod = self._newest_pod(name, ns)
            if pod is None or (last is not None and _created(pod) <= _created(last)):
                if not follow or self._finished(job):
                    if last is None:
                        raise RuntimeError(f"Job {ns}/{name} has no pod with a log (yet): {self.state(job)[1] or 'waiting'}")
                    return
                time.sleep(self.poll_s)
                continue
            if not self._started(pod):
                if not follow:
                    raise RuntimeError(f"pod {pod.metadata.name} has not started: {_pod_waiting(pod) or pod.status.phase}")
                time.sleep(self.poll_s)
                continue
            if last is not None:
                yield f"--- trainyard: retried in pod {pod.metadata.name} ---"
            yield from self._pod_log(pod.metadata.name, ns, follow)
            last = pod
            if not follow:
                return

    def cancel(self, job: JobRef) -> None:
        from kubernetes.client.exceptions import ApiException

        name, ns = _ref_parts(job)
        try:
            # Background: the Job goes now; its pods get SIGTERM and checkpoint.
            self.batch.delete_namespaced_job(name, ns, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise RuntimeError(f"cannot delete Job {ns}/{name}: {_api_message(exc)}") from exc

    def fetch_results(self, jobs: list[JobRef]) -> dict[str, dict[str, bytes]]:
        """One fetch pod per (namespace, volume) reads every job's result files."""
        groups: dict[tuple[str, str], list[JobRef]] = {}
        for j in jobs:
            extra = j.extra or {}
            groups.setdefault((extra.get("namespace", DEFAULT_NAMESPACE), extra.get("pvc", "trainyard-runs")), []).append(j)
        out: dict[str, dict[str, bytes]] = {}
        for (ns, pvc), group in groups.items():
            rel = {j.id: (j.extra or {})["run_dir"].removeprefix(OUTPUT_MOUNT + "/") for j in group}
            files = self._fetch(ns, pvc, [f"{r}/{f}" for r in rel.values() for f in RESULT_FILES])
            for jid, r in rel.items():
                out[jid] = {p.removeprefix(r + "/"): data for p, data in files.items() if p.startswith(r + "/")}
        return out

    # -- helpers
    def _read_job(self, name: str, ns: str) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.batch.read_namespaced_job_status(name, ns)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise RuntimeError(f"cannot read Job {ns}/{name}: {_api_message(exc)}") from exc

    def _job_state(self, obj: Any) -> tuple[str, str | None]:
        status = obj.status
        true = {c.type: c for c in (status.conditions or []) if c.status == "True"}
        for kind, state in (("Complete", "completed"), ("SuccessCriteriaMet", "completed"), ("Failed", "failed"), ("FailureTarget", "failed")):
            if kind in true:
                c = true[kind]
                return state, (f"{c.reason}: {c.message}" if c.reason or c.message else None) if state == "failed" else None
        retries = f" (retry {status.failed} of {obj.spec.backoff_limit})" if status.failed else ""
        if obj.spec.suspend or "Suspended" in true:
            return "queued", "suspended"
        if status.ready or 0:
            return "running", retries.strip() or None
        if status.active or 0:
            pod = self._newest_pod(obj.metadata.name, obj.metadata.namespace)
            if pod is not None and pod.status.phase == "Running":
                return "running", retries.strip() or None
            why = _pod_waiting(pod) if pod is not None else None
            return "queued", (why or "pod pending") + retries
        return "queued", "waiting for the Job controller" + retries

    def _finished(self, job: JobRef) -> bool:
        return self.state(job)[0] not in ("queued", "running")

    def _newest_pod(self, job_name_: str, ns: str) -> Any:
        pods = self.core.list_namespaced_pod(ns, label_selector=f"{JOB_NAME_LABEL}={job_name_}").items
        return max(pods, key=_created) if pods else None

    @staticmethod
    def _started(pod: Any) -> bool:
        for cs in pod.status.container_statuses or []:
            if cs.state and (cs.state.running or cs.state.terminated):
                return True
        return pod.status.phase in ("Running", "Succeeded", "Failed")

    def _pod_log(self, pod: str, ns: str, follow: bool) -> Iterator[str]:
        if not follow:
            text = self.core.read_namespaced_pod_log(pod, ns, container=None)
            yield from text.splitlines()
            return
        resp = self.core.read_namespaced_pod_log(pod, ns, follow=True, _preload_content=False)
        buf = b""
        try:
            for chunk in resp.stream(4096):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
            if buf:
                yield buf.decode(errors="replace")
        finally:
            resp.release_conn()

    def _fetch(self, ns: str, pvc: str, paths: list[str]) -> dict[str, bytes]:
        from kubernetes.client.exceptions import ApiException

        manifest = render_fetch_pod(ns, pvc, paths)
        name = manifest["metadata"]["name"]
        try:
            self.core.create_namespaced_pod(ns, _client_model("V1Pod", manifest))
        except ApiException as exc:
            raise RuntimeError(f"cannot start the fetch pod in {ns}: {_api_message(exc)}") from exc
        try:
            deadline = time.monotonic() + FETCH_TIMEOUT_S
            while True:
                pod = self.core.read_namespaced_pod(name, ns)
                if pod.status.phase in ("Succeeded", "Failed"):
                    break
                waiting = _pod_waiting(pod)
                if waiting and waiting.split(":")[0] in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
                    raise RuntimeError(f"fetch pod cannot pull its image ({waiting}); set {FETCH_IMAGE_ENV} to an image with sh and base64 your cluster can pull")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"fetch pod {ns}/{name} did not finish in {FETCH_TIMEOUT_S}s: {waiting or pod.status.phase} (is PVC {pvc} ReadWriteMany?)")
                time.sleep(self.poll_s)
            text = self.core.read_namespaced_pod_log(name, ns)
            if pod.status.phase == "Failed":
                raise RuntimeError(f"fetch pod {ns}/{name} failed: {text.strip()[-500:] or 'no output'}")
            return parse_fetch_log(text)
        finally:
            with contextlib.suppress(ApiException):  # activeDeadlineSeconds ends it anyway
                self.core.delete_namespaced_pod(name, ns, grace_period_seconds=0)


def _pod_waiting(pod: Any) -> str | None:
    """Why a pod is not running yet: a container's waiting reason or unschedulable."""
    for cs in (pod.status.container_statuses or []) if pod.status else []:
        if cs.state and cs.state.waiting and cs.state.waiting.reason:
            w = cs.state.waiting
            return f"{w.reason}: {w.message}" if w.message else w.reason
    for c in (pod.status.conditions or []) if pod.status else []:
        if c.type == "PodScheduled" and c.status == "False":
            return f"{c.reason}: {c.message}" if c.message else c.reason
    return None


def _created(pod: Any) -> tuple[str, str]:
    ts = pod.metadata.creation_timestamp
    return (ts.isoformat() if ts else "", pod.metadata.name)


def _api_message(exc: Any) -> str:
    try:
        return json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError):
        return f"{exc.status} {exc.reason}"

