"""Kubernetes backend: one run = one batch/v1 Job in the trainyard namespace.

The Job runs `launch.launch_command` (`python -m trainyard.run --run-dir
/output/<matrix>/<run>`, or torchrun around it for several processes) in spec.image with
the spec in $TRAINYARD_SPEC; HF_TOKEN comes from the `hf-token` Secret through a
secretKeyRef, never as a value. The runs PVC (k8s/base/storage.yaml) is mounted at
/output, so a retried or resubmitted run resumes from checkpoints/ on it.

Launch shape: `resources.processes` (default `gpus`) processes per pod; `resources.nodes: M`
> 1 makes an Indexed Job (completions = parallelism = M) plus a headless Service that is
the pods' subdomain, so pod i is `<job>-i.<service>`: torchrun's static rendezvous is on
pod 0 and each pod's node rank is its $JOB_COMPLETION_INDEX.

Every pod meets the Pod Security Standards "restricted" profile (uid 1000, no privilege
escalation, all capabilities dropped, RuntimeDefault seccomp); `resources.queue` hands the
Job to Kueue (created suspended; Kueue unsuspends it on admission).

Retries: exit codes contract.NO_RETRY_EXIT_CODES (bad spec/data, diverged, canceled) fail
the Job at once (retrying cannot help); a pod disrupted by preemption, eviction or a
drained node is replaced without counting against `resources.retries`; anything else (a
crash, OOM) is retried up to `resources.retries` times (per node for multi-node Jobs).

Results come back through the API, since the launcher is usually outside the cluster: a
short-lived fetch pod mounts the runs volume read-only and prints the small result files
(status/metrics/history JSON, model card) base64-encoded to its log, which the launcher
reads and decodes. It needs only pods create/get/delete and pods/log (k8s/base/rbac.yaml),
works after the Job's pods are gone, and does not depend on the training image.

Every failure talking to the API is a BackendError naming the run or its Job.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from typing import Any

from trainyard.backends.base import (
    RESULT_FILES,
    RUN_DIR_ENV,
    SPEC_ENV,
    Backend,
    JobRef,
    extra_secret_names,
)
from trainyard.backends.launch import MASTER_PORT, SHUTDOWN_TIMEOUT_ENV, launch_command, world_size
from trainyard.contract import NO_RETRY_EXIT_CODES as _NO_RETRY
from trainyard.errors import BackendError
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
# the in-cluster Trackio server's write token (k8s/base/trackio.yaml); optional for Jobs
TRACKIO_SECRET, TRACKIO_TOKEN_KEY = "trackio-write-token", "TRACKIO_WRITE_TOKEN"
GPU_RESOURCE = "nvidia.com/gpu"
LABEL_MATRIX, LABEL_RUN, LABEL_ROLE = "trainyard.io/matrix", "trainyard.io/run", "trainyard.io/role"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
COMPLETION_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
NO_RETRY_EXIT_CODES = [int(c) for c in _NO_RETRY]  # retrying cannot fix these
RUN_AS_UID = 1000  # the image's `trainyard` user (Dockerfile); fsGroup makes volumes writable
TTL_AFTER_FINISHED_S = 7 * 24 * 3600  # finished Jobs (and their pod logs) kept a week
TERMINATION_GRACE_S = 300  # SIGTERM -> the run saves a checkpoint before it stops
FETCH_TIMEOUT_S = 180
K8S_VERSION = "1.30"  # oldest supported; schema version for offline validation (kubernetes-validate)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)([KMGTPE]i?)?$")
_UNITS = {None: 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18} | {f"{u}i": 1024 ** (i + 1) for i, u in enumerate("KMGTPE")}

# Prints "@@file <path>" + base64 for each existing file, then "@@end" (a truncated log
# is detected by the missing end marker). Only sh, [ and base64: busybox has them.
FETCH_SCRIPT = 'cd "$TRAINYARD_FETCH_ROOT" || exit 3\nfor p in "$@"; do\n  if [ -f "$p" ]; then echo "@@file $p"; base64 "$p"; fi\ndone\necho "@@end"\n'


def _digest(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def job_name(matrix: str, run: str, max_len: int = 63) -> str:
    """A DNS-1123 label (<= max_len chars) for the Job of matrix/run, unique per pair.

    `<matrix>-<run>` when that is already a valid label; otherwise lowercased, invalid
    characters replaced by '-', cut to fit and suffixed with a hash of the exact names,
    so 'Rust_SFT'/'5k' and 'rust-sft'/'5k' never share a Job.
    """
    plain = f"{matrix}-{run}"
    if len(plain) <= max_len and _DNS_LABEL.match(plain):
        return plain
    stem = re.sub(r"[^a-z0-9-]+", "-", plain.lower())
    stem = re.sub(r"-{2,}", "-", stem).strip("-")[: max_len - 9].rstrip("-")
    return f"{stem}-{_digest(matrix + '/' + run)}" if stem else f"trainyard-{_digest(matrix + '/' + run)}"


def job_name_of(spec: RunSpec) -> str:
    """Indexed Job pods are named `<job>-<index>` (their hostname): that must fit 63 too."""
    nodes = spec.resources.nodes
    return job_name(spec.matrix, spec.name, 63 if nodes == 1 else 63 - 1 - len(str(nodes - 1)))


def service_name(job: str) -> str:
    """The headless Service of a multi-node Job: a DNS-1035 label (starts with a letter)."""
    return job if job[0].isalpha() else f"s{_digest(job)}-{job}"[:63].rstrip("-")


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


def quantity_bytes(q: str) -> int:
    m = _QUANTITY.match(q)
    if not m:
        raise ValueError(f"not a memory quantity: {q!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def shm_limit(spec: RunSpec) -> str:
    """/dev/shm is memory-backed (it counts against the pod's memory): a quarter of it by default."""
    res = spec.resources
    return res.shm_size or f"{max(64, quantity_bytes(res.memory) // 4 // 2**20)}Mi"


def pod_security_context() -> dict[str, Any]:
    """Pod Security Standards "restricted", pod level (OnRootMismatch: no recursive chown of a big volume on every start)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_UID,
        "runAsGroup": RUN_AS_UID,
        "fsGroup": RUN_AS_UID,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True, "privileged": False}


def _metadata(spec: RunSpec) -> tuple[dict[str, str], dict[str, str]]:
    res = spec.resources
    labels = {
        **res.labels,
        "app.kubernetes.io/part-of": "trainyard",
        "app.kubernetes.io/managed-by": "trainyard",
        LABEL_MATRIX: label_value(spec.matrix),
        LABEL_RUN: label_value(spec.name),
    }
    if res.queue:
        labels[KUEUE_QUEUE_LABEL] = res.queue
    annotations = {**res.annotations, "trainyard.io/matrix-name": spec.matrix, "trainyard.io/run-name": spec.name, "trainyard.io/fingerprint": spec.fingerprint()}
    return labels, annotations


def render_objects(spec: RunSpec) -> list[dict[str, Any]]:
    """The manifests of one run: its Job, plus the headless Service of a multi-node Job."""
    res = spec.resources
    name, ns = job_name_of(spec), namespace_of(spec)
    multi_node = res.nodes > 1
    svc = service_name(name) if multi_node else None
    labels, annotations = _metadata(spec)
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
        # for the in-cluster Trackio server that the ConfigMap's TRACKIO_SERVER_URL points at
        {"name": TRACKIO_TOKEN_KEY, "valueFrom": {"secretKeyRef": {"name": TRACKIO_SECRET, "key": TRACKIO_TOKEN_KEY, "optional": True}}},
    ]
    # The judge's API key: `kubectl -n trainyard create secret generic trainyard-judge --from-literal=NAME=...`
    env += [{"name": n, "valueFrom": {"secretKeyRef": {"name": JUDGE_SECRET, "key": n}}} for n in extra_secret_names(spec)]
    if world_size(spec) > 1:  # torchrun gives its workers this long to checkpoint after SIGTERM
        env.append({"name": SHUTDOWN_TIMEOUT_ENV, "value": str(TERMINATION_GRACE_S - 30)})
    mounts = [{"name": "runs", "mountPath": OUTPUT_MOUNT}, {"name": "dshm", "mountPath": "/dev/shm"}]
    volumes: list[dict[str, Any]] = [
        {"name": "runs", "persistentVolumeClaim": {"claimName": res.pvc}},
        # DataLoader workers and NCCL need more shared memory than the container's 64Mi
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_limit(spec)}},
    ]
    if res.cache_pvc:
        mounts.append({"name": "hf-cache", "mountPath": CACHE_MOUNT})
        volumes.append({"name": "hf-cache", "persistentVolumeClaim": {"claimName": res.cache_pvc}})
    if multi_node:  # the Job controller sets JOB_COMPLETION_INDEX; $(VAR) is expanded by the kubelet
        command = launch_command(spec, run_dir_of(spec), node_rank="$(JOB_COMPLETION_INDEX)", master_addr=f"{name}-0.{svc}")
    else:
        command = launch_command(spec, run_dir_of(spec))
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image,
        "command": command,
        "env": env,
        "envFrom": [{"configMapRef": {"name": ENV_CONFIGMAP, "optional": True}}],
        "resources": {"requests": requests, "limits": limits},
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
    }
    if multi_node:
        container["ports"] = [{"name": "rdzv", "containerPort": MASTER_PORT, "protocol": "TCP"}]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": RUNNER_SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
    }
    if multi_node:
        pod_spec["subdomain"] = svc
    if res.node_selector:
        pod_spec["nodeSelector"] = dict(res.node_selector)
    if res.tolerations:
        pod_spec["tolerations"] = [t.model_dump(exclude_none=True) for t in res.tolerations]
    if res.priority_class:
        pod_spec["priorityClassName"] = res.priority_class
    job_spec: dict[str, Any] = {
        # multi-node: one failing node takes the others down with it, so a retry costs each its own
        "backoffLimit": res.retries * res.nodes,
        "activeDeadlineSeconds": duration_seconds(res.timeout),
        "ttlSecondsAfterFinished": TTL_AFTER_FINISHED_S,
        # never two pods of one run (or node) writing the same run directory
        "podReplacementPolicy": "Failed",
        "podFailurePolicy": {
            "rules": [
                # first: a preempted/evicted pod exits 130 after its checkpoint, and
                # must be replaced, not fail the Job (first matching rule wins)
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                # a config error on any node fails the whole Job (all its pods) at once
                {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": NO_RETRY_EXIT_CODES}},
            ]
        },
        "template": {"metadata": {"labels": dict(labels), "annotations": dict(annotations)}, "spec": pod_spec},
    }
    if multi_node:
        job_spec.update(completionMode="Indexed", completions=res.nodes, parallelism=res.nodes)
    if res.queue:
        job_spec["suspend"] = True  # Kueue admits it (unsuspends) when the queue has quota
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations},
        "spec": job_spec,
    }
    _client_model("V1Job", job)  # the client's own schema: typos fail here, offline
    if not multi_node:
        return [job]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": svc, "namespace": ns, "labels": {k: v for k, v in labels.items() if k != KUEUE_QUEUE_LABEL}},
        "spec": {
            "clusterIP": "None",  # headless: DNS records for the pods, no virtual IP
            "publishNotReadyAddresses": True,  # pod 0 is reachable before anything is "ready"
            "selector": {JOB_NAME_LABEL: name},
            "ports": [{"name": "rdzv", "port": MASTER_PORT, "targetPort": MASTER_PORT, "protocol": "TCP"}],
        },
    }
    _client_model("V1Service", service)
    return [job, service]


def render_job(spec: RunSpec) -> dict[str, Any]:
    """The batch/v1 Job manifest of one run (camelCase, as `kubectl apply` takes it)."""
    return render_objects(spec)[0]


def as_list(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """Several objects as one `kubectl apply -f -`-able v1 List."""
    return {"apiVersion": "v1", "kind": "List", "items": objects}


def objects_of(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return list(payload["items"]) if payload.get("kind") == "List" else [payload]


_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")
_YAML11_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


def manifests_yaml(objects: list[dict[str, Any]]) -> str:
    """A YAML stream (`---` between documents) of JSON-like manifests, for `kubectl apply -f -`.

    Block style with every string double-quoted the JSON way (a valid YAML scalar, never
    read back as a number or boolean); a tenth of PyYAML's time on 1,000 Jobs.
    """
    out: list[str] = []

    def key(k: str) -> str:
        return k if _PLAIN_KEY.match(k) and k.lower() not in _YAML11_WORDS else json.dumps(k)

    def scalar(v: Any) -> str:
        return json.dumps(v)  # str, int, float, bool, None -> "..", 1, 1.5, true, null

    def emit(node: Any, indent: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if isinstance(v, (dict, list)) and v:
                    out.append(f"{indent}{key(k)}:\n")
                    emit(v, indent + "  ")
                else:
                    out.append(f"{indent}{key(k)}: {scalar(v) if not isinstance(v, (dict, list)) else json.dumps(v)}\n")
        else:
            for v in node:
                if isinstance(v, dict) and v:
                    before = len(out)
                    emit(v, indent + "  ")
                    out[before] = f"{indent}- {out[before][len(indent) + 2:]}"
                elif isinstance(v, list) and v:
                    out.append(f"{indent}-\n")
                    emit(v, indent + "  ")
                else:
                    out.append(f"{indent}- {json.dumps(v)}\n")

    for i, obj in enumerate(objects):
        if i:
            out.append("---\n")
        emit(obj, "")
    return "".join(out)


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
            "securityContext": pod_security_context(),
            "containers": [
                {
                    "name": "fetch",
                    "image": image or os.environ.get(FETCH_IMAGE_ENV) or DEFAULT_FETCH_IMAGE,
                    "command": ["sh", "-c", FETCH_SCRIPT, "fetch", *paths],
                    "env": [{"name": "TRAINYARD_FETCH_ROOT", "value": OUTPUT_MOUNT}],
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
                    "volumeMounts": [{"name": "runs", "mountPath": OUTPUT_MOUNT, "readOnly": True}],
                    "securityContext": {**container_security_context(), "readOnlyRootFilesystem": True},
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
        raise BackendError("fetch pod output is incomplete (no end marker); retry, or read the files from the volume directly")
    return {p: base64.b64decode("".join(chunks)) for p, chunks in files.items()}


def validate_offline(manifest: dict[str, Any], version: str = K8S_VERSION) -> list[str]:
    """kubernetes-validate --strict against the bundled schema of `version` ([] if clean).

    A v1 List is checked item by item. The validators are built once per (version, kind)
    and kept: kubernetes_validate.validate() re-reads its JSON schemas on every call.
    """
    problems = []
    for obj in objects_of(manifest):
        try:
            validator = _schema_validator(version, obj["kind"], obj["apiVersion"])
            keep = _value_keys(version)
        except ImportError:
            return []
        except (KeyError, LookupError, OSError) as exc:
            problems.append(f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}: no Kubernetes {version} schema ({exc})")
            continue
        # The runs of a matrix differ in free-form strings (names, env values, commands),
        # which the schemas never constrain: a manifest of an already valid shape is valid.
        shape = json.dumps(_shape(obj, keep), sort_keys=True)
        if (version, shape) in _VALID_SHAPES:
            continue
        import jsonschema

        error = jsonschema.exceptions.best_match(validator.iter_errors(obj))
        if error is None:
            _VALID_SHAPES.add((version, shape))
        else:
            where = ".".join(str(p) for p in error.path)
            problems.append(f"{obj['kind']} {obj['metadata']['name']}: {where}: {error.message}")
    return problems


_VALID_SHAPES: set[tuple[str, str]] = set()
_CONSTRAINTS = ("enum", "const", "pattern", "minLength", "maxLength", "uniqueItems")


def _shape(obj: Any, keep: frozenset[str], key: str | None = None) -> Any:
    """`obj` with every string blanked except those under keys the schemas constrain."""
    if isinstance(obj, dict):
        return {k: _shape(v, keep, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shape(v, keep, key) for v in obj]
    if isinstance(obj, str) and key not in keep:
        return ""
    return obj


@functools.cache
def _value_keys(version: str) -> frozenset[str]:
    """Property names whose string values some schema constrains (enum, pattern, length...),
    directly or through a $ref to a scalar definition. Conservative: a name constrained
    anywhere is kept everywhere."""
    from kubernetes_validate import utils as kv

    defs = kv.schema_contents(f"{_schema_dir(version)}/_definitions.json", version)["$defs"]

    def constrained(node: Any, seen: frozenset[str] = frozenset()) -> bool:
        if isinstance(node, list):
            return any(constrained(n, seen) for n in node)
        if not isinstance(node, dict):
            return False
        if any(k in node for k in _CONSTRAINTS):
            return True
        ref = node.get("$ref", "")
        name = ref.rsplit("/", 1)[-1]
        if name in defs and name not in seen and "properties" not in defs[name]:
            return constrained(defs[name], seen | {name})
        return any(constrained(v, seen) for k, v in node.items() if k != "properties")

    keys: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for name, sub in (node.get("properties") or {}).items():
                if constrained(sub):
                    keys.add(name)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(defs)
    return frozenset(keys | {"apiVersion", "kind"})


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:2])


@functools.cache
def _schema_dir(version: str) -> str:
    """The newest bundled strict schema not newer than `version` (as kubernetes-validate picks)."""
    from kubernetes_validate import utils as kv

    wanted = _version_tuple(version.lstrip("v"))
    bundled = [v for v in kv.all_versions() if _version_tuple(v) <= wanted]
    if not bundled:
        raise LookupError(f"kubernetes-validate bundles no schema as old as {version}")
    return f"kubernetes-json-schema/v{bundled[-1]}-local-strict"


@functools.cache
def _schema_validator(version: str, kind: str, api_version: str) -> Any:
    """A strict Draft 2020-12 validator over kubernetes-validate's bundled schema."""
    import jsonschema
    from kubernetes_validate import utils as kv
    from referencing import Registry, Resource

    schema_dir = _schema_dir(version)
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)  # rbac.authorization.k8s.io/v1 -> rbac-v1
    schema = kv.schema_contents(f"{schema_dir}/{kind.lower()}-{group}.json", version)
    definitions = kv.schema_contents(f"{schema_dir}/_definitions.json", version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def _client_model(kind: str, manifest: dict[str, Any]) -> Any:
    from kubernetes import client

    return getattr(client, kind).model_validate(manifest)  # extra="forbid": unknown keys raise


def _ref_parts(job: JobRef) -> tuple[str, str]:
    return job.id, (job.extra or {}).get("namespace", DEFAULT_NAMESPACE)


@contextlib.contextmanager
def _api(what: str, missing_ok: bool = False) -> Iterator[None]:
    """API and connection errors -> BackendError('<what>: <the server's message>')."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except ApiException as exc:
        if not (missing_ok and exc.status == 404):
            raise BackendError(f"{what}: {_api_message(exc)}") from exc
    except (HTTPError, OSError) as exc:
        raise BackendError(f"{what}: cannot reach the Kubernetes API ({type(exc).__name__}: {exc})") from exc


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
                    raise BackendError(f"k8s: no Kubernetes credentials: set KUBECONFIG or run inside a cluster ({exc})") from exc
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
        """The Job; for a multi-node run a v1 List of the Job and its headless Service."""
        objects = render_objects(spec)
        return objects[0] if len(objects) == 1 else as_list(objects)

    def validate_payload(self, payload: dict[str, Any]) -> list[str]:
        return validate_offline(payload)

    def submit(self, spec: RunSpec) -> JobRef:
        from kubernetes.client.exceptions import ApiException

        objects = render_objects(spec)
        manifest = objects[0]
        name, ns = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        extra = {"namespace": ns, "pvc": spec.resources.pvc, "run_dir": run_dir_of(spec)}
        if len(objects) > 1:
            extra["service"] = objects[1]["metadata"]["name"]
        ref = JobRef(backend=self.name, id=name, extra=extra)
        where = f"run {spec.name!r}: Job {ns}/{name}"
        body = _client_model("V1Job", manifest)
        for attempt in range(30):
            with _api(f"run {spec.name!r}: cannot create Job {ns}/{name}"):
                try:
                    created = self.batch.create_namespaced_job(ns, body)
                except ApiException as exc:
                    if exc.status != 409:
                        raise
                    created = None
            if created is not None:
                self._ensure_service(spec, objects[1:], created.metadata.uid)
                return ref
            # A Job of that name exists: the same run still going is fine (idempotent
            # submit); a finished one is replaced (the new pod resumes from checkpoints/).
            if attempt == 0:
                existing = self._read_job(name, ns)
                if existing is not None and self._job_state(existing)[0] in ("queued", "running"):
                    old = (existing.metadata.annotations or {}).get("trainyard.io/fingerprint")
                    if old != spec.fingerprint():
                        raise BackendError(f"{where} is still running an older spec of the run; cancel it first (launch.py cancel)")
                    self._ensure_service(spec, objects[1:], existing.metadata.uid)
                    return ref
                self.cancel(ref)
            time.sleep(self.poll_s)  # the old Job's deletion takes a moment
        raise BackendError(f"{where} still exists after deleting it; try again shortly")

    def _ensure_service(self, spec: RunSpec, services: list[dict[str, Any]], job_uid: str | None) -> None:
        """Create the multi-node Job's headless Service, owned by the Job (deleted with it)."""
        from kubernetes.client.exceptions import ApiException

        for svc in services:
            name, ns, job = svc["metadata"]["name"], svc["metadata"]["namespace"], svc["spec"]["selector"][JOB_NAME_LABEL]
            owner = [{"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": job_uid}] if job_uid else []
            body = _client_model("V1Service", {**svc, "metadata": {**svc["metadata"], "ownerReferences": owner}})
            what = f"run {spec.name!r}: Job {ns}/{job} is created but its Service {ns}/{name} is not (submit again to retry)"
            for _ in range(30):
                with _api(what):
                    try:
                        self.core.create_namespaced_service(ns, body)
                        break
                    except ApiException as exc:
                        if exc.status != 409:
                            raise
                    existing = self.core.read_namespaced_service(name, ns)
                    if {o.uid for o in existing.metadata.owner_references or []} == {job_uid} or not job_uid:
                        break  # already this Job's
                    # left over from an earlier Job of the run: garbage collection would
                    # take it away under the new Job, so replace it now
                    with contextlib.suppress(ApiException):
                        self.core.delete_namespaced_service(name, ns)
                time.sleep(self.poll_s)
            else:
                raise BackendError(f"{what}: an older one is still being deleted; try again shortly")

    def state(self, job: JobRef) -> tuple[str, str | None]:
        name, ns = _ref_parts(job)
        obj = self._read_job(name, ns)
        if obj is None:
            return "failed", f"Job {ns}/{name} not found (deleted, or removed {TTL_AFTER_FINISHED_S // 86400} days after it finished)"
        return self._job_state(obj)

    def logs(self, job: JobRef, follow: bool = False) -> Iterator[str]:
        """The newest pod's log lines (no newlines); with follow, then later retries' pods.

        Multi-node Jobs: the pod of node 0 (rank 0 logs the run's progress).
        """
        name, ns = _ref_parts(job)
        last = None  # the pod streamed last: following moves on only to newer ones
        while True:
            pod = self._newest_pod(name, ns)
            if pod is None or (last is not None and _created(pod) <= _created(last)):
                if not follow or self._finished(job):
                    if last is None:
                        raise BackendError(f"Job {ns}/{name} has no pod with a log (yet): {self.state(job)[1] or 'waiting'}")
                    return
                time.sleep(self.poll_s)
                continue
            if not self._started(pod):
                if not follow:
                    raise BackendError(f"Job {ns}/{name}: pod {pod.metadata.name} has not started: {_pod_waiting(pod) or pod.status.phase}")
                time.sleep(self.poll_s)
                continue
            if last is not None:
                yield f"--- trainyard: retried in pod {pod.metadata.name} ---"
            yield from self._pod_log(pod.metadata.name, ns, follow)
            last = pod
            if not follow:
                return

    def cancel(self, job: JobRef) -> None:
        name, ns = _ref_parts(job)
        # Background: the Job goes now; its pods get SIGTERM and checkpoint.
        with _api(f"cannot delete Job {ns}/{name}", missing_ok=True):
            self.batch.delete_namespaced_job(name, ns, propagation_policy="Background")
        service = (job.extra or {}).get("service")
        if service:  # owned by the Job, so garbage-collected anyway; deleted now for a clean resubmit
            with _api(f"cannot delete Service {ns}/{service} of Job {name}", missing_ok=True):
                self.core.delete_namespaced_service(service, ns)

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

        with _api(f"cannot read Job {ns}/{name}"):
            try:
                return self.batch.read_namespaced_job_status(name, ns)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

    def _job_state(self, obj: Any) -> tuple[str, str | None]:
        status = obj.status
        true = {c.type: c for c in (status.conditions or []) if c.status == "True"}
        for kind, state in (("Complete", "completed"), ("SuccessCriteriaMet", "completed"), ("Failed", "failed"), ("FailureTarget", "failed")):
            if kind in true:
                c = true[kind]
                return state, (f"{c.reason}: {c.message}" if c.reason or c.message else None) if state == "failed" else None
        retries = f" (retry {status.failed} of {obj.spec.backoff_limit})" if status.failed else ""
        if obj.spec.suspend or "Suspended" in true:
            queue = (obj.metadata.labels or {}).get(KUEUE_QUEUE_LABEL)
            return "queued", "suspended" + (f": waiting for Kueue to admit it (queue {queue})" if queue else "")
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
        with _api(f"cannot list the pods of Job {ns}/{job_name_}"):
            pods = self.core.list_namespaced_pod(ns, label_selector=f"{JOB_NAME_LABEL}={job_name_}").items
        node0 = [p for p in pods if (p.metadata.labels or {}).get(COMPLETION_INDEX_LABEL) == "0"]
        pods = node0 or pods
        return max(pods, key=_created) if pods else None

    @staticmethod
    def _started(pod: Any) -> bool:
        for cs in pod.status.container_statuses or []:
            if cs.state and (cs.state.running or cs.state.terminated):
                return True
        return pod.status.phase in ("Running", "Succeeded", "Failed")

    def _pod_log(self, pod: str, ns: str, follow: bool) -> Iterator[str]:
        if not follow:
            with _api(f"cannot read the log of pod {ns}/{pod}"):
                text = self.core.read_namespaced_pod_log(pod, ns, container=None)
            yield from text.splitlines()
            return
        with _api(f"cannot follow the log of pod {ns}/{pod}"):
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
        with _api(f"cannot start the fetch pod in {ns}"):
            self.core.create_namespaced_pod(ns, _client_model("V1Pod", manifest))
        try:
            deadline = time.monotonic() + FETCH_TIMEOUT_S
            while True:
                with _api(f"cannot read the fetch pod {ns}/{name}"):
                    pod = self.core.read_namespaced_pod(name, ns)
                if pod.status.phase in ("Succeeded", "Failed"):
                    break
                waiting = _pod_waiting(pod)
                if waiting and waiting.split(":")[0] in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
                    raise BackendError(f"fetch pod cannot pull its image ({waiting}); set {FETCH_IMAGE_ENV} to an image with sh and base64 your cluster can pull")
                if time.monotonic() > deadline:
                    raise BackendError(f"fetch pod {ns}/{name} did not finish in {FETCH_TIMEOUT_S}s: {waiting or pod.status.phase} (is PVC {pvc} ReadWriteMany?)")
                time.sleep(self.poll_s)
            with _api(f"cannot read the log of the fetch pod {ns}/{name}"):
                text = self.core.read_namespaced_pod_log(name, ns)
            if pod.status.phase == "Failed":
                raise BackendError(f"fetch pod {ns}/{name} failed: {text.strip()[-500:] or 'no output'}")
            return parse_fetch_log(text)
        finally:
            with contextlib.suppress(ApiException, BackendError, OSError):  # activeDeadlineSeconds ends it anyway
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
