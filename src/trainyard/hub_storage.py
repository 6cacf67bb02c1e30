"""The Hub side of a run's outputs: push final/ to a model repo, mirror a remote run's files
and checkpoints into a dataset repo while it runs, and sync them back for `status` / `report`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from trainyard.checkpoints import CHECKPOINT_COMPLETE, checkpoint_step
from trainyard.run_dir import RunDir, write_json_atomic

if TYPE_CHECKING:
    from trainyard.spec import RunSpec


def push_to_hub(rundir: RunDir, repo_id: str, private: bool, smoke: bool) -> str:
    """Upload final/ + model card. In --smoke the push is redirected into the run dir."""
    if smoke:
        target = rundir.path / "hub" / repo_id.replace("/", "__")
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(rundir.final, target)
        shutil.copy(rundir.card_file, target / "README.md")
        _copy_card_images(rundir, target)
        return str(target)
    from huggingface_hub import HfApi

    api = HfApi()  # token from HF_TOKEN / the login cache, never from the spec
    api.create_repo(repo_id, private=private, exist_ok=True)
    shutil.copy(rundir.card_file, rundir.final / "README.md")
    _copy_card_images(rundir, rundir.final)
    api.upload_folder(repo_id=repo_id, folder_path=str(rundir.final), commit_message=f"trainyard run {rundir.path.name}")
    return f"https://huggingface.co/{repo_id}"


CARD_IMAGES = ("loss_curve.png",)  # model_card.LOSS_CURVE: the card links it relative to itself


def _copy_card_images(rundir: RunDir, target: Path) -> None:
    for name in CARD_IMAGES:
        if (rundir.path / name).is_file():
            shutil.copy(rundir.path / name, target / name)


def resolve_repo_id(template: str, matrix: str, run: str) -> str:
    user = "local"
    if "{user}" in template:
        try:
            from huggingface_hub import whoami

            user = whoami()["name"]
        except Exception:  # offline / no token: the push itself will say so
            user = os.environ.get("HF_USER", "local")
    return template.format(user=user, matrix=matrix, run=run)


# ----------------------------------------------------------------------------- remote runs
# A job on HF Jobs has no disk that outlives it: the run's small files are mirrored into a
# private Hub dataset repo (hub.artifacts_repo) under <matrix>/<run>/ while it runs, and
# `sync_run` copies them back into the local runs/<matrix>/<run>/ for status and report.
# The latest complete checkpoint is mirrored too (<matrix>/<run>/checkpoints/checkpoint-N/,
# only ever one), so a re-submitted job resumes where the lost one stopped; launchers never
# download checkpoints.

ARTIFACTS_REPO_ENV = "TRAINYARD_ARTIFACTS_REPO"  # set by remote backends; unset = local run
ARTIFACT_FILES = ("spec.json", "status.json", "metrics.json", "history.json", "README.md", "loss_curve.png")
ARTIFACT_DIRS = ("logs",)  # checkpoints/ travel separately (upload_checkpoint), never in a progress upload
CHECKPOINT_SPEC = "trainyard_spec.json"  # the spec that wrote an uploaded checkpoint, stored inside it
LOCAL_STATUS_KEYS = ("job", "backend", "submitted_at", "tracking_url")  # written by the submitting machine only


def artifacts_prefix(matrix: str, run: str) -> str:
    return f"{matrix}/{run}"


def _hub_api():
    """The one HfApi of this module (a seam: tests hand in an in-memory store)."""
    from huggingface_hub import HfApi

    return HfApi()  # token from HF_TOKEN (the job's secret) / the login cache


def _artifact_paths(rundir: RunDir) -> list[Path]:
    paths = [rundir.path / name for name in ARTIFACT_FILES if (rundir.path / name).is_file()]
    for d in ARTIFACT_DIRS:
        if (rundir.path / d).is_dir():
            paths += sorted(p for p in (rundir.path / d).rglob("*") if p.is_file())
    return paths


def _signature(paths: list[Path]) -> tuple:
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths if p.exists())


def upload_run_artifacts(rundir: RunDir, repo_id: str, prefix: str, *, include_final: bool = False, api=None) -> list[str]:
    """Upload the run's small files (and final/ when asked) to <repo_id>/<prefix>/ in one commit.

    Small files are read into memory first: status.json and friends are rewritten by
    rename while the run goes on, and each upload must carry whole versions of them.
    Returns the paths written in the repo.
    """
    from huggingface_hub import CommitOperationAdd

    api = api or _hub_api()
    ops = []
    for path in _artifact_paths(rundir):
        try:
            content = path.read_bytes()
        except FileNotFoundError:  # rotated away between listing and reading
            continue
        ops.append(CommitOperationAdd(path_in_repo=f"{prefix}/{path.relative_to(rundir.path).as_posix()}", path_or_fileobj=content))
    if include_final and rundir.final.is_dir():
        for path in sorted(p for p in rundir.final.rglob("*") if p.is_file()):
            ops.append(CommitOperationAdd(path_in_repo=f"{prefix}/{path.relative_to(rundir.path).as_posix()}", path_or_fileobj=str(path)))
    if not ops:
        return []
    state = rundir.state or "starting"
    api.create_commit(repo_id=repo_id, repo_type="dataset", operations=ops, commit_message=f"trainyard {prefix}: {state}")
    return [op.path_in_repo for op in ops]


def remote_checkpoints(repo_id: str, prefix: str, *, api=None) -> list[str]:
    """Names of the checkpoint-N folders under <prefix>/checkpoints/ in the repo, oldest first."""
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    api = api or _hub_api()
    try:
        entries = list(api.list_repo_tree(repo_id, path_in_repo=f"{prefix}/checkpoints", repo_type="dataset"))
    except (EntryNotFoundError, RepositoryNotFoundError):
        return []
    names = {e.path.rstrip("/").rsplit("/", 1)[-1] for e in entries}
    return sorted((n for n in names if checkpoint_step(n) is not None), key=checkpoint_step)


def upload_checkpoint(rundir: RunDir, checkpoint: Path, repo_id: str, prefix: str, *, name: str | None = None, api=None) -> list[str]:
    """Mirror one complete checkpoint folder to <prefix>/checkpoints/<name>/, in one commit
    that also deletes every other uploaded checkpoint of the run: the repo holds exactly one,
    the latest, and never a half-uploaded one next to an older one.

    The run's spec.json goes inside it (CHECKPOINT_SPEC): a later job resumes from it only
    if it runs the same spec. Returns the names of the checkpoints it deleted.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    api = api or _hub_api()
    name = name or checkpoint.name
    files = sorted(p for p in checkpoint.rglob("*") if p.is_file())
    if not any(p.name == CHECKPOINT_COMPLETE for p in files):
        raise ValueError(f"{checkpoint} has no {CHECKPOINT_COMPLETE}: not a complete checkpoint")
    base = f"{prefix}/checkpoints/{name}"
    ops: list = [CommitOperationAdd(path_in_repo=f"{base}/{p.relative_to(checkpoint).as_posix()}", path_or_fileobj=str(p)) for p in files]
    ops.append(CommitOperationAdd(path_in_repo=f"{base}/{CHECKPOINT_SPEC}", path_or_fileobj=rundir.spec_file.read_bytes()))
    stale = [n for n in remote_checkpoints(repo_id, prefix, api=api) if n != name]
    ops += [CommitOperationDelete(path_in_repo=f"{prefix}/checkpoints/{n}/", is_folder=True) for n in stale]
    message = f"trainyard {prefix}: {name}" + (f" (replaces {', '.join(stale)})" if stale else "")
    api.create_commit(repo_id=repo_id, repo_type="dataset", operations=ops, commit_message=message)
    return stale


