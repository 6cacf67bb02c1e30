"""One trainer per run directory; stale queued/running states; the status.json model.

Real processes and real signals throughout: lock holders are separate processes that get
SIGKILLed, trainers are `python -m trainyard.run`, launchers are `launch.py`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys

import pytest

from run_helpers import ENV, ROOT, gone, launch, launcher, smoke_matrix, wait_for
from trainyard.contract import ExitCode, RunState, Status
from trainyard.matrix import load_matrix
from trainyard.run_dir import RunDir
from trainyard.run_lock import QUEUE_LOCK, holder

SPEC = load_matrix(ROOT / "jobs/rust_sft.yaml").run("5k")


def _python(code: str, *args: str) -> subprocess.Popen:
    """A helper process that prints one line once it is ready, then sleeps until killed."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, env={**os.environ, **ENV}, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


HOLD_TRAINER_LOCK = """
import os, sys, time
from trainyard.run_dir import RunDir
from trainyard.run_lock import RunLock
rd = RunDir(sys.argv[1])
lock = RunLock(rd.path).acquire(role="trainer")
rd.set_status("running", pid=os.getpid(), host=os.uname().nodename, step=3, max_steps=10)
print("ready", flush=True)
time.sleep(600)
"""

QUEUE_AND_HANG = """
import sys, time
from pathlib import Path
from trainyard.backends.local import prepare
from trainyard.matrix import load_matrix
prepare([load_matrix("jobs/rust_sft.yaml").run("5k")], Path(sys.argv[1]))
print("ready", flush=True)
time.sleep(600)
"""


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


# ----------------------------------------------------------------------------- status model
def test_status_model_round_trips_and_reads_legacy_error(tmp_path):
    rd = RunDir(tmp_path / "run")
    assert rd.read_status() is None and rd.status() == {} and rd.state is None
    rd.set_status(RunState.RUNNING, pid=123, host="h", step=2, max_steps=10, loss=float("nan"))
    st = rd.set_status("failed", reason="boom", custom_key="kept")
    assert isinstance(st, Status) and st.state is RunState.FAILED
    again = rd.read_status()
    assert again == st  # what was written is what is read
    raw = json.loads(rd.status_file.read_text())
    assert raw["state"] == "failed" and raw["reason"] == "boom" and raw["custom_key"] == "kept" and raw["loss"] == "nan"
    assert "error" not in raw and raw["finished_at"] >= raw["started_at"]
    # a run dir written before the contract: `error` reads as the reason, and is never written back
    rd.status_file.write_text(json.dumps({"state": "failed", "error": "old crash", "step": 7}))
    assert rd.read_status().reason == "old crash" and rd.status()["reason"] == "old crash"
    rd.update_progress(note="seen")
    raw = json.loads(rd.status_file.read_text())
    assert raw["reason"] == "old crash" and "error" not in raw and raw["step"] == 7
    # the pre-contract keyword still lands in `reason`; clearing it clears the one field
    rd.set_status("failed", error="legacy keyword")
    assert json.loads(rd.status_file.read_text())["reason"] == "legacy keyword"
    rd.set_status("queued", reason=None)
    assert "reason" not in json.loads(rd.status_file.read_text())
    with pytest.raises(ValueError):
        rd.set_status("finished")  # not a state
    # a hand-mangled file never breaks a reader
    rd.status_file.write_text('{"state": "exploded", "step": "x"')
    assert rd.status() == {}
    rd.status_file.write_text('{"state": "exploded", "step": 1}')
    assert rd.read_status().state is RunState.QUEUED


