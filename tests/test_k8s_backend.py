"""Kubernetes backend: rendered Jobs, and the client against a fake API server.

No cluster runs here: tests/k8s_fake.py answers the real API paths with the real JSON
shapes; the rendered manifests are checked offline with kubernetes-validate --strict.
"""

from __future__ import annotations

import json
import re
import threading
import time

import pytest

pytest.importorskip("kubernetes")

from k8s_fake import FakeK8s, api_client  # noqa: E402
from trainyard.backends.base import JobRef  # noqa: E402
from trainyard.backends.kubernetes import (  # noqa: E402
    KubernetesBackend,
    _client_model,
    job_name,
    label_value,
    parse_fetch_log,
    render_fetch_pod,
    render_job,
    validate_offline,
)
from trainyard.matrix import load_matrix  # noqa: E402
from trainyard.spec import (
    RunSpec,  # noqa: E402
    duration_seconds,
)

NS = "trainyard"
MATRIX = """
name: rust_sft
base:
  recipe: sft
  model: {name: Qwen/Qwen3-0.6B}
  data: {source: fixture:strandset_rust, format: strandset_rust}
  resources:
    gpus: 2
    cpu: "16"
    memory: 128Gi
    timeout: 8h
    retries: 3
    node_selector: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}
    tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
    priority_class: trainyard-batch
variants:
  - {name: 5k, data.limit: 5000}
  - {name: push, hub.push: true, resources.gpus: 0, resources.cache_pvc: null}
"""


@pytest.fixture
def specs(write_yaml) -> dict[str, RunSpec]:
    return {s.name: s for s in load_matrix(write_yaml(MATRIX)).runs}


@pytest.fixture
def fake(tmp_path):
    with FakeK8s({"trainyard-runs": tmp_path / "volume"}) as f:
        yield f


@pytest.fixture
def backend(fake) -> KubernetesBackend:
    return KubernetesBackend(api_client(fake.url), poll_s=0.01)


def env_of(job: dict) -> dict[str, dict]:
    return {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


# -- names and durations


def test_job_names_are_dns_labels_unique_per_run():
    assert job_name("sft-demo", "5k") == "sft-demo-5k"  # already valid: kept as is
    names = [job_name("rust_sft", "5k"), job_name("Rust_SFT", "5k"), job_name("rust-sft", "5k"), job_name("m", "lr2e-5_r32=x+y"), job_name("a" * 40, "b" * 60)]
    for n in names:
        assert len(n) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", n), n
    assert len(set(names)) == len(names)
    assert names[0].startswith("rust-sft-5k-") and len(names[0]) == len("rust-sft-5k-") + 8
    assert job_name("a" * 40, "b" * 60) == job_name("a" * 40, "b" * 60)  # stable
    assert label_value("20k-r32=x") != "20k-r32=x" and re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", label_value("20k-r32=x"))
    assert label_value("rust_sft") == "rust_sft"


def test_parse_duration():
    assert [duration_seconds(t) for t in ("6h", "90m", "45s", "2d", "3600", "1.5h")] == [21600, 5400, 45, 172800, 3600, 5400]
    with pytest.raises(ValueError, match="6h"):
        duration_seconds("six hours")


# -- the rendered Job


def test_rendered_job(specs):
    spec = specs["5k"]
    job = render_job(spec)
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert job["metadata"]["name"] == job_name("rust_sft", "5k") and job["metadata"]["namespace"] == NS
    assert job["metadata"]["labels"]["trainyard.io/matrix"] == "rust_sft"
    assert job["metadata"]["labels"]["trainyard.io/run"] == "5k"
    assert job["spec"]["template"]["metadata"]["labels"] == job["metadata"]["labels"]
    assert c["image"] == spec.image
    # gpus: 2 -> two processes under torchrun (through trainyard.backends.launch, which keeps the exit codes)
    assert c["command"] == ["python", "-m", "trainyard.backends.launch", "--standalone", "--nnodes", "1", "--nproc-per-node", "2", "-m", "trainyard.run", "--run-dir", "/output/rust_sft/5k"]
    env = env_of(job)
    assert RunSpec.model_validate(json.loads(env["TRAINYARD_SPEC"]["value"])) == spec
    assert env["TRAINYARD_RUN_DIR"]["value"] == "/output/rust_sft/5k"
    assert "value" not in env["HF_TOKEN"]
    assert env["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN", "optional": True}}
    assert c["resources"] == {"requests": {"cpu": "16", "memory": "128Gi"}, "limits": {"memory": "128Gi", "nvidia.com/gpu": "2"}}
    assert job["spec"]["backoffLimit"] == 3
    assert job["spec"]["activeDeadlineSeconds"] == 8 * 3600
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert pod["restartPolicy"] == "Never"
    rules = job["spec"]["podFailurePolicy"]["rules"]
    # disruption first: a preempted pod exits 130 after checkpointing and must be retried
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert rules[1] == {"action": "FailJob", "onExitCodes": {"containerName": "train", "operator": "In", "values": [2, 3, 130]}}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert mounts["runs"] == "/output" and claims["runs"] == "trainyard-runs"
    assert mounts["hf-cache"] == "/cache" and claims["hf-cache"] == "trainyard-hf-cache"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["priorityClassName"] == "trainyard-batch"
    assert pod["automountServiceAccountToken"] is False
    assert "hf_" not in json.dumps(job)