def download_checkpoint(spec: RunSpec, rundir: RunDir, repo_id: str, prefix: str, *, api=None) -> str | None:
    """Fetch the run's uploaded checkpoint into rundir.checkpoints/ when it has none locally.

    Accepted only when the spec stored with it trains the same way (training_fingerprint:
    resources, image, tracking and hub may differ, e.g. a longer timeout after a timeout);
    a changed training spec must not continue from another spec's weights and optimizer. Returns the local path of
    the restored checkpoint, or None (nothing uploaded, a local one exists, other spec).
    """
    import logging
    import tempfile

    from trainyard.spec import RunSpec

    log = logging.getLogger("trainyard.artifacts")
    api = api or _hub_api()
    if rundir.last_checkpoint():
        return None  # a checkpoint on this disk (same job, or a persistent volume) wins
    names = remote_checkpoints(repo_id, prefix, api=api)
    if not names:
        return None
    name = names[-1]
    where = f"datasets/{repo_id}/{prefix}/checkpoints/{name}"
    rundir.checkpoints.mkdir(parents=True, exist_ok=True)
    # Download next to the destination (same filesystem), move into place once complete.
    with tempfile.TemporaryDirectory(prefix=".download-", dir=rundir.path) as tmp:
        base = f"{prefix}/checkpoints/{name}"
        api.snapshot_download(repo_id=repo_id, repo_type="dataset", allow_patterns=[f"{base}/{CHECKPOINT_SPEC}"], local_dir=tmp)
        got = Path(tmp) / base
        try:
            old = RunSpec.from_json((got / CHECKPOINT_SPEC).read_text())
            same = old.training_fingerprint() == spec.training_fingerprint()
        except Exception as err:  # missing, unreadable, or a schema this version rejects
            log.warning("ignoring the uploaded checkpoint %s: cannot read the spec stored with it (%s); training starts from the beginning", where, err)
            return None
        if not same:
            log.warning(
                "ignoring the uploaded checkpoint %s: it was written by a different spec (fingerprint %s, this run %s); training starts from the beginning",
                where, old.training_fingerprint(), spec.training_fingerprint(),
            )
            return None
        api.snapshot_download(repo_id=repo_id, repo_type="dataset", allow_patterns=[f"{base}/*"], local_dir=tmp)
        if not (got / CHECKPOINT_COMPLETE).is_file():
            log.warning("ignoring the uploaded checkpoint %s: it has no %s", where, CHECKPOINT_COMPLETE)
            return None
        (got / CHECKPOINT_SPEC).unlink()
        dest = rundir.checkpoints / name
        os.replace(got, dest)
    log.info("restored checkpoint %s from %s", name, where)
    return str(dest)