def test_exit_codes_are_derived_from_the_contract():
    from trainyard.backends.kubernetes import NO_RETRY_EXIT_CODES

    assert NO_RETRY_EXIT_CODES == [2, 3, 130] == [int(c) for c in (ExitCode.BAD_INPUT, ExitCode.DIVERGED, ExitCode.CANCELED)]
    assert ExitCode.LOCKED not in NO_RETRY_EXIT_CODES  # the other trainer lets go; a retry resumes


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    rd = RunDir(tmp_path / "run")
    rd.write_metrics({"train/loss": 1.0})
    before = rd.metrics_file.read_bytes()
    (rd.path / "history.json").mkdir()  # os.replace cannot put a file over a folder
    with pytest.raises(OSError) as err:
        rd.write_history([{"step": 1}])
    assert err.value.filename == str(rd.history_file)
    assert rd.metrics_file.read_bytes() == before and list(rd.path.glob(".*.tmp")) == []


# ----------------------------------------------------------------------------- one trainer
def test_a_second_trainer_on_a_locked_run_exits_at_once_and_touches_nothing(tmp_path):
    rd = RunDir(tmp_path / "run")
    first = _python(HOLD_TRAINER_LOCK, str(rd.path))
    try:
        rd.spec_file.write_text(SPEC.to_json())
        before = {p.name: p.read_bytes() for p in rd.path.iterdir() if p.is_file()}
        proc = subprocess.run([sys.executable, "-m", "trainyard.run", "--spec", str(rd.spec_file), "--run-dir", str(rd.path)], cwd=ROOT, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=120)
        assert proc.returncode == ExitCode.LOCKED, proc.stderr
        assert f"is already being trained by trainer pid {first.pid}" in proc.stderr and "Traceback" not in proc.stderr
        assert {p.name: p.read_bytes() for p in rd.path.iterdir() if p.is_file()} == before  # status.json untouched
        assert not rd.logs.exists()
        assert holder(rd.path).pid == first.pid
    finally:
        _kill(first)
    assert holder(rd.path) is None  # the OS let go of the SIGKILLed holder's lock


def test_parent_death_signal_reaches_a_child_in_its_own_session(tmp_path):
    marker = tmp_path / "child-got"
    child = (
        "import os, signal, sys, time\n"
        "from trainyard.run_lock import die_with_parent\n"
        "signal.signal(signal.SIGTERM, lambda *a: (open(sys.argv[1], 'w').write('SIGTERM'), os._exit(0)))\n"
        "die_with_parent(int(os.environ['TRAINYARD_PARENT_PID']))\n"
        "print('ready', flush=True); time.sleep(600)\n"
    )
    parent = (
        "import os, subprocess, sys, time\n"
        "c = subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]], start_new_session=True, stdout=subprocess.PIPE, text=True,\n"
        "                     env={**os.environ, 'TRAINYARD_PARENT_PID': str(os.getpid())})\n"
        "assert c.stdout.readline().strip() == 'ready'\n"
        "print(c.pid, flush=True); time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", parent, child, str(marker)], cwd=ROOT, env={**os.environ, **ENV}, stdout=subprocess.PIPE, text=True)
    child_pid = int(proc.stdout.readline())
    assert os.getsid(child_pid) != os.getsid(proc.pid)  # not in the launcher's session: Ctrl-C does not reach it
    _kill(proc)
    wait_for(lambda: gone(child_pid), 60, "the child to stop")
    assert marker.read_text() == "SIGTERM"  # a signal the trainer handles: it checkpoints, then stops


# ----------------------------------------------------------------------------- stale states
def _status_rows(tmp_path, capsys) -> dict:
    from trainyard.cli import main

    assert main(["status", "--matrix", "jobs/rust_sft.yaml", "--runs-dir", str(tmp_path), "--only", "5k", "--json"]) == 0
    return {r["run"]: r for r in json.loads(capsys.readouterr().out)}["5k"]


def test_running_without_a_live_trainer_is_repaired_and_a_live_one_left_alone(tmp_path, capsys):
    rd = RunDir.for_run(tmp_path, SPEC.matrix, SPEC.name)
    trainer = _python(HOLD_TRAINER_LOCK, str(rd.path))
    try:
        assert _status_rows(tmp_path, capsys)["state"] == "running"
    finally:
        _kill(trainer)
    row = _status_rows(tmp_path, capsys)
    assert row["state"] == "failed" and f"its trainer (pid {trainer.pid}) is gone" in row["reason"] and "re-run the matrix" in row["reason"]
    assert rd.read_status().state is RunState.FAILED  # written back, not only shown


