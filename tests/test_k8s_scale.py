"""Scale-out on Kubernetes: launch shape, multi-node Indexed Jobs, restricted pods, Kueue.

Rendered manifests are checked with kubernetes-validate's strict schemas (the oldest
supported version, 1.30, and the newest bundled) and with the Pod Security Standards
"restricted" rules (tests/k8s_fake.py); the fake API server refuses pods that break them,
as a namespace with pod-security.kubernetes.io/enforce: restricted does.
"""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("kubernetes")

from k8s_fake import FakeK8s, api_client, pod_specs, restricted_violations  # noqa: E402
from trainyard.backends.kubernetes import (  # noqa: E402
    KUEUE_QUEUE_LABEL,
    NO_RETRY_EXIT_CODES,
    KubernetesBackend,
    job_name,
    render_fetch_pod,
    render_objects,
    service_name,
    validate_offline,
)
from trainyard.backends.launch import (  # noqa: E402
    LaunchShapeError,
    describe_launch,
    effective_batch,
    flavor_gpus,
    launch_command,
)
from trainyard.contract import ExitCode  # noqa: E402
from trainyard.errors import BackendError, SpecError  # noqa: E402
from trainyard.matrix import load_matrix  # noqa: E402

NS = "trainyard"
MATRIX = """
name: scale
base:
  recipe: sft
  model: {name: Qwen/Qwen3-4B}
  data: {source: fixture:strandset_rust, format: strandset_rust}
  train: {batch_size: 2, grad_accum: 4}
  resources: {gpus: 1, cpu: "16", memory: 128Gi, retries: 2}
variants:
  - {name: one}
  - {name: gpus4, resources.gpus: 4}
  - {name: two-nodes, resources.gpus: 4, resources.nodes: 2}
  - {name: queued, resources.queue: team-a, resources.labels: {team: nlp, example.com/cost-center: "42"}, resources.annotations: {example.com/owner: "alice@example.com"}}
  - {name: cpu2, resources.gpus: 0, resources.processes: 2, resources.shm_size: 1Gi}
"""


def schema_versions() -> list[str]:
    kv = pytest.importorskip("kubernetes_validate")
    return ["1.30", kv.utils.latest_version()]


@pytest.fixture
def specs(write_yaml):
    return {s.name: s for s in load_matrix(write_yaml(MATRIX)).runs}


@pytest.fixture
def fake(tmp_path):
    with FakeK8s({"trainyard-runs": tmp_path / "volume"}) as f:
        yield f


@pytest.fixture
def backend(fake) -> KubernetesBackend:
    return KubernetesBackend(api_client(fake.url), poll_s=0.01)


