"""A remote run's files: mirrored to the artifacts repo while it runs, synced back for report."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fake_hub import FakeRepoStore
from trainyard import hub_storage
from trainyard.hub_storage import (
    CHECKPOINT_SPEC,
    ArtifactUploader,
    download_checkpoint,
    remote_artifacts,
    sync_run,
    upload_run_artifacts,
)
from trainyard.run_dir import RunDir
from trainyard.spec import RunSpec

REPO = "alice/trainyard-runs"
ROOT = Path(__file__).resolve().parents[1]


def wait_for(cond, what: str, limit: float = 20.0) -> None:
    """Poll for a condition (a background thread's effect); fail with a message, never on speed."""
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.02)


@pytest.fixture
def store(tmp_path) -> FakeRepoStore:
    s = FakeRepoStore(tmp_path / "hub")
    s.create_repo(REPO, repo_type="dataset", private=True, exist_ok=True)
    return s


def fake_run(path) -> RunDir:
    rd = RunDir(path)
    rd.create()
    rd.spec_file.write_text('{"name": "a"}')
    return rd


def test_upload_selects_small_files_and_final_only_when_asked(tmp_path, store):
    rd = fake_run(tmp_path / "a")
    rd.set_status("completed")
    rd.write_metrics({"train/loss": 1.0})
    rd.log_file.write_text("log\n")
    (rd.checkpoints / "checkpoint-4").mkdir()
    (rd.checkpoints / "checkpoint-4" / "optimizer.pt").write_bytes(b"x" * 100)
    rd.final.mkdir()
    (rd.final / "adapter_model.safetensors").write_bytes(b"w")
    assert sorted(upload_run_artifacts(rd, REPO, "m/a", api=store)) == ["m/a/logs/run.log", "m/a/metrics.json", "m/a/spec.json", "m/a/status.json"]
    upload_run_artifacts(rd, REPO, "m/a", include_final=True, api=store)
    assert "m/a/final/adapter_model.safetensors" in store.files(REPO)
    assert not any("checkpoint" in f for f in store.files(REPO))  # checkpoints never travel


def test_uploader_follows_state_changes_and_uploads_final_at_exit(tmp_path, store):
    rd = fake_run(tmp_path / "a")
    status = lambda: json.loads((store.repos[REPO] / "m/a/status.json").read_text())  # noqa: E731
    with ArtifactUploader(rd, REPO, "m/a", every_s=3600, api=store, poll_s=0.01) as up:
        rd.set_status("running", step=0)
        wait_for(lambda: (store.repos[REPO] / "m/a/status.json").is_file(), "status.json uploaded at start")
        assert status()["state"] == "running"
        n = up.uploads
        rd.update_progress(step=5)  # progress alone waits for every_s (an hour here)
        time.sleep(0.1)
        assert up.uploads == n
        rd.final.mkdir()
        (rd.final / "adapter_config.json").write_text("{}")
        rd.write_metrics({"train/loss": 0.5})
        rd.set_status("completed")
    assert status()["state"] == "completed" and status()["step"] == 5
    assert "m/a/final/adapter_config.json" in store.files(REPO) and "m/a/metrics.json" in store.files(REPO)


def test_final_is_not_duplicated_when_pushed_to_its_model_repo(tmp_path, store):
    rd = fake_run(tmp_path / "a")
    rd.final.mkdir()
    (rd.final / "adapter_config.json").write_text("{}")
    with ArtifactUploader(rd, REPO, "m/a", every_s=3600, api=store, poll_s=0.01):
        rd.set_status("completed", pushed_to="https://huggingface.co/alice/m-a")
    assert not any("/final/" in f for f in store.files(REPO)) and "m/a/status.json" in store.files(REPO)


def test_uploader_refuses_to_start_without_a_writable_repo(tmp_path):
    class NoAccess(FakeRepoStore):
        def create_repo(self, *a, **k):
            raise PermissionError("403 Forbidden")

    with pytest.raises(SystemExit, match="cannot create/use the artifacts repo.*403"):
        ArtifactUploader(fake_run(tmp_path / "a"), REPO, "m/a", every_s=60, api=NoAccess(tmp_path)).__enter__()


