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
from k8s_fake import FakeK8s, api_client  # noqa: E402
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
        kv.validate(d, "1.32", strict=True)
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
    assert needed <= allowed


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

    image = os.environ.get("TRAINYARD_LIVE_IMAGE", "ghcr.io/trainyard/trainyard:latest")
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