def container(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


# -- the launch command (torch-free; shared with hf-jobs and, later, local)


def test_launch_command_shapes(specs):
    run = ["-m", "trainyard.run", "--run-dir", "/output/x"]
    assert launch_command(specs["one"], "/output/x") == ["python", *run]
    assert launch_command(specs["gpus4"], "/output/x") == ["python", "-m", "trainyard.backends.launch", "--standalone", "--nnodes", "1", "--nproc-per-node", "4", *run]
    assert launch_command(specs["cpu2"], "/output/x")[7] == "2"  # processes: 2 on a CPU-only pod (gloo)
    multi = launch_command(specs["two-nodes"], "/output/x", node_rank="$(JOB_COMPLETION_INDEX)", master_addr="j-0.j")
    assert multi[multi.index("--nnodes") + 1] == "2" and multi[multi.index("--node-rank") + 1] == "$(JOB_COMPLETION_INDEX)"
    assert multi[multi.index("--master-addr") + 1] == "j-0.j" and multi[multi.index("--nproc-per-node") + 1] == "4"
    with pytest.raises(LaunchShapeError, match=r"run 'two-nodes' \| key 'resources.nodes': 2 nodes need the k8s backend"):
        launch_command(specs["two-nodes"], "/output/x")  # hf-jobs / local: one node only


def test_effective_batch_counts_every_process(specs):
    assert effective_batch(specs["one"]) == 8
    assert effective_batch(specs["two-nodes"]) == 2 * 4 * 4 * 2
    assert describe_launch(specs["two-nodes"], "k8s") == "2 nodes x 4 processes (torchrun), effective batch 2 x 4 x 4 x 2 = 64"
    assert describe_launch(specs["one"], "k8s") == "1 process, effective batch 2 x 4 = 8"
    # HF Jobs: the flavor carries the GPU count
    assert [flavor_gpus(f) for f in ("a100x4", "h200x8", "h200", "a10g-largex2", "cpu-basic")] == [4, 8, 1, 2, 0]
    h200x8 = specs["one"].model_copy(update={"resources": specs["one"].resources.model_copy(update={"flavor": "h200x8"})})
    assert describe_launch(h200x8, "hf-jobs").endswith("= 64")


def test_the_launcher_keeps_the_workers_exit_code(tmp_path):
    """torchrun itself exits 1 when a worker exits 2; the podFailurePolicy needs the 2."""
    import subprocess
    import sys

    script = tmp_path / "worker.py"
    script.write_text("import os, sys\nsys.exit(2 if os.environ['LOCAL_RANK'] == '1' else 0)\n")
    proc = subprocess.run([sys.executable, "-m", "trainyard.backends.launch", "--standalone", "--nnodes", "1", "--nproc-per-node", "2", str(script)], capture_output=True, text=True, timeout=120, env={**__import__("os").environ, "PYTHONPATH": str(__import__("pathlib").Path(__file__).resolve().parents[1] / "src")})
    assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr[-2000:]


def test_bad_launch_shapes_and_metadata_are_spec_errors(write_yaml):
    cases = {
        "resources.processes: 8, resources.gpus: 4": "processes (8) > gpus (4)",
        "resources.nodes: 0": "nodes",
        "resources.labels: {'bad key': x}": "key 'resources.labels': 'bad key'",
        "resources.labels: {team: 'a b'}": "value 'a b'",
        "resources.labels: {trainyard.io/run: x}": "set by trainyard",
        "resources.labels: {kueue.x-k8s.io/queue-name: x}": "use resources.queue",
        "resources.annotations: {UPPER.example.com/x: y}": "DNS subdomain",
        "resources.annotations: {trainyard.io/x: y}": "resources.annotations",
        "resources.queue: Team_A": "queue",
    }
    for override, expected in cases.items():
        text = MATRIX.split("variants:")[0] + f"variants:\n  - {{name: bad, {override}}}\n"
        with pytest.raises(SpecError) as err:
            load_matrix(write_yaml(text))
        assert expected in str(err.value) and "resources" in str(err.value), (override, str(err.value))


# -- rendered objects


@pytest.mark.parametrize("run", ["one", "gpus4", "two-nodes", "queued", "cpu2"])
def test_rendered_objects_validate_strictly_and_are_restricted(specs, run):
    objects = render_objects(specs[run])
    for version in schema_versions():
        for obj in objects:
            assert validate_offline(obj, version) == [], (version, obj["kind"])
    for obj in objects:
        for pod in pod_specs(obj):
            assert restricted_violations(pod) == []
            assert pod["securityContext"]["runAsUser"] == 1000 and pod["securityContext"]["fsGroup"] == 1000
            shm = next(v for v in pod["volumes"] if v["name"] == "dshm")["emptyDir"]
            assert shm["medium"] == "Memory" and shm["sizeLimit"]
    assert validate_offline(render_fetch_pod(NS, "trainyard-runs", ["a/b"]), schema_versions()[-1]) == []
    assert restricted_violations(render_fetch_pod(NS, "trainyard-runs", ["a/b"])["spec"]) == []


def test_gpus_4_starts_4_processes(specs):
    (job,) = render_objects(specs["gpus4"])
    c = container(job)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert c["command"][c["command"].index("--nproc-per-node") + 1] == "4"
    assert "completionMode" not in job["spec"] and "subdomain" not in job["spec"]["template"]["spec"]
    # torchrun SIGKILLs its workers 30 s after SIGTERM by default: too short for a checkpoint
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert int(env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"]) == job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] - 30
    assert "TORCH_ELASTIC_SHUTDOWN_TIMEOUT" not in {e["name"] for e in container(render_objects(specs["one"])[0])["env"]}


def test_two_nodes_is_an_indexed_job_with_a_headless_service(specs):
    spec = specs["two-nodes"]
    job, svc = render_objects(spec)
    name = job["metadata"]["name"]
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == ("Indexed", 2, 2)
    assert job["spec"]["backoffLimit"] == 2 * 2  # a failing node takes the other down: a retry per node
    pod = job["spec"]["template"]["spec"]
    assert svc["kind"] == "Service" and svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert pod["subdomain"] == svc["metadata"]["name"] == service_name(name)
    assert svc["spec"]["selector"] == {"batch.kubernetes.io/job-name": name}
    cmd = container(job)["command"]
    # rendezvous on pod 0 (hostname <job>-0 in the Service's subdomain); node rank = completion index
    assert cmd[cmd.index("--master-addr") + 1] == f"{name}-0.{svc['metadata']['name']}"
    assert cmd[cmd.index("--node-rank") + 1] == "$(JOB_COMPLETION_INDEX)"
    assert str(svc["spec"]["ports"][0]["port"]) == cmd[cmd.index("--master-port") + 1]
    # one pod's config error fails the whole Job: every pod stops, nothing is retried
    fail = job["spec"]["podFailurePolicy"]["rules"][1]
    assert fail["action"] == "FailJob" and fail["onExitCodes"]["values"] == NO_RETRY_EXIT_CODES == [2, 3, 130]


def test_multi_node_names_fit_pod_hostnames():
    long_spec = load_matrix_text(f"name: {'m' * 40}\nbase:\n  recipe: sft\n  model: {{name: x/y}}\n  data: {{source: fixture:strandset_rust, format: strandset_rust}}\n  resources: {{nodes: 16}}\nvariants:\n  - {{name: {'r' * 30}}}\n")
    job, svc = render_objects(long_spec)
    assert len(job["metadata"]["name"] + "-15") <= 63 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", svc["metadata"]["name"])
    digit = service_name(job_name("7b", "x"))
    assert digit[0].isalpha() and len(digit) <= 63 and digit != service_name(job_name("7c", "x"))


def load_matrix_text(text: str):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.yaml"
        p.write_text(text)
        return load_matrix(p).runs[0]


def test_queue_and_labels(specs):
    (job,) = render_objects(specs["queued"])
    for meta in (job["metadata"], job["spec"]["template"]["metadata"]):
        assert meta["labels"]["team"] == "nlp" and meta["labels"]["example.com/cost-center"] == "42"
        assert meta["annotations"]["example.com/owner"] == "alice@example.com"
    assert job["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "team-a"
    assert job["spec"]["suspend"] is True  # Kueue unsuspends it on admission
    (plain,) = render_objects(specs["one"])
    assert KUEUE_QUEUE_LABEL not in plain["metadata"]["labels"] and "suspend" not in plain["spec"]


def test_strict_validation_still_catches_errors_after_a_valid_manifest(specs):
    (job,) = render_objects(specs["one"])
    assert validate_offline(job) == []
    job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = {"n": 4}
    job["spec"]["backofLimit"] = 1
    problems = validate_offline(job)
    assert problems and "Job" in problems[0]


# -- the restricted-profile checker itself (so a passing check means something)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p, c: p["securityContext"].pop("runAsNonRoot") and c["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
        (lambda p, c: c["securityContext"].pop("allowPrivilegeEscalation"), "allowPrivilegeEscalation"),
        (lambda p, c: c["securityContext"]["capabilities"].update(drop=["NET_RAW"]), "drop lacks ALL"),
        (lambda p, c: c["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]), "SYS_ADMIN"),
        (lambda p, c: p["securityContext"].pop("seccompProfile"), "seccompProfile unset"),
        (lambda p, c: p["securityContext"].update(seccompProfile={"type": "Unconfined"}), "Unconfined"),
        (lambda p, c: c["securityContext"].update(privileged=True), "privileged"),
        (lambda p, c: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
        (lambda p, c: p.update(hostNetwork=True), "hostNetwork"),
        (lambda p, c: c["securityContext"].update(runAsUser=0), "runAsUser=0"),
        (lambda p, c: c.update(ports=[{"containerPort": 80, "hostPort": 80}]), "hostPort"),
    ],
)
def test_restricted_checker_catches_each_rule(specs, mutate, expected):
    (job,) = render_objects(specs["one"])
    pod = job["spec"]["template"]["spec"]
    mutate(pod, pod["containers"][0])
    assert any(expected in v for v in restricted_violations(pod)), restricted_violations(pod)


# -- against the fake API server


def test_multi_node_submit_creates_job_and_service_and_cancel_deletes_both(backend, fake, specs):
    ref = backend.submit(specs["two-nodes"])
    job = fake.jobs[(NS, ref.id)]
    (svc_key,) = fake.services
    svc = fake.services[svc_key]
    assert job["spec"]["completionMode"] == "Indexed" and ref.extra["service"] == svc_key[1]
    # owned by the Job: garbage-collected with it (also when the finished Job's TTL expires)
    assert svc["metadata"]["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job", "name": ref.id, "uid": job["metadata"]["uid"]}]
    assert backend.submit(specs["two-nodes"]) == ref  # idempotent while queued
    assert len(fake.calls("POST", "/services$")) == 2 and len(fake.services) == 1
    backend.cancel(ref)
    assert not fake.jobs and not fake.services
    assert [c[1].rsplit("/", 2)[-2] for c in fake.calls("DELETE")] == ["jobs", "services"]
    backend.cancel(ref)  # idempotent: both already gone


def test_resubmitting_a_finished_multi_node_run_replaces_its_service(backend, fake, specs):
    ref = backend.submit(specs["two-nodes"])
    fake.set_job_status(NS, ref.id, failed=4, conditions=[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "x"}])
    backend.submit(specs["two-nodes"])  # deletes the finished Job and its Service, creates both anew
    new_uid = fake.jobs[(NS, ref.id)]["metadata"]["uid"]
    assert fake.services[(NS, ref.extra["service"])]["metadata"]["ownerReferences"][0]["uid"] == new_uid
    # a Service left over from an earlier Job (its Job gone after the TTL, garbage collection
    # not yet done) would vanish under the new Job: it is replaced, not kept
    del fake.jobs[(NS, ref.id)]
    backend.submit(specs["two-nodes"])
    newest = fake.jobs[(NS, ref.id)]["metadata"]["uid"]
    assert newest != new_uid and fake.services[(NS, ref.extra["service"])]["metadata"]["ownerReferences"][0]["uid"] == newest


def test_a_refused_service_names_the_created_job_and_a_resubmit_adds_it(backend, fake, specs):
    fake.services_forbidden = True
    with pytest.raises(BackendError, match=r"run 'two-nodes': Job trainyard/scale-two-nodes is created but its Service trainyard/scale-two-nodes is not \(submit again to retry\): services is forbidden"):
        backend.submit(specs["two-nodes"])
    fake.services_forbidden = False
    ref = backend.submit(specs["two-nodes"])  # the queued Job is kept; only the Service is new
    assert len(fake.calls("POST", "/jobs$")) == 2 and len(fake.jobs) == 1 and (NS, ref.extra["service"]) in fake.services


def test_kueue_suspended_job_is_queued_with_why(backend, fake, specs):
    ref = backend.submit(specs["queued"])
    assert fake.jobs[(NS, ref.id)]["spec"]["suspend"] is True
    fake.set_job_status(NS, ref.id, conditions=[{"type": "Suspended", "status": "True"}])
    assert backend.state(ref) == ("queued", "suspended: waiting for Kueue to admit it (queue team-a)")


def test_a_pod_breaking_the_restricted_profile_is_refused_with_the_run_named(backend, fake, specs, monkeypatch):
    import trainyard.backends.kubernetes as k8s

    monkeypatch.setattr(k8s, "container_security_context", lambda: {"allowPrivilegeEscalation": True})
    with pytest.raises(BackendError, match=r"run 'one': cannot create Job trainyard/scale-one: .*violates PodSecurity .*allowPrivilegeEscalation"):
        backend.submit(specs["one"])
    assert not fake.jobs


def test_an_unreachable_api_server_is_a_backend_error(specs):
    dead = KubernetesBackend(api_client("http://127.0.0.1:9"), poll_s=0.01)
    dead.api_client.configuration.retries = 0
    with pytest.raises(BackendError, match=r"run 'one': cannot create Job trainyard/scale-one: cannot reach the Kubernetes API"):
        dead.submit(specs["one"])
    with pytest.raises(BackendError, match="cannot read Job"):
        dead.state(__import__("trainyard.backends.base", fromlist=["JobRef"]).JobRef("k8s", "scale-one", extra={"namespace": NS}))


def test_logs_of_a_multi_node_job_come_from_node_0(backend, fake, specs):
    ref = backend.submit(specs["two-nodes"])
    fake.add_pod(NS, ref.id, f"{ref.id}-0-abc", log="rank 0: step 1\n", created="2026-01-01T00:00:00Z")
    fake.add_pod(NS, ref.id, f"{ref.id}-1-def", log="rank 4: quiet\n", created="2026-01-01T00:00:05Z")
    fake.pods[(NS, f"{ref.id}-0-abc")]["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] = "0"
    fake.pods[(NS, f"{ref.id}-1-def")]["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] = "1"
    assert list(backend.logs(ref)) == ["rank 0: step 1"]


def test_the_spec_in_the_job_is_the_spec(specs):
    (job,) = render_objects(specs["queued"])
    env = {e["name"]: e for e in container(job)["env"]}
    assert json.loads(env["TRAINYARD_SPEC"]["value"])["resources"]["queue"] == "team-a"
    assert env["TRACKIO_WRITE_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "trackio-write-token", "key": "TRACKIO_WRITE_TOKEN", "optional": True}


def test_hf_jobs_multi_gpu_flavors_use_the_same_launch(specs):
    from trainyard.backends.hf_jobs import HfJobsBackend

    hf = HfJobsBackend(api=object(), namespace="alice")
    res = specs["one"].resources
    x4 = specs["one"].model_copy(update={"resources": res.model_copy(update={"flavor": "a100x4"})})
    script = hf.render(x4)["command"][-1]  # bash -c '[install &&] <launch>; no-retry exit mapping'
    assert "python -m trainyard.backends.launch --standalone --nnodes 1 --nproc-per-node 4 -m trainyard.run" in script
    one = hf.render(specs["one"])["command"][-1]  # a100-large: one GPU, one plain process
    assert "python -m trainyard.run --run-dir" in one and "trainyard.backends.launch" not in one
    two = specs["one"].model_copy(update={"resources": res.model_copy(update={"nodes": 2})})
    with pytest.raises(BackendError, match="resources.nodes"):
        hf.render(two)
