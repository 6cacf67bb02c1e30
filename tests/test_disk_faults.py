"""Disk faults are errors, not crashes: a read-only or full runs dir (a real tmpfs) gives a
message naming the path and the fix, a non-zero exit, no traceback, no temp files, and the
other runs' files byte-identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from run_helpers import ENV, ROOT, files_bytes, launch, launcher, smoke_matrix, temp_files, wait_for
from trainyard.matrix import load_matrix
from trainyard.run_dir import RunDir

MATRIX = load_matrix(ROOT / "jobs/rust_sft.yaml")


@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs of its own (root only): remountable read-only and fillable to the brim."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def read_only(mnt: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)


def fill(mnt: Path) -> Path:
    """Write a filler file until the device is full; returns it (delete it to free the space)."""
    filler = mnt / "filler.bin"
    with open(filler, "wb", buffering=0) as fh:
        block = b"\0" * (1 << 16)
        try:
            while True:
                fh.write(block)
        except OSError:
            pass
        try:  # the last few bytes below a block
            while True:
                fh.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def other_runs(root: Path) -> dict[str, bytes]:
    """A finished run of this matrix (skipped by the launch) and one of another matrix."""
    done = RunDir.for_run(root, MATRIX.name, "5k")
    done.create()
    done.write_spec(MATRIX.run("5k").to_json())
    done.write_metrics({"train/loss": 1.25, "eval/heldout/loss": 1.5})
    done.write_card("# 5k\n")
    done.set_status("completed", step=10, max_steps=10)
    other = RunDir.for_run(root, "another", "x")
    other.create()
    other.write_history([{"step": 1, "loss": 2.0}])
    other.set_status("completed")
    return files_bytes(root)


def no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]


def test_read_only_runs_dir_is_a_clear_error(tmpfs):
    before = other_runs(tmpfs)
    read_only(tmpfs)
    proc = launch("--matrix", "jobs/rust_sft.yaml", "--runs-dir", str(tmpfs))
    no_traceback(proc)
    assert proc.returncode == 1
    target = tmpfs / MATRIX.name / "20k-r32"
    assert f"{target} is on a read-only file system" in proc.stderr and "--runs-dir" in proc.stderr and "remount it read-write" in proc.stderr
    assert files_bytes(tmpfs) == before and temp_files(tmpfs) == []
    # reading still works: status shows the finished run, the others not started
    status = launch("status", "--matrix", "jobs/rust_sft.yaml", "--runs-dir", str(tmpfs), "--json")
    no_traceback(status)
    assert [r["state"] for r in json.loads(status.stdout)] == ["completed", "not started", "not started"]
    # the entrypoint itself, pointed at a read-only run dir
    spec = tmpfs / MATRIX.name / "5k" / "spec.json"
    run = subprocess.run([sys.executable, "-m", "trainyard.run", "--spec", str(spec), "--run-dir", str(target)], cwd=ROOT, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=120)
    no_traceback(run)
    assert run.returncode == 1 and f"{target} is on a read-only file system" in run.stderr and "--run-dir" in run.stderr
    assert files_bytes(tmpfs) == before


def test_full_runs_dir_at_launch_is_a_clear_error(tmpfs):
    before = other_runs(tmpfs)
    filler = fill(tmpfs)
    before[filler.name] = filler.read_bytes()
    proc = launch("--matrix", "jobs/rust_sft.yaml", "--runs-dir", str(tmpfs))
    no_traceback(proc)
    assert proc.returncode == 1
    assert f"no space left on the device holding {tmpfs / MATRIX.name / '20k-r32'}" in proc.stderr and "free some space" in proc.stderr
    assert temp_files(tmpfs) == []
    assert {k: v for k, v in files_bytes(tmpfs).items() if k in before} == before
    assert not any("20k-r32/checkpoints/" in k for k in files_bytes(tmpfs))


@pytest.mark.slow
def test_disk_full_while_training_fails_the_run_without_a_traceback(tmpfs, tmp_path, tiny_model):
    before = other_runs(tmpfs)
    m = smoke_matrix(tmp_path / "m.yaml", tiny_model, {"a": {"max_steps": 40, "save_steps": 2, "logging_steps": 1}}, name="diskm")
    rd = RunDir(tmpfs / "diskm" / "a")
    proc = launcher("--matrix", str(m), "--runs-dir", str(tmpfs), env={"TRACKIO_DIR": str(tmp_path / "trackio")})
    wait_for(lambda: (rd.status().get("step") or 0) >= 1 or proc.poll() is not None, 600, "the first step")
    filler = fill(tmpfs)
    out, err = proc.communicate(timeout=600)
    assert "Traceback" not in out + err, err[-3000:]
    assert proc.returncode == 1
    assert f"a: status.json not written: no space left on the device holding {rd.status_file}: free some space" in err, err[-3000:]
    assert temp_files(tmpfs) == []
    assert {k: v for k, v in files_bytes(tmpfs).items() if k in before} == before
    # with space again, `status` tells the truth about the run
    filler.unlink()
    status = launch("status", "--matrix", str(m), "--runs-dir", str(tmpfs), "--json")
    no_traceback(status)
    row = json.loads(status.stdout)[0]
    assert row["state"] == "failed" and ("no space left" in (row["reason"] or "") or "is gone" in (row["reason"] or "")), row
