"""HF Jobs backend against a fake Hub jobs server on 127.0.0.1 (no network, no real Hub)."""

from __future__ import annotations

import json
import os

import huggingface_hub.constants as hf_constants
import pytest
from huggingface_hub import HfApi

from fake_hub import USER, FakeJobsServer, FakeRepoStore
from trainyard import cli, hub_storage
from trainyard.backends import BACKENDS, get_backend
from trainyard.backends.base import JobRef, job_command
from trainyard.backends.hf_jobs import FLAVORS, SECRET_PLACEHOLDER, HfJobsBackend
from trainyard.errors import BackendError
from trainyard.hub_storage import upload_run_artifacts
from trainyard.run_dir import RunDir
from trainyard.spec import RunSpec, duration_seconds

TOKEN = "hf_FAKEtokenDoNotLeak0123456789abcdef"

MATRIX = """
name: hfj
base:
  recipe: sft
  model: {name: Qwen/Qwen3-0.6B}
  data: {source: Fortytwo-Network/Strandset-Rust-v1, format: strandset_rust, limit: 100}
  lora: {r: 8, alpha: 16}
  resources: {flavor: a10g-small, timeout: 2h}
  image: ghcr.io/example/trainyard:1.0
variants:
  - {name: a, train.lr: 1.0e-4}
  - {name: b, train.lr: 2.0e-4}
"""


def make_spec(**resources) -> RunSpec:
    return RunSpec.model_validate(
        {
            "name": "r16_lr2e-4",
            "matrix": "rust_sft",
            "recipe": "sft",
            "model": {"name": "Qwen/Qwen3-0.6B"},
            "data": {"source": "Fortytwo-Network/Strandset-Rust-v1", "format": "strandset_rust"},
            "lora": {"r": 16},
            "resources": {"flavor": "a10g-small", "timeout": "2h", **resources},
            "image": "ghcr.io/example/trainyard:1.0",
        }
    )


@pytest.fixture
def hub(monkeypatch):
    """The fake jobs server, with huggingface_hub pointed at it and online."""
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    with FakeJobsServer() as server:
        monkeypatch.setattr(hf_constants, "ENDPOINT", server.url)
        yield server


@pytest.fixture
def backend(hub) -> HfJobsBackend:
    return HfJobsBackend(api=HfApi(endpoint=hub.url, token=TOKEN))


def test_registered():
    assert "hf-jobs" in BACKENDS and isinstance(get_backend("hf-jobs"), HfJobsBackend)
    assert "h100" not in FLAVORS and "a100-large" in FLAVORS and "h200" in FLAVORS


def test_timeout_seconds():
    assert [duration_seconds(t) for t in ("6h", "90m", "45s", "120", "1.5h", "2d")] == [21600, 5400, 45, 120, 5400, 172800]


def test_submit_sends_the_job_and_the_token_only_as_a_secret(hub, backend):
    spec = make_spec()
    ref = backend.submit(spec)

    [post] = hub.posts()
    assert post.path == f"/api/jobs/{USER}"
    body = post.body
    assert body["dockerImage"] == "ghcr.io/example/trainyard:1.0"
    assert body["command"] == job_command(spec) == ["python", "-m", "trainyard.run", "--run-dir", "/output/r16_lr2e-4"]
    assert body["arguments"] == []
    assert body["flavor"] == "a10g-small"
    assert body["timeoutSeconds"] == 7200  # ours, not the API's 30 min default
    assert body["labels"] == {"trainyard-matrix": "rust_sft", "trainyard-run": "r16_lr2e-4", "name": "trainyard-rust_sft-r16_lr2e-4"}
    assert body["secrets"] == {"HF_TOKEN": TOKEN}
    env = body["environment"]
    assert RunSpec.from_json(env["TRAINYARD_SPEC"]) == spec
    assert env["TRAINYARD_RUN_DIR"] == "/output/r16_lr2e-4"
    assert env["TRAINYARD_ARTIFACTS_REPO"] == f"{USER}/trainyard-runs"  # {user} resolved to the job owner
    assert env["PYTHONUNBUFFERED"] == "1"
    assert TOKEN not in json.dumps(env) and "HF_TOKEN" not in env
    assert post.headers["authorization"] == f"Bearer {TOKEN}"

    assert ref.backend == "hf-jobs" and ref.id in hub.jobs
    assert ref.url == f"{hub.url}/jobs/{USER}/{ref.id}"
    assert ref.extra == {"namespace": USER, "artifacts_repo": f"{USER}/trainyard-runs", "flavor": "a10g-small"}
    # whoami is rate-limited: asked once, then cached; later calls use the recorded namespace
    backend.submit(make_spec())
    backend.state(ref)
    assert sum(r.path == "/api/whoami-v2" for r in hub.requests) == 1