def test_sync_merges_status_and_ignores_an_earlier_attempt(tmp_path, store):
    remote = fake_run(tmp_path / "remote")
    remote.set_status("failed", reason="boom")
    upload_run_artifacts(remote, REPO, "m/a", api=store)
    local = RunDir(tmp_path / "local" / "m" / "a")
    local.path.mkdir(parents=True)
    local.set_status("queued", job={"backend": "hf-jobs", "id": "j2"}, submitted_at=time.time() + 60)
    # the repo still holds the previous attempt's "failed": the new job has not reported yet
    assert sync_run(local, REPO, "m/a", since=local.status()["submitted_at"], api=store) == []
    assert local.state == "queued"
    assert sorted(sync_run(local, REPO, "m/a", api=store)) == ["spec.json", "status.json"]
    st = local.status()
    assert st["state"] == "failed" and st["reason"] == "boom" and st["job"] == {"backend": "hf-jobs", "id": "j2"}
    assert sync_run(local, "alice/missing", "m/a", api=store) == []  # repo not there yet: nothing, no error


# The job's process: the entrypoint with its Hub storage swapped for the test's store.
JOB_MAIN = """
import sys
from fake_hub import FakeRepoStore
from trainyard import hub_storage, run
store = FakeRepoStore(__import__("pathlib").Path(sys.argv[1]))
hub_storage._hub_api = lambda: store
sys.exit(run.main(sys.argv[2:]))
"""