class ArtifactUploader:
    """Mirror a running run's small files into a Hub dataset repo.

    Uploads at once when status.json's state changes (so `running` shows up as soon as the
    run starts, and the final state as soon as it ends), and every `every_s` seconds while
    files change (progress, history, log). Checkpoints the trainer saved (`request_checkpoint`,
    from the on_save callback) are uploaded by the same background thread, the latest only.
    On exit: a pending checkpoint, then one last upload, with final/ unless the run already
    pushed it to its own model repo. Upload errors are logged, never fatal: a flaky network
    must not kill hours of training.
    """

    def __init__(self, rundir: RunDir, repo_id: str, prefix: str, every_s: float, api=None, poll_s: float = 2.0, checkpoints: bool = True):
        import logging
        import threading

        self.rundir, self.repo_id, self.prefix = rundir, repo_id, prefix
        self.every_s, self.poll_s = every_s, poll_s
        self.checkpoints = checkpoints  # hub.upload_checkpoints
        self.api = api or _hub_api()
        self.log = logging.getLogger("trainyard.artifacts")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="trainyard-artifacts", daemon=True)
        self._lock = threading.Lock()
        self._pending: Path | None = None  # staged copy of the newest checkpoint not uploaded yet
        self._retry_at = 0.0  # after a failed checkpoint upload: not before this (monotonic)
        self._last_state: str | None = None
        self._last_sig: tuple = ()
        self._last_time = 0.0
        self.uploads = 0
        self.checkpoint_uploads: list[str] = []

    @property
    def staging(self) -> Path:
        return self.rundir.path / ".checkpoint-upload"

    def restore_checkpoint(self, spec: RunSpec) -> str | None:
        """Before training: bring back the run's uploaded checkpoint (same spec only)."""
        if not self.checkpoints:
            return None
        try:
            return download_checkpoint(spec, self.rundir, self.repo_id, self.prefix, api=self.api)
        except Exception as err:  # the run can still train; say why it starts over
            self.log.error("could not fetch the uploaded checkpoint from %s/%s/checkpoints: %s; training starts from the beginning", self.repo_id, self.prefix, err)
            return None

    def request_checkpoint(self, checkpoint: str | Path) -> None:
        """A complete checkpoint was saved: queue it for upload (replacing an older queued one).

        The folder is snapshotted with hard links first, so the trainer's rotation
        (save_total_limit) can delete it while it uploads; where links are not possible
        the folder itself is uploaded.
        """
        if not self.checkpoints:
            return
        checkpoint = Path(checkpoint)
        if not (checkpoint / CHECKPOINT_COMPLETE).is_file():
            self.log.warning("not uploading %s: it has no %s", checkpoint, CHECKPOINT_COMPLETE)
            return
        staged = self._stage(checkpoint)
        with self._lock:
            old, self._pending = self._pending, staged
            self._retry_at = 0.0
        if old is not None and old != staged:
            self._unstage(old)

    def _stage(self, checkpoint: Path) -> Path:
        dest = self.staging / checkpoint.name
        shutil.rmtree(dest, ignore_errors=True)
        try:
            shutil.copytree(checkpoint, dest, copy_function=os.link)
            return dest
        except OSError as err:
            shutil.rmtree(dest, ignore_errors=True)
            self.log.info("cannot hard-link %s for its upload (%s); uploading it in place", checkpoint, err)
            return checkpoint

    def _unstage(self, path: Path) -> None:
        if path.parent == self.staging:
            shutil.rmtree(path, ignore_errors=True)

    def upload_pending_checkpoint(self) -> None:
        with self._lock:
            staged, self._pending = self._pending, None
        if staged is None:
            return
        try:
            deleted = upload_checkpoint(self.rundir, staged, self.repo_id, self.prefix, api=self.api)
            self.checkpoint_uploads.append(staged.name)
            self.log.info("uploaded %s to %s/%s/checkpoints/%s%s", staged.name, self.repo_id, self.prefix, staged.name, f" (deleted {', '.join(deleted)})" if deleted else "")
        except Exception:
            with self._lock:  # retry later unless a newer checkpoint came meanwhile
                if self._pending is None:
                    self._pending, staged = staged, None
            raise
        finally:
            if staged is not None:
                self._unstage(staged)

    def __enter__(self) -> ArtifactUploader:
        try:
            self.api.create_repo(repo_id=self.repo_id, repo_type="dataset", private=True, exist_ok=True)
        except Exception as err:  # fail before training: results with nowhere to go are lost money
            raise SystemExit(
                f"trainyard.run: cannot create/use the artifacts repo datasets/{self.repo_id} ({err}); "
                "the run's results would be lost. Check that the HF_TOKEN secret can write there "
                "(hub.artifacts_repo in the matrix)."
            ) from err
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        try:  # a canceled/timed-out job's last save is what the next job resumes from
            self.upload_pending_checkpoint()
        except Exception as err:
            self.log.error("could not upload the last checkpoint to %s/%s/checkpoints: %s", self.repo_id, self.prefix, err)
        shutil.rmtree(self.staging, ignore_errors=True)
        include_final = self.rundir.final.is_dir() and not self.rundir.status().get("pushed_to")
        try:
            self.upload(include_final=include_final)
            self.log.info("run files uploaded to https://huggingface.co/datasets/%s/tree/main/%s", self.repo_id, self.prefix)
        except Exception as err:  # the local files are intact; say where they did not go
            self.log.error("could not upload the run's files to %s/%s: %s", self.repo_id, self.prefix, err)

    def upload(self, include_final: bool = False) -> None:
        state, sig = self.rundir.state, _signature(_artifact_paths(self.rundir))
        if upload_run_artifacts(self.rundir, self.repo_id, self.prefix, include_final=include_final, api=self.api):
            self.uploads += 1
        self._last_state, self._last_sig, self._last_time = state, sig, time.monotonic()

    def _due(self) -> bool:
        state = self.rundir.state
        if state != self._last_state:
            return True
        stale = time.monotonic() - self._last_time >= self.every_s
        return stale and _signature(_artifact_paths(self.rundir)) != self._last_sig

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                if self._due():
                    self.upload()
            except Exception as err:
                self.log.warning("progress upload to %s failed (will retry): %s", self.repo_id, err)
                self._last_time = time.monotonic()
            if time.monotonic() < self._retry_at:
                continue
            try:
                self.upload_pending_checkpoint()
            except Exception as err:  # checkpoints are large: retry after every_s, or with the next save
                self.log.warning("checkpoint upload to %s failed (will retry): %s", self.repo_id, err)
                self._retry_at = time.monotonic() + self.every_s


