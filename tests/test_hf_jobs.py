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
    assert job_command(spec) == ["python", "-m", "trainyard.run", "--run-dir", "/output/r16_lr2e-4"]
    assert body["command"][:2] == ["bash", "-c"] and body["command"][2].startswith("python -m trainyard.run --run-dir /output/r16_lr2e-4;")
    assert body["arguments"] == []
    assert body["flavor"] == "a10g-small"
    assert body["timeoutSeconds"] == 7200  # ours, not the API's 30 min default
    assert body["labels"] == {"trainyard-matrix": "rust_sft", "trainyard-run": "r16_lr2e-4", "name": "trainyard-rust_sft-r16_lr2e-4"}
    assert body["secrets"] == {"HF_TOKEN": TOKEN}
    env = body["environment"]
    sent = RunSpec.from_json(env["TRAINYARD_SPEC"])  # the spec, with its Trackio Space resolved
    assert sent.model_copy(update={"tracking": spec.tracking}) == spec and sent.tracking.space_id == f"{USER}/trackio-rust_sft"
    assert env["TRAINYARD_RUN_DIR"] == "/output/r16_lr2e-4"
    assert env["TRAINYARD_ARTIFACTS_REPO"] == f"{USER}/trainyard-runs"  # {user} resolved to the job owner
    assert env["PYTHONUNBUFFERED"] == "1"
    assert TOKEN not in json.dumps(env) and "HF_TOKEN" not in env
    assert post.headers["authorization"] == f"Bearer {TOKEN}"

    assert ref.backend == "hf-jobs" and ref.id in hub.jobs
    assert ref.url == f"{hub.url}/jobs/{USER}/{ref.id}"
    assert ref.extra == {
        "namespace": USER, "artifacts_repo": f"{USER}/trainyard-runs", "flavor": "a10g-small", "attempts": 3,
        "tracking_url": f"https://huggingface.co/spaces/{USER}/trackio-rust_sft",
    }
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
    not (os.environ.get("HF_TOKEN") and "1" in (os.environ.get("TRAINYARD_LIVE_HF"), os.environ.get("TRAINYARD_LIVE_HF_JOBS"))),
    reason="live HF Jobs test: set HF_TOKEN and TRAINYARD_LIVE_HF=1 (costs a few cents of cpu-basic)",
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


# ----------------------------------------------------------------------------- first contact:
# no registry (the project wheel on a public image), attempts, Trackio, cost, budget, --parallel

import shlex  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import zipfile  # noqa: E402

from fake_hub import HARDWARE  # noqa: E402
from trainyard.backends import cost  # noqa: E402
from trainyard.backends.hf_jobs import hf_job_command  # noqa: E402
from trainyard.backends.wheel import BASE_IMAGE, source_hash, wheel_name  # noqa: E402

NO_IMAGE_MATRIX = MATRIX.replace("  image: ghcr.io/example/trainyard:1.0\n", "")


def no_image_spec(**resources) -> RunSpec:
    d = make_spec(**resources).model_dump(mode="json")
    d.pop("image")
    return RunSpec.model_validate(d)


@pytest.fixture
def store(tmp_path, monkeypatch) -> FakeRepoStore:
    s = FakeRepoStore(tmp_path / "hub")
    monkeypatch.setattr(hub_storage, "_hub_api", lambda: s)
    monkeypatch.setenv("TRAINYARD_CACHE", str(tmp_path / "cache"))  # a real wheel build, once per test
    return s