@pytest.mark.parametrize(
    "stage,state",
    [("SCHEDULING", "queued"), ("RUNNING", "running"), ("COMPLETED", "completed"), ("ERROR", "failed"), ("CANCELED", "canceled"), ("DELETED", "canceled")],
)
def test_state_maps_job_stages(hub, backend, stage, state):
    ref = backend.submit(make_spec())
    hub.jobs[ref.id].stage, hub.jobs[ref.id].message = stage, "exit code 1" if stage == "ERROR" else None
    got, detail = backend.state(ref)
    assert got == state
    if stage == "ERROR":
        assert detail == "exit code 1"  # a failed job is reported, not raised (unlike wait_for_job's caller may expect)


def test_logs_stream_and_follow(hub, backend):
    ref = backend.submit(make_spec())
    job = hub.jobs[ref.id]
    job.logs = ["step 1 loss 2.5", "step 2 loss 2.1"]
    job.stage = "RUNNING"
    assert list(backend.logs(ref)) == ["step 1 loss 2.5", "step 2 loss 2.1"]  # banner dropped
    job.stage = "COMPLETED"  # follow ends once the job is terminal
    assert list(backend.logs(ref, follow=True)) == ["step 1 loss 2.5", "step 2 loss 2.1"]
    assert any(r.path == f"/api/jobs/{USER}/{ref.id}/logs" for r in hub.requests)


def test_cancel_is_idempotent(hub, backend):
    ref = backend.submit(make_spec())
    hub.jobs[ref.id].stage = "RUNNING"
    backend.cancel(ref)
    assert hub.jobs[ref.id].stage == "CANCELED" and len(hub.posts("/cancel")) == 1
    backend.cancel(ref)  # already over: nothing sent
    assert len(hub.posts("/cancel")) == 1


@pytest.mark.parametrize(
    "flavor,expect",
    [("h100", "no H100 flavor"), ("a100-lrage", "did you mean 'a100-large'"), ("A100", "valid flavors: cpu-basic")],
)
def test_bad_flavor_fails_before_any_request(hub, backend, flavor, expect):
    with pytest.raises(BackendError) as err:
        backend.submit(make_spec(flavor=flavor))
    assert expect in str(err.value) and "resources.flavor" in str(err.value) and "h200" in str(err.value)
    assert hub.requests == []