# A job that is killed (timeout, out of memory, preempted) at step KILL_AT: no exit code, no
# last upload; whatever the uploader's background thread sent before is all that is left.
KILLED_JOB_MAIN = """
import os, sys, time
from pathlib import Path
from fake_hub import FakeRepoStore
from trainyard import context, hub_storage, run
store = FakeRepoStore(Path(sys.argv[1]))
hub_storage._hub_api = lambda: store
kill_at, on_log = int(os.environ["KILL_AT"]), context.ProgressCallback.on_log
def killing_on_log(self, args, state, control, logs=None, **kw):
    on_log(self, args, state, control, logs, **kw)
    if state.global_step >= kill_at:
        deadline = time.monotonic() + 60  # let the background upload of the last save land
        while not list(store.root.glob(f"*/*/*/checkpoints/checkpoint-{kill_at - 1}/trainer_state.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        os._exit(137)
context.ProgressCallback.on_log = killing_on_log
sys.exit(run.main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def first_job(tmp_path_factory, tiny_model):
    """A smoke run (4 steps, saves at 2 and 4) as an HF job runs it: the entrypoint in its
    own process with the artifacts repo set. Its job disk is then "lost": tests use the repo."""
    from trainyard.matrix import load_matrix
    from trainyard.smoke import smoke_spec

    tmp = tmp_path_factory.mktemp("first-job")
    spec = smoke_spec(load_matrix(ROOT / "jobs/rust_sft.yaml").runs[0], tiny_model)
    proc = run_job(repo_store(tmp / "hub"), spec, tmp / "job1" / spec.name, tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "hub", spec, proc


def run_job(store: FakeRepoStore, spec, run_dir: Path, tmp: Path, main: str = JOB_MAIN, **extra_env: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        **extra_env,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
        hub_storage.ARTIFACTS_REPO_ENV: REPO,
        "TRAINYARD_SPEC": spec.to_json(),
        "TRACKIO_DIR": str(tmp / "trackio"),
    }
    return subprocess.run([sys.executable, "-c", main, str(store.root), "--run-dir", str(run_dir)], env=env, capture_output=True, text=True, timeout=600)


def repo_store(root: Path, copy_of: Path | None = None) -> FakeRepoStore:
    """A store over `root` (a copy of another store's files, so tests do not share a repo)."""
    if copy_of is not None:
        shutil.copytree(copy_of, root)
    store = FakeRepoStore(root)
    store.create_repo(REPO, repo_type="dataset", private=True, exist_ok=True)
    return store


@pytest.mark.slow  # trains a whole run
def test_entrypoint_round_trip_through_the_artifacts_repo(tmp_path, first_job):
    """trainyard.run in its own process, as a job runs it: files reach the repo; sync + report read them back."""
    from trainyard.matrix import load_matrix
    from trainyard.report import main_report

    hub, spec, proc = first_job
    store = repo_store(tmp_path / "hub", copy_of=hub)
    matrix = load_matrix(ROOT / "jobs/rust_sft.yaml")
    assert "run files uploaded to https://huggingface.co/datasets/alice/trainyard-runs" in proc.stderr
    prefix = f"{spec.matrix}/{spec.name}"
    files = store.files(REPO)
    for name in ("spec.json", "status.json", "metrics.json", "history.json", "README.md", "logs/run.log", "final/adapter_config.json"):
        assert f"{prefix}/{name}" in files, name
    # saves at steps 2 and 4: the repo keeps only the last checkpoint
    assert {f.split("/")[3] for f in files if f.startswith(f"{prefix}/checkpoints/")} == {"checkpoint-4"}
    local = RunDir.for_run(tmp_path / "runs", spec.matrix, spec.name)
    local.path.mkdir(parents=True)
    synced = sync_run(local, REPO, prefix, api=store)
    assert "metrics.json" in synced and not any(s.startswith(("final/", "checkpoints/")) for s in synced)
    assert not local.checkpoints.exists()  # the launcher never downloads checkpoints
    assert local.state == "completed" and local.metrics()["train/loss"] > 0
    assert main_report(matrix, [spec], tmp_path / "runs", tmp_path / "report") == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    [row] = report["runs"]
    assert row["state"] == "completed" and row["progress"] == [4, 4]
    assert row["metrics"]["train/loss"] == local.metrics()["train/loss"]
    assert "train_loss" in report["charts"]  # history.json came back


# ----------------------------------------------------------------------------- checkpoints
# A job's disk dies with it: the latest checkpoint goes to the repo, and the next job of the
# same spec starts from it.


@pytest.fixture(scope="module")
def spec() -> RunSpec:
    from trainyard.matrix import load_matrix

    return load_matrix(ROOT / "jobs/rust_sft.yaml").runs[0]


def other_spec(spec: RunSpec, **hub) -> RunSpec:
    d = spec.model_dump(mode="json")
    if hub:
        d["hub"].update(hub)
    else:
        d["train"]["lr"] = d["train"]["lr"] * 2
    return RunSpec.model_validate(d)


def spec_run(path, spec: RunSpec) -> RunDir:
    rd = RunDir(path)
    rd.create()
    rd.spec_file.write_text(spec.to_json())
    return rd


def save_checkpoint(rd: RunDir, step: int) -> Path:
    """What the Trainer leaves: weights, optimizer, trainer_state.json (written last)."""
    ck = rd.checkpoints / f"checkpoint-{step}"
    ck.mkdir(parents=True)
    header = json.dumps({"w": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}).encode()
    (ck / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"w%d" % (step % 10))  # a valid file
    (ck / "optimizer.pt").write_bytes(b"o%d" % step)
    (ck / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return ck


def repo_checkpoints(store: FakeRepoStore, prefix: str = "m/a") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in store.files(REPO):
        if f.startswith(f"{prefix}/checkpoints/"):
            name, rel = f[len(prefix) + len("/checkpoints/") :].split("/", 1)
            out.setdefault(name, []).append(rel)
    return out


def test_only_the_latest_checkpoint_is_kept_replaced_in_one_commit(tmp_path, store, spec):
    rd = spec_run(tmp_path / "a", spec)
    with ArtifactUploader(rd, REPO, "m/a", every_s=3600, api=store, poll_s=0.01) as up:
        up.request_checkpoint(save_checkpoint(rd, 2))
        wait_for(lambda: up.checkpoint_uploads == ["checkpoint-2"], "checkpoint-2 uploaded by the background thread")
        assert repo_checkpoints(store) == {"checkpoint-2": ["adapter_model.safetensors", "optimizer.pt", "trainer_state.json", CHECKPOINT_SPEC]}
        up.request_checkpoint(save_checkpoint(rd, 4))
        wait_for(lambda: up.checkpoint_uploads == ["checkpoint-2", "checkpoint-4"], "checkpoint-4 uploaded")
    assert list(repo_checkpoints(store)) == ["checkpoint-4"]
    [commit] = [c for c in store.commits if any("checkpoint-4" in p for p in c.added)]
    assert commit.deleted == ["m/a/checkpoints/checkpoint-2/"]  # the same commit removed the old one
    assert sorted(commit.added) == [f"m/a/checkpoints/checkpoint-4/{n}" for n in ("adapter_model.safetensors", "optimizer.pt", "trainer_state.json", CHECKPOINT_SPEC)]
    assert json.loads((store.repos[REPO] / "m/a/checkpoints/checkpoint-4" / CHECKPOINT_SPEC).read_text()) == spec.model_dump(mode="json")
    assert not up.staging.exists()


def test_a_checkpoint_saved_before_exit_is_uploaded_even_after_rotation(tmp_path, store, spec):
    """A canceled job saves, then stops: its last checkpoint is uploaded on the way out,
    and the Trainer deleting the folder meanwhile (save_total_limit) does not lose it."""
    rd = spec_run(tmp_path / "a", spec)
    with ArtifactUploader(rd, REPO, "m/a", every_s=3600, api=store, poll_s=3600) as up:
        up.request_checkpoint(save_checkpoint(rd, 2))
        up.request_checkpoint(save_checkpoint(rd, 4))  # replaces 2 in the queue: 2 never uploads
        for n in (2, 4):
            shutil.rmtree(rd.checkpoints / f"checkpoint-{n}")
        rd.set_status("canceled")
    assert up.checkpoint_uploads == ["checkpoint-4"]
    assert (store.repos[REPO] / "m/a/checkpoints/checkpoint-4/optimizer.pt").read_bytes() == b"o4"
    assert "m/a/status.json" in store.files(REPO)


def test_incomplete_checkpoints_are_not_uploaded(tmp_path, store, spec):
    rd = spec_run(tmp_path / "a", spec)
    ck = save_checkpoint(rd, 2)
    (ck / "trainer_state.json").unlink()
    with ArtifactUploader(rd, REPO, "m/a", every_s=3600, api=store, poll_s=0.01) as up:
        up.request_checkpoint(ck)
    assert up.checkpoint_uploads == [] and repo_checkpoints(store) == {}


def test_a_fresh_job_of_the_same_spec_resumes_from_the_uploaded_checkpoint(tmp_path, store, spec):
    lost = spec_run(tmp_path / "job1", spec)
    with ArtifactUploader(lost, REPO, "m/a", every_s=3600, api=store, poll_s=3600) as up:
        up.request_checkpoint(save_checkpoint(lost, 2))
        up.upload_pending_checkpoint()
        up.request_checkpoint(save_checkpoint(lost, 4))
    fresh = spec_run(tmp_path / "job2", spec)
    assert fresh.last_checkpoint() is None
    restored = ArtifactUploader(fresh, REPO, "m/a", every_s=3600, api=store).restore_checkpoint(spec)
    assert restored == str(fresh.checkpoints / "checkpoint-4") == fresh.last_checkpoint()
    assert sorted(p.name for p in Path(restored).iterdir()) == ["adapter_model.safetensors", "optimizer.pt", "trainer_state.json"]
    assert (Path(restored) / "optimizer.pt").read_bytes() == b"o4"
    assert sorted(p.name for p in fresh.path.iterdir()) == ["checkpoints", "logs", "spec.json"]  # no download leftovers
    # a checkpoint already on the job's disk wins: nothing is downloaded over it
    assert download_checkpoint(spec, fresh, REPO, "m/a", api=store) is None
    # and nothing uploaded: nothing to restore, no error
    assert download_checkpoint(spec, spec_run(tmp_path / "job3", spec), REPO, "other/run", api=store) is None
    assert download_checkpoint(spec, spec_run(tmp_path / "job4", spec), "alice/missing", "m/a", api=store) is None


def test_a_changed_spec_does_not_resume_from_an_old_checkpoint(tmp_path, store, spec, caplog):
    old = spec_run(tmp_path / "job1", spec)
    upload = ArtifactUploader(old, REPO, "m/a", every_s=3600, api=store)
    upload.request_checkpoint(save_checkpoint(old, 4))
    upload.upload_pending_checkpoint()
    new_spec = other_spec(spec)
    fresh = spec_run(tmp_path / "job2", new_spec)
    with caplog.at_level("WARNING", logger="trainyard.artifacts"):
        assert download_checkpoint(new_spec, fresh, REPO, "m/a", api=store) is None
    assert fresh.last_checkpoint() is None and not any(fresh.checkpoints.iterdir())
    assert "written by a different spec" in caplog.text and new_spec.training_fingerprint() in caplog.text
    # the new spec's first checkpoint replaces the old spec's one
    up = ArtifactUploader(fresh, REPO, "m/a", every_s=3600, api=store)
    up.request_checkpoint(save_checkpoint(fresh, 2))
    up.upload_pending_checkpoint()
    assert list(repo_checkpoints(store)) == ["checkpoint-2"]


def test_upload_checkpoints_off_uploads_none(tmp_path, store, spec, monkeypatch):
    off = other_spec(spec, upload_checkpoints=False)
    rd = spec_run(tmp_path / "a", off)
    monkeypatch.setenv(hub_storage.ARTIFACTS_REPO_ENV, REPO)
    monkeypatch.setattr(hub_storage, "_hub_api", lambda: store)
    up = remote_artifacts(off, rd)
    assert up.checkpoints is False and remote_artifacts(spec, rd).checkpoints is True
    with up:
        up.request_checkpoint(save_checkpoint(rd, 2))
        rd.set_status("completed")
    assert repo_checkpoints(store) == {} and "m/a/status.json" not in store.files(REPO)  # prefix is matrix/run
    assert any(f.endswith("/status.json") for f in store.files(REPO)) and not any("/checkpoints/" in f for f in store.files(REPO))
    assert up.restore_checkpoint(off) is None


def test_the_callback_hands_saved_checkpoints_to_the_uploader(tmp_path, spec):
    from types import SimpleNamespace

    from trainyard.context import CheckpointUploadCallback, RunContext

    rd = spec_run(tmp_path / "a", spec)
    ctx = RunContext(spec=spec, rundir=rd, precision="fp32", device="cpu")
    assert not any(isinstance(cb, CheckpointUploadCallback) for cb in ctx.callbacks([]))  # local runs: none
    got: list[Path] = []
    ctx.on_checkpoint = got.append
    [cb] = [cb for cb in ctx.callbacks([]) if isinstance(cb, CheckpointUploadCallback)]
    ck = save_checkpoint(rd, 6)
    cb.on_save(SimpleNamespace(output_dir=str(rd.checkpoints)), SimpleNamespace(global_step=6, is_world_process_zero=True), None)
    cb.on_save(SimpleNamespace(output_dir=str(rd.checkpoints)), SimpleNamespace(global_step=6, is_world_process_zero=False), None)
    assert got == [ck]


@pytest.mark.slow  # trains a whole run
def test_a_killed_job_is_resumed_by_the_next_one_from_its_uploaded_checkpoint(tmp_path, tiny_model):
    """Job 1 saves at step 2 and is killed at step 3; job 2 (an empty disk) gets checkpoint-2
    from the repo and trains steps 3-4 only."""
    from trainyard.matrix import load_matrix
    from trainyard.smoke import smoke_spec

    spec = smoke_spec(load_matrix(ROOT / "jobs/rust_sft.yaml").runs[0], tiny_model)
    store = repo_store(tmp_path / "hub")
    prefix = f"{spec.matrix}/{spec.name}"
    job1 = RunDir(tmp_path / "job1" / spec.name)
    proc = run_job(store, spec, job1.path, tmp_path, main=KILLED_JOB_MAIN, KILL_AT="3")
    assert proc.returncode == 137, proc.stderr[-3000:]
    saved = sorted(p.relative_to(job1.checkpoints / "checkpoint-2").as_posix() for p in (job1.checkpoints / "checkpoint-2").rglob("*") if p.is_file())
    assert {"adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= set(saved)
    assert repo_checkpoints(store, prefix) == {"checkpoint-2": sorted([*saved, CHECKPOINT_SPEC])}  # all of it, nothing else
    assert json.loads((store.repos[REPO] / prefix / "status.json").read_text())["state"] == "running"  # it never reported an end

    job2 = RunDir(tmp_path / "job2" / spec.name)
    proc = run_job(store, spec, job2.path, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "restored checkpoint checkpoint-2 from datasets/alice/trainyard-runs/" in proc.stderr
    st = job2.status()
    assert st["state"] == "completed" and Path(st["resumed_from"]).name == "checkpoint-2"
    assert job2.metrics()["train/loss"] > 0 and (job2.final / "adapter_config.json").is_file()
    lost = [(e["step"], e["loss"]) for e in job1.history() if "loss" in e]
    resumed = [(e["step"], e["loss"]) for e in job2.history() if "loss" in e]
    assert [n for n, _ in resumed] == [1, 2, 3, 4] and resumed[:2] == lost[:2]  # steps 1-2 came with the checkpoint
    assert "step 1/4" not in job2.log_file.read_text() and "step 3/4" in job2.log_file.read_text()  # trained 3-4 only
    assert list(repo_checkpoints(store, prefix)) == ["checkpoint-4"]  # job 2's save replaced it
    remote_status = json.loads((store.repos[REPO] / prefix / "status.json").read_text())
    assert remote_status["state"] == "completed" and Path(remote_status["resumed_from"]).name == "checkpoint-2"


@pytest.mark.slow  # ~6 s more; the unit test above covers the rule, this one the job's log
def test_a_resubmitted_job_with_a_changed_spec_starts_over(first_job, tmp_path):
    hub, spec, _ = first_job
    store = repo_store(tmp_path / "hub", copy_of=hub)
    changed = other_spec(spec)
    job3 = RunDir(tmp_path / "job3" / spec.name)
    proc = run_job(store, changed, job3.path, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "written by a different spec" in proc.stderr
    st = job3.status()
    assert st["state"] == "completed" and st.get("resumed_from") is None
    # its own checkpoint-4 (steps 1-4 of the new spec) replaced the old spec's one
    stored = json.loads((store.repos[REPO] / spec.matrix / spec.name / "checkpoints/checkpoint-4" / CHECKPOINT_SPEC).read_text())
    assert RunSpec.model_validate(stored).fingerprint() == changed.fingerprint()


def test_training_fingerprint_ignores_where_a_run_executes():
    from trainyard.matrix import load_matrix

    spec = load_matrix("jobs/rust_sft.yaml").run("5k")
    longer = spec.model_copy(update={"resources": spec.resources.model_copy(update={"timeout": "24h"}), "image": "other:tag"})
    assert longer.training_fingerprint() == spec.training_fingerprint()
    assert longer.fingerprint() != spec.fingerprint()
    other_lr = spec.model_copy(update={"train": spec.train.model_copy(update={"lr": 1e-4})})
    assert other_lr.training_fingerprint() != spec.training_fingerprint()