def test_no_image_runs_a_public_image_that_installs_the_wheel_uploaded_once(hub, store):
    backend = HfJobsBackend(api=HfApi(endpoint=hub.url, token=TOKEN), storage=store)
    spec = no_image_spec()
    backend.submit(spec)
    backend.submit(spec.model_copy(update={"name": "other"}))

    digest, filename = source_hash(), wheel_name()
    path = f"wheels/{digest}/{filename}"
    assert [c.added for c in store.commits] == [[path]]  # uploaded once, then found by its content address
    with zipfile.ZipFile(store.repos[f"{USER}/trainyard-runs"] / path) as whl:  # the real project, built by pip
        names = whl.namelist()
        assert "trainyard/run.py" in names and "trainyard/backends/wheel.py" in names and "trainyard/fixtures/strandset_rust.jsonl" in names
        meta = whl.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        assert "Provides-Extra: quant" in meta and "Provides-Extra: eval" in meta
    body = hub.posts(f"/api/jobs/{USER}")[0].body
    assert body["dockerImage"] == BASE_IMAGE
    assert body["command"][:2] == ["bash", "-c"] and body["arguments"] == []
    script = body["command"][2]
    install, run = script.split(" && python -m trainyard.run ", 1)
    assert f"hf download {USER}/trainyard-runs {path} --repo-type dataset --local-dir /tmp/trainyard-wheel" in install
    assert shlex.quote(f"/tmp/trainyard-wheel/{path}[quant,eval]") in install and "-c /tmp/torch-constraint.txt" in install
    assert "transformers==" in install and "trl==" in install and "peft==" in install  # the versions tested here
    assert run.startswith("--run-dir /output/r16_lr2e-4;")
    assert TOKEN not in json.dumps(body["environment"]) + script


def test_a_users_own_image_runs_as_is(hub, store):
    backend = HfJobsBackend(api=HfApi(endpoint=hub.url, token=TOKEN), storage=store)
    backend.submit(make_spec())
    body = hub.posts(f"/api/jobs/{USER}")[0].body
    assert body["dockerImage"] == "ghcr.io/example/trainyard:1.0"
    assert "pip install" not in body["command"][2] and store.commits == []


@pytest.mark.parametrize("exit_code,job_exit", [(0, 0), (1, 1), (2, 0), (3, 0), (130, 0), (137, 137)])
def test_only_retryable_exit_codes_fail_the_job(tmp_path, exit_code, job_exit):
    """HF Jobs retries every failed attempt: bad input (2), divergence (3) and a cancel (130) end the job cleanly."""
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\nexit {exit_code}\n")
    fake.chmod(0o755)
    cmd = hf_job_command(make_spec(), None)
    done = subprocess.run(cmd, env={"PATH": f"{fake.parent}:/usr/bin:/bin"}, capture_output=True, text=True)
    assert done.returncode == job_exit, done.stderr


@pytest.mark.parametrize("retries,attempts", [(2, 3), (0, 1), (4, 5)])
def test_attempts_come_from_resources_retries(hub, backend, retries, attempts):
    ref = backend.submit(make_spec(retries=retries))
    assert hub.posts(f"/api/jobs/{USER}")[0].body["attempts"] == attempts and ref.extra["attempts"] == attempts


def test_trackio_goes_to_a_private_space_named_after_the_matrix(hub, backend):
    ref = backend.submit(make_spec())
    job_spec = RunSpec.from_json(hub.posts()[0].body["environment"]["TRAINYARD_SPEC"])
    assert job_spec.tracking.space_id == f"{USER}/trackio-rust_sft" and job_spec.tracking.private is True
    assert job_spec.training_fingerprint() == make_spec().training_fingerprint()  # where it logs is no training change
    assert ref.extra["tracking_url"] == f"https://huggingface.co/spaces/{USER}/trackio-rust_sft"

    def submitted(tracking: dict) -> RunSpec:
        spec = make_spec().model_copy(update={"tracking": make_spec().tracking.model_copy(update=tracking)})
        backend.submit(spec)
        return RunSpec.from_json(hub.posts()[-1].body["environment"]["TRAINYARD_SPEC"])

    assert submitted({"space_id": "team/curves"}).tracking.space_id == "team/curves"  # the matrix's own wins
    assert submitted({"remote_space": "{user}/all-{matrix}"}).tracking.space_id == f"{USER}/all-rust_sft"
    assert submitted({"remote_space": None}).tracking.space_id is None
    assert submitted({"enabled": False}).tracking.space_id is None
    with pytest.raises(BackendError, match=r"tracking.remote_space': unknown placeholder\(s\) \['run'\]"):
        backend.submit(make_spec().model_copy(update={"tracking": make_spec().tracking.model_copy(update={"remote_space": "{user}/{run}"})}))