def test_push_run_requires_the_token_and_cpu_run_asks_no_gpu(specs):
    job = render_job(specs["push"])
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert env_of(job)["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is False
    assert "nvidia.com/gpu" not in c["resources"]["limits"]
    assert "hf-cache" not in {m["name"] for m in c["volumeMounts"]}


def test_namespace_from_env(specs, monkeypatch):
    monkeypatch.setenv("TRAINYARD_K8S_NAMESPACE", "ml-team")
    assert render_job(specs["5k"])["metadata"]["namespace"] == "ml-team"


@pytest.mark.parametrize("matrix", ["jobs/rust_sft.yaml", None])
def test_rendered_manifests_pass_strict_validation(matrix, specs):
    pytest.importorskip("kubernetes_validate")
    runs = load_matrix(matrix).runs if matrix else list(specs.values())
    for spec in runs:
        assert validate_offline(render_job(spec)) == []
    assert validate_offline(render_fetch_pod(NS, "trainyard-runs", ["m/r/status.json"])) == []


def test_strict_validation_catches_what_the_api_server_rejects(specs):
    pytest.importorskip("kubernetes_validate")
    job = render_job(specs["5k"])
    del job["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"]
    assert any("'status' is a required property" in p for p in validate_offline(job))


def test_client_model_rejects_unknown_keys_and_number_quantities(specs):
    job = render_job(specs["5k"])
    job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = 4
    with pytest.raises(ValueError, match="string"):
        _client_model("V1Job", job)
    job = render_job(specs["5k"])
    job["spec"]["backofLimit"] = 1
    with pytest.raises(ValueError, match="backofLimit"):
        _client_model("V1Job", job)


# -- against the fake API server


def test_submit_posts_the_job(backend, fake, specs):
    ref = backend.submit(specs["5k"])
    assert ref == JobRef("k8s", job_name("rust_sft", "5k"), None, {"namespace": NS, "pvc": "trainyard-runs", "run_dir": "/output/rust_sft/5k"})
    (post,) = fake.calls("POST", r"/apis/batch/v1/namespaces/trainyard/jobs$")
    body = post[3]
    assert body == json.loads(json.dumps(render_job(specs["5k"])))  # exactly the rendered manifest
    limits = body["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"memory": "128Gi", "nvidia.com/gpu": "2"}  # strings on the wire
    hf = env_of(body)["HF_TOKEN"]
    assert set(hf) == {"name", "valueFrom"}


def test_resubmit_keeps_a_live_job_and_replaces_a_finished_one(backend, fake, specs):
    ref = backend.submit(specs["5k"])
    fake.set_job_status(NS, ref.id, active=1, ready=1)
    assert backend.submit(specs["5k"]) == ref
    assert not fake.calls("DELETE")  # idempotent: the running Job is left alone
    changed = specs["5k"].model_copy(update={"image": "other:1"})
    with pytest.raises(RuntimeError, match="older spec"):
        backend.submit(changed)
    fake.set_job_status(NS, ref.id, failed=3, conditions=[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}])
    backend.submit(specs["5k"])
    assert [c[2] for c in fake.calls("DELETE", ref.id)] == [{"propagationPolicy": "Background"}]
    assert len(fake.calls("POST", "/jobs$")) == 5 and fake.jobs[(NS, ref.id)]["status"] == {}


def test_conflict_with_a_job_deleted_meanwhile_retries(backend, fake, specs):
    fake.conflict_once.add(job_name("rust_sft", "5k"))  # 409, then the Job is not found
    ref = backend.submit(specs["5k"])
    assert (NS, ref.id) in fake.jobs and len(fake.calls("POST", "/jobs$")) == 2


def test_api_errors_name_the_job(backend, fake, specs):
    fake.forbidden.add("other")
    spec = specs["5k"].model_copy(update={"resources": specs["5k"].resources.model_copy(update={"namespace": "other"})})
    with pytest.raises(RuntimeError, match=r'cannot create Job other/rust-sft-5k-\w+: jobs.batch is forbidden: User "alice" cannot'):
        backend.submit(spec)


@pytest.mark.parametrize(
    ("status", "pod", "expected"),
    [
        ({}, None, ("queued", "waiting for the Job controller")),
        ({"active": 1}, {"phase": "Pending", "waiting": ("ImagePullBackOff", 'Back-off pulling image "ghcr.io/x"')}, ("queued", 'ImagePullBackOff: Back-off pulling image "ghcr.io/x"')),
        ({"active": 1}, {"phase": "Pending", "waiting": ("CreateContainerConfigError", 'secret "hf-token" not found')}, ("queued", 'CreateContainerConfigError: secret "hf-token" not found')),
        ({"active": 1}, {"phase": "Running"}, ("running", None)),
        ({"active": 1, "ready": 1, "failed": 1}, None, ("running", "(retry 1 of 3)")),
        ({"succeeded": 1, "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}, None, ("completed", None)),
        ({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": "Container train for pod trainyard/x failed with exit code 2 matching FailJob rule at index 1"}]}, None, ("failed", "PodFailurePolicy: Container train for pod trainyard/x failed with exit code 2 matching FailJob rule at index 1")),
        ({"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}]}, None, ("failed", "DeadlineExceeded: Job was active longer than specified deadline")),
        ({"conditions": [{"type": "Suspended", "status": "True"}]}, None, ("queued", "suspended")),
        ({"conditions": [{"type": "Complete", "status": "False"}], "active": 1, "ready": 1}, None, ("running", None)),
    ],
)
def test_state_mapping(backend, fake, specs, status, pod, expected):
    ref = backend.submit(specs["5k"])
    fake.set_job_status(NS, ref.id, **status)
    if pod:
        fake.add_pod(NS, ref.id, ref.id + "-p1", phase=pod["phase"], waiting=pod.get("waiting"))
    assert backend.state(ref) == expected


def test_state_of_a_deleted_job(backend, specs):
    ref = JobRef("k8s", "gone", extra={"namespace": NS})
    state, detail = backend.state(ref)
    assert state == "failed" and "not found" in detail


def test_logs_of_the_newest_pod(backend, fake, specs):
    ref = backend.submit(specs["5k"])
    with pytest.raises(RuntimeError, match="no pod"):
        list(backend.logs(ref))
    fake.add_pod(NS, ref.id, "p1", phase="Failed", log="old attempt\n", created="2026-01-01T00:00:00Z")
    fake.add_pod(NS, ref.id, "p2", log="step 1 loss 2.5\nstep 2 loss 2.1\n", created="2026-01-01T00:05:00Z")
    assert list(backend.logs(ref)) == ["step 1 loss 2.5", "step 2 loss 2.1"]
    assert fake.calls("GET", "/pods$")[-1][2] == {"labelSelector": f"batch.kubernetes.io/job-name={ref.id}"}


def test_logs_of_a_pod_that_has_not_started(backend, fake, specs):
    ref = backend.submit(specs["5k"])
    fake.add_pod(NS, ref.id, "p1", phase="Pending", waiting=("ContainerCreating", ""))
    with pytest.raises(RuntimeError, match="has not started: ContainerCreating"):
        list(backend.logs(ref))


def test_follow_streams_chunks_and_moves_on_to_retries(backend, fake, specs):
    ref = backend.submit(specs["5k"])
    fake.set_job_status(NS, ref.id, active=1, ready=1)
    fake.add_pod(NS, ref.id, "p1", phase="Failed", log="a\nbb\nccc\n", created="2026-01-01T00:00:00Z")

    def controller():  # after the first pod's log was read: a retry pod, then completion
        while not fake.calls("GET", "/p1/log"):
            time.sleep(0.01)
        fake.add_pod(NS, ref.id, "p2", log="resumed\ndone", created="2026-01-01T00:01:00Z")
        while not fake.calls("GET", "/p2/log"):
            time.sleep(0.01)
        fake.set_job_status(NS, ref.id, conditions=[{"type": "Complete", "status": "True"}])

    t = threading.Thread(target=controller, daemon=True)
    t.start()
    lines = list(backend.logs(ref, follow=True))
    t.join(5)
    assert lines == ["a", "bb", "ccc", "--- trainyard: retried in pod p2 ---", "resumed", "done"]
    assert fake.calls("GET", "/p1/log")[0][2] == {"follow": "true"}


def test_cancel_deletes_in_background_and_is_idempotent(backend, fake, specs):
    ref = backend.submit(specs["5k"])
    backend.cancel(ref)
    backend.cancel(ref)  # already gone: fine
    assert [c[2] for c in fake.calls("DELETE")] == [{"propagationPolicy": "Background"}] * 2
    assert (NS, ref.id) not in fake.jobs


def test_fetch_results_through_a_pod(backend, fake, specs, tmp_path):
    run = tmp_path / "volume" / "rust_sft" / "5k"
    run.mkdir(parents=True)
    (run / "status.json").write_text('{"state": "completed", "step": 40}')
    (run / "metrics.json").write_text('{"train/loss": 1.25, "eval/heldout/perplexity": "inf"}')
    (run / "README.md").write_bytes("# model card \u2713\n".encode() * 200)  # multi-line base64, UTF-8
    refs = [backend.submit(specs["5k"]), backend.submit(specs["push"])]  # push: nothing on the volume yet
    got = backend.fetch_results(refs)
    assert got[refs[0].id] == {"status.json": (run / "status.json").read_bytes(), "metrics.json": (run / "metrics.json").read_bytes(), "README.md": (run / "README.md").read_bytes()}
    assert got[refs[1].id] == {}
    (post,) = fake.calls("POST", "/api/v1/namespaces/trainyard/pods$")  # one pod for both runs
    pod = post[3]
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"] == {"claimName": "trainyard-runs", "readOnly": True}
    assert "rust_sft/5k/status.json" in pod["spec"]["containers"][0]["command"]
    assert fake.calls("DELETE", pod["metadata"]["name"])  # cleaned up
    assert not fake.pods


def test_fetch_pod_failure_is_reported(backend, fake, specs):
    ref = backend.submit(specs["5k"])
    ref.extra["pvc"] = "not-mounted"
    with pytest.raises(RuntimeError, match="fetch pod .* failed: sh: cd: can't cd"):
        backend.fetch_results([ref])
    assert not fake.pods  # deleted even on failure


def test_parse_fetch_log_needs_the_end_marker():
    assert parse_fetch_log("@@file a/b.json\ne30=\n@@end\n") == {"a/b.json": b"{}"}
    with pytest.raises(RuntimeError, match="incomplete"):
        parse_fetch_log("@@file a/b.json\ne30=\n")