def test_queued_runs_of_a_launcher_that_died_are_repaired(tmp_path, capsys):
    rd = RunDir.for_run(tmp_path, SPEC.matrix, SPEC.name)
    queuer = _python(QUEUE_AND_HANG, str(tmp_path))
    try:
        st = rd.read_status()
        assert st.state is RunState.QUEUED and st.launcher_pid == queuer.pid
        assert _status_rows(tmp_path, capsys)["state"] == "queued"  # its launcher is alive: left alone
        assert holder(rd.path, QUEUE_LOCK) is not None
    finally:
        _kill(queuer)
    row = _status_rows(tmp_path, capsys)
    assert row["state"] == "canceled" and f"launcher pid {queuer.pid} exited before starting it" in row["reason"]
    assert rd.read_status().state is RunState.CANCELED


def test_cancel_stops_the_lock_holder(tmp_path, capsys):
    from trainyard.cli import main

    rd = RunDir.for_run(tmp_path, SPEC.matrix, SPEC.name)
    trainer = _python(HOLD_TRAINER_LOCK, str(rd.path))
    assert main(["cancel", "--matrix", "jobs/rust_sft.yaml", "--runs-dir", str(tmp_path), "5k"]) == 0
    assert trainer.wait(timeout=60) == -signal.SIGTERM
    assert "cancel requested for 1 run(s)" in capsys.readouterr().out