def test_cli_records_the_trackio_url_and_prints_it(write_yaml, tmp_path, hub, store, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    matrix, runs = write_yaml(MATRIX), tmp_path / "runs"
    assert cli.main(["--matrix", str(matrix), "--runs-dir", str(runs), "--backend", "hf-jobs"]) == 0
    url = f"https://huggingface.co/spaces/{USER}/trackio-hfj"
    assert f"curves: {url}" in capsys.readouterr().err
    status = RunDir(runs / "hfj" / "a").status()
    assert status["tracking_url"] == url and status["job"]["extra"]["tracking_url"] == url


def test_prices_come_from_list_jobs_hardware_online_and_a_dated_table_offline(hub):
    prices, source = cost.hourly_prices(HfApi(endpoint=hub.url, token=TOKEN))
    assert source == "list_jobs_hardware()"
    assert prices == {h["name"]: pytest.approx(h["unitCostUSD"] * 60) for h in HARDWARE}
    prices, source = cost.hourly_prices(HfApi(endpoint="http://127.0.0.1:9"))  # nothing listens: offline
    assert source == f"offline price table of {cost.PRICES_AS_OF}" and prices["a100-large"] == 2.50
    assert set(cost.PRICES_USD_PER_HOUR) <= set(FLAVORS)


def _text_run(tmp_path, runs_root, **train) -> RunSpec:
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": "x" * 400}) + "\n" for _ in range(10)))  # 100 tokens each at 4 chars/token
    spec = RunSpec.model_validate({
        "name": "t", "matrix": "costs", "recipe": "clm", "model": {"name": "acme/never-cached-1B"},
        "data": {"source": str(data), "format": "text"},
        "train": {"max_steps": 50, "batch_size": 2, "grad_accum": 2, **train},
        "resources": {"flavor": "a10g-small", "timeout": "2h"},
    })
    done = runs_root / "costs" / "earlier"  # a finished run of the matrix on the same flavor and model: 1000 tokens/s
    done.mkdir(parents=True)
    (done / "spec.json").write_text(spec.model_copy(update={"name": "earlier"}).to_json())
    (done / "metrics.json").write_text(json.dumps({"train/tokens_per_second": 1000.0}))
    return spec


def test_cost_arithmetic_against_a_fixed_price_table(tmp_path):
    runs = tmp_path / "runs"
    spec = _text_run(tmp_path, runs)
    e = cost.estimate(spec, {"a10g-small": 1.20}, runs)
    assert e.tokens == 50 * 4 * 100  # steps x examples per step x tokens per example
    assert e.tokens_per_second == 1000.0  # measured, not the table
    assert e.duration_s == cost.STARTUP_S + 20  # 20,000 tokens at 1000/s
    assert e.cost_usd == pytest.approx(1.20 * 380 / 3600)
    assert e.worst_usd == pytest.approx(1.20 * 2)  # price x timeout
    short = cost.estimate(spec.model_copy(update={"resources": spec.resources.model_copy(update={"timeout": "5m"})}), {"a10g-small": 1.20}, runs)
    assert short.hits_timeout and short.cost_usd == pytest.approx(1.20 * 300 / 3600) == short.worst_usd  # billed up to the timeout
    p = cost.plan([spec, spec.model_copy(update={"name": "u"})], {"a10g-small": 1.20}, "fixed", runs)
    assert p.total_usd == pytest.approx(2 * 1.20 * 380 / 3600) and p.total_worst_usd == pytest.approx(4.80) and p.total_duration_s == 760
    assert cost.estimate(spec, {}, runs).cost_usd is None  # an unknown price is never a guess


def test_table_throughput_follows_flops(tmp_path):
    spec = _text_run(tmp_path, tmp_path / "r")
    tps, how = cost.table_throughput(spec)  # full fine-tune, 1B params (from the name), a10g
    assert tps == pytest.approx(125e12 * cost.MFU_SMALL / (6 * 1e9)) and "a10g" in how
    lora = RunSpec.model_validate({**spec.model_dump(mode="json"), "lora": {"r": 8}})
    assert cost.table_throughput(lora)[0] == pytest.approx(tps * 6 / 4)  # no weight gradients for the frozen base


def test_budget_below_the_worst_case_is_refused_before_anything_is_created(write_yaml, tmp_path, hub, store, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    runs = tmp_path / "runs"
    per_run = write_yaml(NO_IMAGE_MATRIX.replace("timeout: 2h}", "timeout: 2h, budget_usd: 2}"))
    assert cli.main(["--matrix", str(per_run), "--runs-dir", str(runs), "--backend", "hf-jobs"]) == 2
    err = capsys.readouterr().err
    # a10g-small at $1.20/h (the stand-in's list_jobs_hardware) x 2h = $2.40 > $2.00
    assert "run 'a' | key 'resources.budget_usd': worst case $2.40" in err and "budget $2.00" in err and "nothing was submitted" in err
    assert hub.posts() == [] and store.commits == [] and not runs.exists()  # no job, no wheel upload, no run dir

    whole = write_yaml("budget_usd: 4\n" + NO_IMAGE_MATRIX)  # 2 runs x $2.40 = $4.80 > $4
    assert cli.main(["--matrix", str(whole), "--runs-dir", str(runs), "--backend", "hf-jobs"]) == 2
    assert "worst case of the 2 run(s) to submit is $4.80" in capsys.readouterr().err and hub.posts() == []
    assert cli.main(["--matrix", str(whole), "--runs-dir", str(runs), "--backend", "hf-jobs", "--only", "a"]) == 0  # $2.40 fits
    assert len(hub.posts(f"/api/jobs/{USER}")) == 1
    assert cli.main(["validate", "--matrix", str(write_yaml("budget_usd: -1\n" + MATRIX))]) == 2


def test_parallel_caps_the_jobs_running_at_once(write_yaml, tmp_path, hub, store, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("TRAINYARD_POLL_S", "0.01")
    matrix = write_yaml(MATRIX + "  - {name: c, train.lr: 3.0e-4}\n  - {name: d, train.lr: 4.0e-4}\n")
    result: dict = {}
    launcher = threading.Thread(target=lambda: result.setdefault("rc", cli.main(["--matrix", str(matrix), "--runs-dir", str(tmp_path / "runs"), "--backend", "hf-jobs", "--parallel", "2"])))
    launcher.start()
    posts = lambda: hub.posts(f"/api/jobs/{USER}")  # noqa: E731
    inspects = lambda: sum(r.method == "GET" and r.path.startswith(f"/api/jobs/{USER}/") for r in hub.requests)  # noqa: E731

    def wait_for(cond, what):
        for _ in range(20000):
            if cond():
                return
            threading.Event().wait(0.005)
        pytest.fail(f"never happened: {what}")

    wait_for(lambda: len(posts()) == 2, "two jobs submitted")
    seen = inspects()
    wait_for(lambda: inspects() >= seen + 10, "the launcher polls the running jobs")
    assert len(posts()) == 2  # both still queued: no third job
    jobs = list(hub.jobs.values())
    jobs[0].stage = "RUNNING"
    jobs[1].stage = "COMPLETED"
    wait_for(lambda: len(posts()) == 3, "a third job once one ended")
    seen = inspects()
    wait_for(lambda: inspects() >= seen + 10, "the launcher polls again")
    assert len(posts()) == 3  # a (running) and c (queued) hold both slots
    hub.jobs[jobs[0].id].stage = "ERROR"
    launcher.join(timeout=120)
    assert result["rc"] == 0 and len(posts()) == 4
    assert [p.body["labels"]["trainyard-run"] for p in posts()] == ["a", "b", "c", "d"]


def test_dry_run_of_rust_sft_shows_install_attempts_trackio_and_cost(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    code = cli.main(["--matrix", "jobs/rust_sft.yaml", "--backend", "hf-jobs", "--dry-run", "--runs-dir", str(tmp_path / "runs")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert TOKEN not in out + err
    payloads = _json_objects(out)
    assert [p["labels"]["trainyard-run"] for p in payloads] == ["5k", "20k-r32", "20k-2ep-restarts"]
    for p in payloads:
        assert p["image"] == BASE_IMAGE and "hf download" in p["command"][2] and "[quant,eval]" in p["command"][2]
        assert p["attempts"] >= 2 and p["timeout"] == 8 * 3600
        assert "trackio-rust_sft" in p["trainyard"]["tracking"] and "uploaded once" in p["trainyard"]["install"]
        assert json.loads(p["env"]["TRAINYARD_SPEC"])["tracking"]["space_id"] == "<your HF user>/trackio-rust_sft"
    table = out[out.index("estimated cost and time"):]
    assert "offline price table of" in table and "total" in table and "$60.00" in table  # 3 x a100-large $2.50/h x 8h
    for run in ("5k", "20k-r32", "20k-2ep-restarts"):
        assert run in table