def test_local_paths_and_smoke_are_refused(hub, backend, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("{}\n")
    spec = make_spec().model_copy(update={"data": make_spec().data.model_copy(update={"source": str(data)})})
    with pytest.raises(BackendError, match="path on this machine"):
        backend.submit(spec)
    with pytest.raises(BackendError, match="--backend local"):
        backend.submit(make_spec().model_copy(update={"smoke": True}))
    assert hub.requests == []


def test_render_masks_secrets_and_needs_no_network(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    payload = HfJobsBackend(api=HfApi(endpoint="http://127.0.0.1:9")).render(make_spec())  # nothing listens on :9
    assert payload["secrets"] == {"HF_TOKEN": SECRET_PLACEHOLDER}
    assert payload["env"]["TRAINYARD_ARTIFACTS_REPO"] == "<your HF user>/trainyard-runs"
    assert TOKEN not in json.dumps(payload)


def test_cli_dry_run_prints_payloads_without_the_token(write_yaml, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    matrix = write_yaml(MATRIX)
    code = cli.main(["--matrix", str(matrix), "--backend", "hf-jobs", "--dry-run", "--runs-dir", str(tmp_path / "runs")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert TOKEN not in out + err
    payloads = _json_objects(out)
    assert [p["labels"]["trainyard-run"] for p in payloads] == ["a", "b"]
    assert all(p["secrets"] == {"HF_TOKEN": SECRET_PLACEHOLDER} and p["timeout"] == 7200 for p in payloads)
    assert "nothing submitted" in out and not (tmp_path / "runs").exists()


def test_cli_bad_flavor_submits_nothing(write_yaml, tmp_path, hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    matrix = write_yaml(MATRIX + "  - {name: c, resources.flavor: h100}\n")
    code = cli.main(["--matrix", str(matrix), "--backend", "hf-jobs", "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "run 'c'" in err and "no H100 flavor" in err and "nothing was submitted" in err
    assert hub.requests == []  # runs a and b were valid, but nothing goes out while c is not


def test_cli_submit_status_sync_report_cancel(write_yaml, tmp_path, hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    store = FakeRepoStore(tmp_path / "hub")
    monkeypatch.setattr(hub_storage, "_hub_api", lambda: store)
    matrix, runs = write_yaml(MATRIX), tmp_path / "runs"
    base = ["--matrix", str(matrix), "--runs-dir", str(runs)]

    assert cli.main([*base, "--backend", "hf-jobs"]) == 0
    assert len(hub.posts(f"/api/jobs/{USER}")) == 2
    a, b = RunDir(runs / "hfj" / "a"), RunDir(runs / "hfj" / "b")
    job_a = a.status()["job"]
    assert a.state == "queued" and job_a["backend"] == "hf-jobs" and job_a["id"] in hub.jobs
    assert RunSpec.from_json(a.spec_file.read_text()).train.lr == 1e-4
    for p in runs.rglob("*"):  # the token is nowhere on disk
        assert not p.is_file() or TOKEN not in p.read_text()

    # re-submitting while the jobs are queued remotely starts nothing
    capsys.readouterr()
    assert cli.main([*base, "--backend", "hf-jobs"]) == 0
    assert len(hub.posts(f"/api/jobs/{USER}")) == 2 and capsys.readouterr().out.count("still queued") == 2

    # job a runs and its entrypoint uploads the run's files, as the job would
    hub.jobs[job_a["id"]].stage = "RUNNING"
    remote = RunDir(tmp_path / "job-disk" / "a")
    remote.path.mkdir(parents=True)
    remote.spec_file.write_text(a.spec_file.read_text())
    remote.set_status("running", step=3, max_steps=10)
    store.create_repo(f"{USER}/trainyard-runs", repo_type="dataset", private=True, exist_ok=True)
    upload_run_artifacts(remote, f"{USER}/trainyard-runs", "hfj/a", api=store)
    assert cli.main(["status", *base, "--json"]) == 0
    rows = {r["run"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["a"]["state"] == "running" and rows["a"]["step"] == 3 and rows["a"]["job"]["id"] == job_a["id"]
    assert rows["b"]["state"] == "queued"

    # a finishes; b's job dies (say, out of memory) without ever reporting
    remote.write_metrics({"train/loss": 1.25, "eval/heldout/loss": 1.5, "eval/heldout/perplexity": 4.4817})
    remote.write_history([{"step": 5, "loss": 1.3}, {"step": 10, "loss": 1.25}])
    remote.logs.mkdir()
    remote.log_file.write_text("training...\ndone\n")
    remote.set_status("completed")
    upload_run_artifacts(remote, f"{USER}/trainyard-runs", "hfj/a", api=store)
    hub.jobs[job_a["id"]].stage = "COMPLETED"
    hub.jobs[b.status()["job"]["id"]].stage, hub.jobs[b.status()["job"]["id"]].message = "ERROR", "OOMKilled"
    assert cli.main(["status", *base, "--json"]) == 0
    rows = {r["run"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["a"]["state"] == "completed" and rows["a"]["metrics"]["train/loss"] == 1.25
    assert a.log_file.read_text() == "training...\ndone\n" and a.status()["job"] == job_a  # job record kept
    assert rows["b"]["state"] == "failed" and "OOMKilled" in rows["b"]["reason"]

    # report works on the synced files, unchanged
    assert cli.main(["report", *base, "--out", str(tmp_path / "rep")]) == 0
    assert "1.25" in (tmp_path / "rep" / "report.md").read_text()

    # re-submit: a is done (skipped), b failed (a new job)
    capsys.readouterr()
    assert cli.main([*base, "--backend", "hf-jobs"]) == 0
    out = capsys.readouterr().out
    assert "already completed" in out and len(hub.posts(f"/api/jobs/{USER}")) == 3
    assert b.state == "queued" and "reason" not in b.status()  # the old attempt's status is gone

    # stale files of an earlier attempt never override the new job's state
    b_job = b.status()["job"]
    hub.jobs[b_job["id"]].stage = "RUNNING"
    assert cli.main(["status", *base, "--json"]) == 0
    assert {r["run"]: r["state"] for r in json.loads(capsys.readouterr().out)}["b"] == "running"

    # logs and cancel go to the recorded job
    hub.jobs[b_job["id"]].logs = ["hello from b"]
    assert cli.main(["logs", *base, "b"]) == 0
    assert capsys.readouterr().out == "hello from b\n"
    assert cli.main(["cancel", *base, "b"]) == 0
    assert hub.jobs[b_job["id"]].stage == "CANCELED" and b.state == "canceled"
    assert len(hub.posts("/cancel")) == 1  # a was completed: not touched


def _json_objects(text: str) -> list[dict]:
    """The JSON objects printed one after another in dry-run output."""
    dec, out, i = json.JSONDecoder(), [], 0
    while (i := text.find("{\n", i)) != -1:
        obj, end = dec.raw_decode(text, i)
        out.append(obj)
        i = end
    return out


@pytest.mark.skipif(
    not (os.environ.get("HF_TOKEN") and os.environ.get("TRAINYARD_LIVE_HF_JOBS") == "1"),
    reason="live HF Jobs test: set HF_TOKEN and TRAINYARD_LIVE_HF_JOBS=1 (costs a few cents of cpu-basic)",
)
def test_live_tiny_job(monkeypatch):
    """Submit a real cpu-basic job that only prints, follow it to the end, read its logs."""
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    api = HfApi()
    b = HfJobsBackend(api=api)
    info = api.run_job(image="python:3.12-slim", command=["python", "-c", "print('trainyard live ok')"], flavor="cpu-basic", timeout=300, labels={"trainyard-matrix": "live-test", "trainyard-run": "hello"})
    ref = JobRef(backend="hf-jobs", id=info.id, url=info.url, extra={"namespace": info.owner.name})
    final = api.wait_for_job(info.id, namespace=info.owner.name, timeout=600, poll_interval=5)
    assert str(final.status.stage) in ("COMPLETED", "JobStage.COMPLETED")
    assert b.state(ref)[0] == "completed"
    assert "trainyard live ok" in "\n".join(b.logs(ref))