def test_set_aside_is_refused_while_a_trainer_writes_the_run(tmp_path, capsys):
    from trainyard.cli import refuse_stale

    rd = RunDir.for_run(tmp_path, SPEC.matrix, SPEC.name)
    trainer = _python(HOLD_TRAINER_LOCK, str(rd.path))
    try:
        rd.spec_file.write_text(SPEC.to_json())
        ck = rd.checkpoints / "checkpoint-2"
        ck.mkdir(parents=True)  # a complete checkpoint: weights (an empty safetensors) + the state written last
        (ck / "adapter_model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
        (ck / "trainer_state.json").write_text('{"global_step": 2}')
        changed = SPEC.model_copy(update={"train": SPEC.train.model_copy(update={"lr": 1e-3})})
        assert refuse_stale([changed], tmp_path, restart=True) is True
        assert f"is being trained by trainer pid {trainer.pid}" in capsys.readouterr().err
        assert rd.path.is_dir()  # not moved
    finally:
        _kill(trainer)


# ----------------------------------------------------------------------------- whole runs
def _run_starts(rd: RunDir) -> list[int]:
    """Line numbers in run.log where a trainer process started."""
    return [i for i, line in enumerate(rd.log_file.read_text().splitlines()) if re.search(r"INFO trainyard\.run: run \S+: recipe=", line)]


def _segments_never_overlap(rd: RunDir) -> list[list[int]]:
    """The logged steps of each trainer segment: strictly increasing (two trainers at once interleave)."""
    lines = rd.log_file.read_text().splitlines()
    starts = _run_starts(rd) + [len(lines)]
    segments = []
    for a, b in zip(starts, starts[1:], strict=False):
        # one line per optimizer step (eval and end-of-run logs repeat the step; they carry no grad_norm)
        steps = [int(m.group(1)) for line in lines[a:b] if (m := re.search(r"trainyard\.run: step (\d+)/.*'grad_norm'", line))]
        assert steps == sorted(set(steps)), steps
        segments.append(steps)
    return segments


@pytest.mark.slow
def test_two_launchers_at_once_train_the_run_once(tmp_path, tiny_model):
    m = smoke_matrix(tmp_path / "m.yaml", tiny_model, {"a": {"max_steps": 3, "save_steps": 3, "logging_steps": 1}})
    runs, env = tmp_path / "runs", {"TRACKIO_DIR": str(tmp_path / "trackio")}
    first = launcher("--matrix", str(m), "--runs-dir", str(runs), env=env)
    second = launcher("--matrix", str(m), "--runs-dir", str(runs), env=env)  # well within 0.2 s
    outs = [p.communicate(timeout=900) for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outs
    rd = RunDir(runs / "lockm" / "a")
    assert rd.state == "completed"
    assert len(_run_starts(rd)) == 1 and _segments_never_overlap(rd) == [[1, 2, 3]]  # trained once
    said = [err for _, err in outs if "waited for it" in err]
    assert len(said) == 1 and "completed by trainer pid" in said[0], outs
    db = sqlite3.connect(tmp_path / "trackio" / "lockm.db")
    assert db.execute("select count(*) from configs where run_name='a'").fetchone()[0] == 1  # one Trackio run
    assert db.execute("select count(*) from metrics where run_name='a' and step=1").fetchone()[0] == 1


@pytest.mark.slow
def test_a_killed_launcher_takes_its_trainer_along_and_a_relaunch_resumes(tmp_path, tiny_model):
    m = smoke_matrix(tmp_path / "m.yaml", tiny_model, {"a": {"max_steps": 40, "save_steps": 2, "logging_steps": 1}, "b": {"max_steps": 2}})
    runs, env = tmp_path / "runs", {"TRACKIO_DIR": str(tmp_path / "trackio")}
    a, b = RunDir(runs / "lockm" / "a"), RunDir(runs / "lockm" / "b")

    def status() -> dict:
        proc = launch("status", "--matrix", str(m), "--runs-dir", str(runs), "--json", env=env)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        return {r["run"]: r for r in json.loads(proc.stdout)}

    # 1. SIGKILL the launcher: its trainer gets SIGTERM (parent-death), checkpoints and stops
    first = launcher("--matrix", str(m), "--runs-dir", str(runs), env=env)
    wait_for(lambda: (a.status().get("step") or 0) >= 3 or first.poll() is not None, 600, "step 3")
    trainer = a.read_status().pid
    _kill(first)
    wait_for(lambda: gone(trainer), 300, "the orphaned trainer to stop")
    assert a.state == "canceled" and a.last_checkpoint() is not None
    assert b.state == "queued"  # its launcher is gone ...
    rows = status()  # ... and `status` says so, in status.json too
    assert rows["b"]["state"] == "canceled" and "exited before starting it" in rows["b"]["reason"] and b.state == "canceled"
    assert rows["a"]["state"] == "canceled"

    # 2. SIGKILL launcher and trainer together: `running` is left behind, `status` repairs it
    second = launcher("--matrix", str(m), "--runs-dir", str(runs), env=env)
    resumed_at = int(a.last_checkpoint().rsplit("-", 1)[1])
    # kill between saves (checkpoints every 2 steps): a kill mid-save is another test's subject
    first_trainer = trainer

    def resumed_to_an_odd_step() -> bool:  # the new trainer's own progress, not the old status
        st = a.status()
        return st.get("state") == "running" and st.get("pid") != first_trainer and (st.get("step") or 0) > resumed_at and st["step"] % 2 == 1

    wait_for(lambda: resumed_to_an_odd_step() or second.poll() is not None, 600, "an odd step after resuming")
    trainer = a.read_status().pid
    second.send_signal(signal.SIGKILL)
    os.kill(trainer, signal.SIGKILL)
    second.wait()
    wait_for(lambda: gone(trainer), 60, "the trainer to die")
    assert a.state == "running"
    rows = status()
    assert rows["a"]["state"] == "failed" and f"its trainer (pid {trainer}) is gone" in rows["a"]["reason"]

    # 3. a relaunch resumes from the last checkpoint and finishes both runs
    third = launch("--matrix", str(m), "--runs-dir", str(runs), env=env, timeout=900)
    assert third.returncode == 0, third.stderr[-3000:]
    assert a.state == b.state == "completed" and "checkpoint-" in a.status()["resumed_from"]
    segments = _segments_never_overlap(a)
    assert len(segments) == 3 and segments[-1][-1] == 40 and segments[1][0] > 1 and segments[2][0] > 1  # each relaunch resumed