def remote_artifacts(spec: RunSpec, rundir: RunDir):
    """The entrypoint's uploader: active only when a remote backend set $TRAINYARD_ARTIFACTS_REPO."""
    import contextlib

    repo_id = os.environ.get(ARTIFACTS_REPO_ENV)
    if not repo_id:
        return contextlib.nullcontext()
    return ArtifactUploader(
        rundir, repo_id, artifacts_prefix(spec.matrix, spec.name), every_s=spec.hub.artifacts_every * 60, checkpoints=spec.hub.upload_checkpoints
    )


def merge_run_files(rundir: RunDir, files: dict[str, bytes], *, since: float | None = None) -> list[str]:
    """Write a remote run's fetched files ({run-relative path: bytes}) into the local run dir.

    The same rules as sync_run: an earlier attempt's files (status older than `since`) are
    ignored; status.json is merged, keeping the keys only the submitting machine knows.
    """
    remote_status = json.loads(files["status.json"]) if "status.json" in files else {}
    updated = remote_status.get("updated_at")
    if since is not None and (not isinstance(updated, (int, float)) or updated < since):
        return []
    for rel, data in sorted(files.items()):
        dest = rundir.path / rel
        if rel == "status.json":
            local = rundir.status()
            write_json_atomic(dest, {**local, **remote_status, **{k: local[k] for k in LOCAL_STATUS_KEYS if k in local}})
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp_dest = dest.with_name(f".{dest.name}.sync.tmp")
            tmp_dest.write_bytes(data)
            os.replace(tmp_dest, dest)
    return sorted(files)


