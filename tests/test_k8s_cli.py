"""`launch.py --backend k8s` end to end against the fake API server, plus the k8s/ manifests."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("kubernetes")

import trainyard.backends as backends  # noqa: E402
import trainyard.backends.remote as remote  # noqa: E402
from k8s_fake import FakeK8s, api_client, pod_specs, restricted_violations  # noqa: E402
from trainyard.backends.kubernetes import KubernetesBackend, job_name  # noqa: E402
from trainyard.cli import main  # noqa: E402
from trainyard.run_dir import RunDir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NS = "trainyard"
MATRIX = """
name: k8s_demo
base:
  recipe: sft
  model: {name: Qwen/Qwen3-0.6B}
  data: {source: fixture:strandset_rust, format: strandset_rust}
  resources: {gpus: 1, cpu: "8", memory: 64Gi, timeout: 2h}
variants:
  - {name: a, train.lr: 1.0e-4}
  - {name: b, train.lr: 2.0e-4}
"""


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    volume = tmp_path / "volume"
    with FakeK8s({"trainyard-runs": volume}) as fake:
        k8s = KubernetesBackend(api_client(fake.url), poll_s=0.01)
        real = backends.get_backend

        def get_backend(name):
            return k8s if name == "k8s" else real(name)

        monkeypatch.setattr(backends, "get_backend", get_backend)
        monkeypatch.setattr(remote, "get_backend", get_backend)
        fake.volume = volume
        yield fake


@pytest.fixture
def launch(tmp_path, write_yaml):
    matrix = write_yaml(MATRIX)
    runs = tmp_path / "runs"

    def _launch(*args: str) -> int:
        cmd, rest = (args[0], args[1:]) if args and args[0] in ("status", "logs", "cancel", "report") else ("submit", args)
        return main([cmd, "--matrix", str(matrix), "--runs-dir", str(runs), *rest])

    _launch.runs, _launch.matrix = runs, matrix
    return _launch


def write_remote_run(volume: Path, run: str, status: dict, metrics: dict | None = None) -> None:
    d = volume / "k8s_demo" / run
    d.mkdir(parents=True, exist_ok=True)
    (d / "status.json").write_text(json.dumps({"updated_at": time.time(), **status}))  # newer than the submit
    if metrics is not None:
        (d / "metrics.json").write_text(json.dumps(metrics))
        (d / "history.json").write_text(json.dumps([{"step": 1, "train/loss": 2.0}, {"step": 2, "train/loss": 1.5}]))


def test_dry_run_prints_valid_manifests(launch, cluster, capsys):
    assert launch("--backend", "k8s", "--dry-run") == 0
    out, err = capsys.readouterr()
    names = re.findall(r'^    "name": "(k8s-demo-[ab]-\w+)"', out, re.M)
    assert names == [job_name("k8s_demo", "a"), job_name("k8s_demo", "b")]
    assert "nothing submitted" in out
    assert not cluster.requests  # nothing reached the API


def test_dry_run_yaml_is_a_pure_stream_of_objects(cluster, capsys):
    """`| kubectl apply -f -`: stdout holds only the objects; the table and notes go to stderr."""
    kv = pytest.importorskip("kubernetes_validate")
    assert main(["submit", "--matrix", str(ROOT / "jobs" / "rust_sft.yaml"), "--backend", "k8s", "--dry-run", "-o", "yaml"]) == 0
    out, err = capsys.readouterr()
    docs = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in docs] == ["Job"] * 3 and all(d.get("apiVersion") for d in docs)
    for d in docs:
        for version in ("1.30", kv.utils.latest_version()):
            kv.validate(d, version, strict=True)
    assert "nothing submitted" in err and "effective batch 2 x 2 = 4" in err and "rust_sft" in err
    assert not cluster.requests


def test_dry_run_of_a_multi_node_run_lists_job_and_service(launch, cluster, capsys, write_yaml):
    two = write_yaml(MATRIX.replace("gpus: 1,", "gpus: 8, nodes: 2, queue: team-a,"))
    assert main(["submit", "--matrix", str(two), "--backend", "k8s", "--dry-run", "-o", "json"]) == 0
    out, err = capsys.readouterr()
    listed = json.loads(out)
    assert listed["kind"] == "List" and [o["kind"] for o in listed["items"]] == ["Job", "Service"] * 2
    job = listed["items"][0]
    assert job["spec"]["completionMode"] == "Indexed" and job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert "2 nodes x 8 processes (torchrun), effective batch 1 x 1 x 8 x 2 = 16" in err
    assert main(["submit", "--matrix", str(two), "--backend", "k8s", "-o", "yaml"]) == 2  # -o needs --dry-run
    assert "--dry-run" in capsys.readouterr().err
    assert not cluster.requests


def test_an_api_outage_mid_matrix_reports_what_was_created_and_a_relaunch_completes_it(cluster, tmp_path, write_yaml, capsys):
    twelve = write_yaml(MATRIX.split("variants:")[0] + "variants:\n" + "".join(f"  - {{name: r{i:02d}, train.lr: 1.0e-4}}\n" for i in range(1, 13)))
    args = ["--matrix", str(twelve), "--runs-dir", str(tmp_path / "runs"), "--backend", "k8s"]
    cluster.jobs_until_outage = 6  # run 7 of 12 meets a 503, and so do the rest
    assert main(["submit", *args]) == 1
    out = capsys.readouterr().out
    created = {n for (_, n) in cluster.jobs}
    assert created == {job_name("k8s_demo", f"r{i:02d}") for i in range(1, 7)}
    assert out.count("submitted") == 6 and out.count("failed") == 6
    assert "run 'r07': cannot create Job trainyard/" in out and "unable to handle the request" in out
    assert "Traceback" not in out
    for i in range(1, 13):
        rd = RunDir.for_run(tmp_path / "runs", "k8s_demo", f"r{i:02d}")
        assert (rd.state == "queued") == (i <= 6)
    cluster.jobs_until_outage = None  # the API is back
    assert main(["submit", *args]) == 0
    assert len(cluster.jobs) == 12
    assert len(cluster.calls("POST", "/jobs$")) == 6 + 6 + 6  # created, refused, created on relaunch: none twice


def test_submit_status_logs_cancel_report(launch, cluster, capsys, tmp_path):
    assert launch("--backend", "k8s") == 0
    ids = {r: job_name("k8s_demo", r) for r in "ab"}
    assert {n for (_, n) in cluster.jobs} == set(ids.values())
    rd = {r: RunDir.for_run(launch.runs, "k8s_demo", r) for r in "ab"}
    assert rd["a"].status()["job"] == {"backend": "k8s", "id": ids["a"], "url": None, "extra": {"namespace": NS, "pvc": "trainyard-runs", "run_dir": "/output/k8s_demo/a"}}
    assert rd["a"].state == "queued" and rd["a"].spec_file.is_file()

    # submitting again while they are queued/running creates nothing new
    cluster.set_job_status(NS, ids["a"], active=1, ready=1)
    assert launch("--backend", "k8s") == 0
    assert len(cluster.calls("POST", "/jobs$")) == 2

    # a finishes (the run wrote its files on the volume), b is still running
    cluster.set_job_status(NS, ids["a"], succeeded=1, conditions=[{"type": "Complete", "status": "True"}])
    write_remote_run(cluster.volume, "a", {"state": "completed", "step": 2, "max_steps": 2, "pid": 7}, {"train/loss": 1.5, "eval/heldout/loss": 1.75, "eval/heldout/perplexity": 5.75})
    cluster.set_job_status(NS, ids["b"], active=1, ready=1)
    write_remote_run(cluster.volume, "b", {"state": "running", "step": 1, "max_steps": 4, "loss": 2.25})
    capsys.readouterr()
    assert launch("status", "--json") == 0
    rows = {r["run"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["a"]["state"] == "completed" and rows["a"]["metrics"]["eval/heldout/loss"] == 1.75
    assert rows["b"]["state"] == "running" and rows["b"]["step"] == 1
    assert rd["a"].history()[-1]["train/loss"] == 1.5
    assert rd["a"].status()["job"]["id"] == ids["a"] and rd["a"].status()["synced"] == "final"
    fetches = len(cluster.calls("POST", "/pods$"))
    assert launch("status", "--json") == 0  # a is synced: only b is fetched again
    assert len(cluster.calls("POST", "/pods$")) == fetches + 1
    assert "a/status.json" not in json.dumps(cluster.calls("POST", "/pods$")[-1][3])

    # logs come from the Job's pod
    cluster.add_pod(NS, ids["b"], ids["b"] + "-x1", log="step 1 loss 2.25\n")
    capsys.readouterr()
    assert launch("logs", "b") == 0
    assert capsys.readouterr().out == "step 1 loss 2.25\n"

    # the report reads the fetched results like local ones
    assert launch("report", "--out", str(tmp_path / "report")) == 0
    assert "1.75" in (tmp_path / "report" / "report.md").read_text()

    # cancel deletes b's Job and marks it canceled; a is finished and left alone
    assert launch("cancel") == 0
    assert [c[1].rsplit("/", 1)[-1] for c in cluster.calls("DELETE", "/jobs/")] == [ids["b"]]
    assert rd["b"].state == "canceled" and rd["a"].state == "completed"


def test_the_run_says_how_it_ended(launch, cluster, capsys):
    """Diverged beats the Job's plain 'failed'; a pod killed without a word keeps the Job's reason."""
    assert launch("--backend", "k8s") == 0
    ids = {r: job_name("k8s_demo", r) for r in "ab"}
    fail = {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": "exit code 3 matching FailJob rule"}
    cluster.set_job_status(NS, ids["a"], failed=1, conditions=[fail])
    write_remote_run(cluster.volume, "a", {"state": "diverged", "reason": "loss is nan at step 12"}, {"train/loss": "nan"})
    oom = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}
    cluster.set_job_status(NS, ids["b"], failed=3, conditions=[oom])
    write_remote_run(cluster.volume, "b", {"state": "running", "step": 40})  # OOM-killed mid-run
    capsys.readouterr()
    assert launch("status", "--json") == 0
    rows = {r["run"]: r for r in json.loads(capsys.readouterr().out)}
    assert (rows["a"]["state"], rows["a"]["reason"]) == ("diverged", "loss is nan at step 12")
    assert rows["b"]["state"] == "failed" and "BackoffLimitExceeded" in rows["b"]["reason"]


def test_a_local_rerun_forgets_the_remote_job(launch, cluster):
    from trainyard.backends.local import prepare
    from trainyard.backends.remote import job_of
    from trainyard.matrix import load_matrix

    assert launch("--backend", "k8s") == 0
    rd = RunDir.for_run(launch.runs, "k8s_demo", "a")
    assert job_of(rd) is not None
    prepare([s for s in load_matrix(launch.matrix).runs if s.name == "a"], launch.runs)
    assert job_of(rd) is None and rd.state == "queued"


# -- the cluster side: k8s/ renders and validates offline


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("target", ["k8s", "k8s/overlays/example"])
def test_kustomize_renders_valid_manifests(target, tmp_path):
    kv = pytest.importorskip("kubernetes_validate")
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / target)], capture_output=True, text=True, check=True).stdout
    docs = list(yaml.safe_load_all(out))
    for d in docs:
        for version in ("1.30", kv.utils.latest_version()):
            kv.validate(d, version, strict=True)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("Namespace", "trainyard"), ("ServiceAccount", "trainyard-launcher"), ("ServiceAccount", "trainyard-runner"), ("Role", "trainyard-launcher"), ("RoleBinding", "trainyard-launcher"), ("PersistentVolumeClaim", "trainyard-runs"), ("PersistentVolumeClaim", "trainyard-hf-cache"), ("ConfigMap", "trainyard-env")} <= kinds
    assert not [d for d in docs if d["kind"] == "Secret"]  # the token is never shipped
    pvcs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert pvcs["trainyard-runs"]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert ("storageClassName" in pvcs["trainyard-runs"]["spec"]) == (target != "k8s")
    assert all(d["metadata"].get("namespace") == NS for d in docs if d["kind"] not in ("Namespace", "PriorityClass"))
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    assert cm["data"]["HF_HOME"].startswith("/cache/") and cm["data"]["TRACKIO_DIR"].startswith("/output/")
    # the launcher's Role covers every call the backend makes
    (role,) = [d for d in docs if d["kind"] == "Role"]
    allowed = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    needed = {("batch", "jobs", v) for v in ("create", "get", "delete")} | {("", "pods", v) for v in ("list", "get", "create", "delete")} | {("", "pods/log", "get")}
    needed |= {("", "services", v) for v in ("create", "get", "delete")}  # multi-node Jobs' headless Service
    assert needed <= allowed
    # Pod Security: the namespace enforces "restricted", and every pod k8s/ deploys meets it
    (namespace,) = [d for d in docs if d["kind"] == "Namespace"]
    assert {namespace["metadata"]["labels"][f"pod-security.kubernetes.io/{m}"] for m in ("enforce", "audit", "warn")} == {"restricted"}
    templates = [(d["metadata"]["name"], ps) for d in docs for ps in pod_specs(d)]
    assert templates and all(restricted_violations(ps) == [] for _, ps in templates)
    for _, ps in templates:  # pinned images
        for c in ps["containers"]:
            assert re.search(r":[\w.-]+$", c["image"]) and not c["image"].endswith(":latest"), c["image"]
    # the Trackio server: Deployment + Service + its own RWO volume, probed; Jobs find it through the ConfigMap
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    deploy, svc, pvc = by_kind[("Deployment", "trackio")], by_kind[("Service", "trackio")], by_kind[("PersistentVolumeClaim", "trackio-data")]
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"] and deploy["spec"]["strategy"]["type"] == "Recreate"
    pod = deploy["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "trackio-data"
    (server,) = pod["containers"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/version"
    env = {e["name"]: e for e in server["env"]}
    assert env["TRACKIO_WRITE_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "trackio-write-token"
    assert svc["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]
    url = cm["data"]["TRACKIO_SERVER_URL"]
    assert url == f"http://{svc['metadata']['name']}.{NS}.svc:{svc['spec']['ports'][0]['port']}"
    assert env["GRADIO_SERVER_PORT"]["value"] == str(svc["spec"]["ports"][0]["port"])


def test_secret_template_holds_no_token():
    doc = yaml.safe_load((ROOT / "k8s" / "hf-token.secret.example.yaml").read_text())
    assert doc["kind"] == "Secret" and doc["stringData"] == {"HF_TOKEN": ""}
    assert "hf-token.secret.example.yaml" not in (ROOT / "k8s" / "base" / "kustomization.yaml").read_text().split("resources:")[1]


# -- a real cluster (skipped here)


@pytest.mark.live
@pytest.mark.skipif(os.environ.get("TRAINYARD_LIVE_K8S") != "1", reason="set TRAINYARD_LIVE_K8S=1 (and a kubeconfig) to run against a real cluster")
def test_live_cluster_smoke_run(write_yaml, tmp_path):
    """Submits the smoke variant of a one-run matrix (CPU) and waits for its results.

    Needs `kubectl apply -k k8s/` done and TRAINYARD_LIVE_IMAGE pullable by the cluster.
    """
    import time

    image = os.environ.get("TRAINYARD_LIVE_IMAGE", "ghcr.io/trainyard/trainyard:0.1.0")
    text = MATRIX.replace("gpus: 1", "gpus: 0").replace('cpu: "8"', 'cpu: "2"').replace("64Gi", "4Gi")
    m = write_yaml(text.replace("  resources:", f"  image: {image}\n  resources:"))
    args = ["--matrix", str(m), "--runs-dir", str(tmp_path / "runs"), "--only", "a", "--smoke"]
    assert main(["submit", "--backend", "k8s", *args]) == 0
    rd = RunDir.for_run(tmp_path / "runs", "k8s_demo-smoke", "a")
    deadline = time.time() + 900
    while rd.state in ("queued", "running") and time.time() < deadline:
        time.sleep(10)
        main(["status", *args])
    assert rd.state == "completed", rd.status()
    assert "train/loss" in rd.metrics()


def test_the_trackio_server_of_k8s_serves_runs_logged_with_the_configmap_settings(tmp_path):
    """Runs the Deployment's own command and env (port and data dir moved to tmp), logs a run
    the way a Job does (TRACKIO_SERVER_URL + TRACKIO_WRITE_TOKEN), and reads the server's DB."""
    import signal
    import socket
    import sqlite3
    import sys

    docs = list(yaml.safe_load_all((ROOT / "k8s" / "base" / "trackio.yaml").read_text()))
    (c,) = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "test-token-" + os.urandom(8).hex()
    env = {e["name"]: e.get("value") for e in c["env"]}
    env.update(GRADIO_SERVER_PORT=str(port), TRACKIO_DIR=str(tmp_path / "server"), TRACKIO_WRITE_TOKEN=token)
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    server = subprocess.Popen([*c["command"], *c["args"]], env={**os.environ, **env, "PATH": path}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        import urllib.request

        deadline = time.time() + 120
        while True:  # what the readiness probe asks
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{c['readinessProbe']['httpGet']['path']}", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "the Trackio server did not come up"
                time.sleep(0.5)
        client = "import trackio\ntrackio.init(project='k8s_demo', name='a', embed=False, auto_log_gpu=False)\nfor i in range(3):\n    trackio.log({'train/loss': 2.0 - i / 10}, step=i)\ntrackio.finish()\n"
        job_env = {**os.environ, "TRACKIO_SERVER_URL": f"http://127.0.0.1:{port}", "TRACKIO_WRITE_TOKEN": token, "TRACKIO_DIR": str(tmp_path / "job")}
        subprocess.run([sys.executable, "-c", client], env=job_env, check=True, capture_output=True, timeout=120)
        with sqlite3.connect(tmp_path / "server" / "k8s_demo.db") as db:
            assert db.execute("select count(*) from metrics").fetchone()[0] == 3
    finally:
        server.send_signal(signal.SIGTERM)  # bash (PID 1 in the pod) forwards it to trackio
        log = server.communicate(timeout=60)[0]
    assert token not in log and "write_token=<redacted>" in log
