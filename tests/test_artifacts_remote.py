"""A remote run's files: mirrored to the artifacts repo while it runs, synced back for report."""

from __future__ import annotations

import json
import logging
import signal
import time

import pytest

from fake_hub import FakeRepoStore
from trainyard import artifacts
from trainyard.artifacts import ArtifactUploader, RunDir, sync_run, upload_run_artifacts

REPO = "alice/trainyard-runs"


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
    remote.set_status("failed", error="boom")
    upload_run_artifacts(remote, REPO, "m/a", api=store)
    local = RunDir(tmp_path / "local" / "m" / "a")
    local.path.mkdir(parents=True)
    local.set_status("queued", job={"backend": "hf-jobs", "id": "j2"}, submitted_at=time.time() + 60)
    # the repo still holds the previous attempt's "failed": the new job has not reported yet
    assert sync_run(local, REPO, "m/a", since=local.status()["submitted_at"], api=store) == []
    assert local.state == "queued"
    assert sorted(sync_run(local, REPO, "m/a", api=store)) == ["spec.json", "status.json"]
    st = local.status()
    assert st["state"] == "failed" and st["error"] == "boom" and st["job"] == {"backend": "hf-jobs", "id": "j2"}
    assert sync_run(local, "alice/missing", "m/a", api=store) == []  # repo not there yet: nothing, no error


def test_entrypoint_round_trip_through_the_artifacts_repo(tmp_path, store, tiny_model, monkeypatch):
    """trainyard.run as a job would run it: files reach the repo; sync + report read them back."""
    from trainyard.matrix import load_matrix
    from trainyard.report import main_report
    from trainyard.run import main as run_main
    from trainyard.smoke import smoke_spec

    matrix = load_matrix("jobs/rust_sft.yaml")
    spec = smoke_spec(matrix.runs[0], tiny_model)
    monkeypatch.setattr(artifacts, "_hub_api", lambda: store)
    monkeypatch.setenv(artifacts.ARTIFACTS_REPO_ENV, REPO)
    monkeypatch.setenv("TRAINYARD_SPEC", spec.to_json())
    old = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        assert run_main(["--run-dir", str(tmp_path / "output" / spec.name)]) == 0
    finally:
        signal.signal(signal.SIGTERM, old[0])
        signal.signal(signal.SIGINT, old[1])
        for h in list(logging.getLogger().handlers):
            logging.getLogger().removeHandler(h)
    prefix = f"{spec.matrix}/{spec.name}"
    files = store.files(REPO)
    for name in ("spec.json", "status.json", "metrics.json", "history.json", "README.md", "logs/run.log", "final/adapter_config.json"):
        assert f"{prefix}/{name}" in files, name
    assert not any("/checkpoints/" in f for f in files)
    local = RunDir.for_run(tmp_path / "runs", spec.matrix, spec.name)
    local.path.mkdir(parents=True)
    synced = sync_run(local, REPO, prefix, api=store)
    assert "metrics.json" in synced and not any(s.startswith("final/") for s in synced)
    assert local.state == "completed" and local.metrics()["train/loss"] > 0
    assert main_report(matrix, [spec], tmp_path / "runs", tmp_path / "report") == 0
    [row] = json.loads((tmp_path / "report" / "report.json").read_text())["runs"]
    assert row["state"] == "completed" and row["progress"] == [4, 4]
    assert row["metrics"]["train/loss"] == local.metrics()["train/loss"]
    assert "train_loss" in json.loads((tmp_path / "report" / "report.json").read_text())["charts"]  # history.json came back