def sync_run(rundir: RunDir, repo_id: str, prefix: str, *, since: float | None = None, include_final: bool = False, api=None) -> list[str]:
    """Copy <repo_id>/<prefix>/ (a remote run's files) into the local run directory.

    Files left by an earlier attempt of the run (status updated before `since`, the local
    submit time) are ignored. status.json is merged: the run's own fields win, the keys only
    the submitting machine knows (the job record) are kept. final/ only with include_final.
    Returns the run-relative paths updated; [] when the run has uploaded nothing yet.
    """
    import tempfile

    from huggingface_hub.errors import RepositoryNotFoundError

    api = api or _hub_api()
    with tempfile.TemporaryDirectory(prefix="trainyard-sync-") as tmp:
        try:
            api.snapshot_download(
                repo_id=repo_id,
                repo_type="dataset",
                allow_patterns=[f"{prefix}/*"],
                # checkpoints are for the next job, never for the launcher
                ignore_patterns=[f"{prefix}/checkpoints/*", *([] if include_final else [f"{prefix}/final/*"])],
                local_dir=tmp,
            )
        except RepositoryNotFoundError:
            return []
        src = Path(tmp) / prefix
        if not src.is_dir():
            return []
        # final/ can be large, but reading it once beats two copies of the merge rules
        files = {p.relative_to(src).as_posix(): p.read_bytes() for p in sorted(src.rglob("*")) if p.is_file()}
        return merge_run_files(rundir, files, since=since)
