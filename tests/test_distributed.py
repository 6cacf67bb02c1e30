"""Several training processes for one run, on CPU (gloo) and the tiny model: the local
backend's torchrun launch (`resources.processes`), SIGTERM to one rank, and a 2-node
rendezvous on 127.0.0.1. Only rank 0 writes the run directory, Trackio and the status."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trainyard.checkpoints import checkpoint_problem
from trainyard.contract import ExitCode, RunState
from trainyard.run_dir import RunDir
from trainyard.spec import RunSpec

ROOT = Path(__file__).resolve().parents[1]
# a hung test's torchrun SIGKILLs its workers 10 s after our SIGTERM (stop()), never leaves them
ENV = {"PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "10"}
LAUNCH = [sys.executable, "-m", "trainyard.backends.launch"]
# Two ranks x batch 1 and one process x batch 2 see the same 2 blocks per step (the
# sampler's permutation is seeded and torchrun's shards interleave its batches) and the
# same gradient (DDP averages the ranks' means over equal-length blocks): they differ only
# in float summation order, ~1e-6 here. A different data order differs by ~1e-2 at step 1.
LOSS_TOLERANCE = 1e-4


def clm_base(tiny: str, **train) -> dict:
    """A full fine-tune of the tiny model on fixed-length text blocks (no padding)."""
    t = {"max_steps": 6, "batch_size": 1, "max_length": 32, "logging_steps": 1, "save_steps": 3,
         "lr": 1e-3, "scheduler": "constant", **train}
    return {"recipe": "clm", "smoke": True, "model": {"name": tiny},
            "data": {"source": "fixture:wikitext", "format": "text", "limit": 200, "eval_size": 0},
            "eval": {"strategy": "no"}, "train": t, "tracking": {"enabled": True}, "resources": {"gpus": 0}}


def spec_file(tmp_path: Path, tiny: str, name: str, **train) -> Path:
    spec = RunSpec.model_validate({"name": name, "matrix": "dist", **clm_base(tiny, **train)})
    path = tmp_path / f"{name}.spec.json"
    path.write_text(spec.to_json())
    return path


def trackio_runs(trackio: Path, project: str) -> dict[str, list[tuple[int, dict]]]:
    """{run name: [(step, metrics), ...]} from the project's real Trackio database."""
    db = sqlite3.connect(trackio / f"{project}.db")
    try:
        out: dict[str, list[tuple[int, dict]]] = {}
        for name, step, metrics in db.execute("select run_name, step, metrics from metrics order by id"):
            out.setdefault(name, []).append((step, json.loads(metrics)))
        return out
    finally:
        db.close()


def step_losses(rd: RunDir) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in rd.history() if "loss" in e}


def test_local_dry_run_shows_the_torchrun_launch_and_effective_batch_and_refuses_nodes(tmp_path):
    base = clm_base("some/model", grad_accum=3)
    matrix = {"name": "dist", "base": base, "variants": [{"name": "two", "resources.processes": 2}, {"name": "one"}]}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(matrix))
    dry = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--matrix", str(path), "--dry-run"], cwd=tmp_path, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert "1 × 3 × 2 procs = 6" in dry.stdout  # the table's batch column
    assert "two -> runs/dist/two: 2 processes (torchrun), effective batch 1 x 3 x 2 = 6  (python -m trainyard.backends.launch --standalone --nnodes 1 --nproc-per-node 2 -m trainyard.run --run-dir runs/dist/two --spec runs/dist/two/spec.json)" in dry.stdout
    assert "one -> runs/dist/one: 1 process, effective batch 1 x 3 = 3  (python -m trainyard.run --run-dir runs/dist/one --spec runs/dist/one/spec.json)" in dry.stdout

    matrix["variants"] = [{"name": "multi", "resources.nodes": 2}]
    path.write_text(yaml.safe_dump(matrix))
    for cmd in (["--dry-run"], []):
        refused = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--matrix", str(path), *cmd], cwd=tmp_path, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2, refused.stderr
        assert "run 'multi' | key 'resources.nodes': 2 nodes need the k8s backend" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_train_distributed_auto_shards_only_big_full_fine_tunes_and_only_with_several_processes(monkeypatch):
    import torch

    from trainyard import training_args
    from trainyard.training_args import distributed_kwargs, distributed_mode

    def spec(**over) -> RunSpec:
        return RunSpec.model_validate({"name": "r", "matrix": "dist", **clm_base("some/model"), **over})

    model = torch.nn.Linear(10, 10)  # 110 parameters
    monkeypatch.setattr(training_args, "FSDP_AUTO_PARAMETERS", 100)
    assert distributed_mode(spec(), model) == "fsdp"
    assert distributed_mode(spec(lora={"r": 4}), model) == "ddp"  # adapters: replicas fit
    assert distributed_mode(spec(), torch.nn.Linear(3, 3)) == "ddp"
    assert distributed_mode(spec(train={**clm_base("m")["train"], "distributed": "ddp"}), model) == "ddp"
    assert distributed_kwargs(spec(), model) == {}  # one process: the single-process arguments, unchanged
    monkeypatch.setenv("WORLD_SIZE", "2")
    kw = distributed_kwargs(spec(), model)
    assert kw["fsdp"] is True and kw["fsdp_config"]["version"] == 2 and kw["ddp_backend"] == "gloo"  # no CUDA here
    assert "fsdp" not in distributed_kwargs(spec(lora={"r": 4}), model)
    with pytest.raises(ValueError, match="distributed"):
        spec(train={**clm_base("m")["train"], "distributed": "zero3"})


@pytest.mark.slow
def test_two_processes_train_one_run_like_one_process_with_the_same_global_batch(tmp_path, tiny_model):
    """`resources.processes: 2` under the local backend: torchrun, gloo, data-parallel (DDP,
    and FSDP2 with train.distributed: fsdp). One status / metrics / Trackio run, written by
    rank 0 alone, and the same losses as one process whose batch is the two ranks' together."""
    base = clm_base(tiny_model)
    base["data"]["eval_size"] = 16  # a held-out set: evaluated while training (gathered) and after (rank 0 / every FSDP rank)
    base["eval"] = {"strategy": "steps", "steps": 3}
    matrix = {"name": "dist", "base": base, "variants": [
        {"name": "two", "resources.processes": 2, "train.batch_size": 1},
        {"name": "sharded", "resources.processes": 2, "train.batch_size": 1, "train.distributed": "fsdp"},
        {"name": "one", "train.batch_size": 2},
    ]}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(matrix))
    trackio = tmp_path / "trackio"
    env = {**os.environ, **ENV, "TRACKIO_DIR": str(trackio)}
    done = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--matrix", str(path), "--runs-dir", str(tmp_path / "runs")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    two, sharded, one = (RunDir(tmp_path / "runs" / "dist" / n) for n in ("two", "sharded", "one"))
    assert done.returncode == 0, done.stderr[-3000:] + (two.logs / "stdout.log").read_text()[-3000:]
    log = (two.logs / "stdout.log").read_text()
    assert "[rank 1]" in log and "world size 2" in two.log_file.read_text()  # really two processes
    assert "[rank 1]" not in two.log_file.read_text()  # logs/run.log is rank 0's
    for rd in (two, sharded, one):
        assert rd.status()["state"] == RunState.COMPLETED and rd.status()["step"] == 6
    # one of each file: nothing rank-suffixed beside them, every step logged once
    assert sorted(p.name for p in two.path.iterdir() if p.suffix == ".json") == sorted(p.name for p in one.path.iterdir() if p.suffix == ".json")
    assert sorted(step_losses(two)) == list(range(1, 7))
    runs = trackio_runs(trackio, "dist")
    assert set(runs) == {"two", "sharded", "one"}  # one Trackio run per experiment, none per rank
    assert sorted(s for s, m in runs["two"] if "train/loss" in m) == list(range(1, 7))

    a, b = two.metrics(), one.metrics()
    diffs = {s: abs(step_losses(two)[s] - step_losses(one)[s]) for s in range(1, 7)}
    print(f"final train/loss 2 procs {a['train/loss']:.7f} vs 1 proc {b['train/loss']:.7f}; per-step |diff| max {max(diffs.values()):.2e}")
    assert max(diffs.values()) < LOSS_TOLERANCE
    assert abs(a["train/loss"] - b["train/loss"]) < LOSS_TOLERANCE
    assert a["train/tokens"] == b["train/tokens"]  # gathered over the ranks
    evals = {k for k in b if k.startswith("eval/") and k.endswith(("/loss", "/tokens"))}
    assert evals and all(abs(a[k] - b[k]) < LOSS_TOLERANCE * max(1.0, b[k]) for k in evals), {k: (a[k], b[k]) for k in evals}
    during = {rd: [e["eval_heldout_loss"] for e in rd.history() if "eval_heldout_loss" in e] for rd in (two, one)}  # steps 3, 6
    assert len(during[two]) == 2 and all(abs(x - y) < LOSS_TOLERANCE for x, y in zip(during[two], during[one], strict=True))
    assert (two.final / "model.safetensors").is_file()

    # FSDP2 (gloo): the same steps; final/ holds the whole model, not a shard
    fsdp_diffs = [abs(step_losses(sharded)[s] - step_losses(one)[s]) for s in range(1, 7)]
    print(f"fsdp final train/loss {sharded.metrics()['train/loss']:.7f}; per-step |diff| max {max(fsdp_diffs):.2e}")
    assert max(fsdp_diffs) < LOSS_TOLERANCE
    assert all(abs(sharded.metrics()[k] - b[k]) < LOSS_TOLERANCE * max(1.0, b[k]) for k in evals)
    assert (sharded.final / "model.safetensors").stat().st_size == (one.final / "model.safetensors").stat().st_size


def stop(proc: subprocess.Popen) -> None:
    """A launch still running when the test gives up: SIGTERM (torchrun stops its workers), then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [int(e.split(b"=", 1)[1]) for e in env if e.startswith(b"RANK=")]
    return ranks[0] if ranks else None


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_both_with_a_checkpoint_and_both_resume_from_it(tmp_path, tiny_model):
    """SIGTERM reaches rank 1 only (a preempted node, a kill of one worker): the flag is
    combined over the ranks each step, so both save the same checkpoint and stop; the
    launch exits 130 (rank 0's code) and status.json says canceled."""
    from run_helpers import wait_for

    spec = spec_file(tmp_path, tiny_model, "term", max_steps=400, save_steps=1000)
    rd = RunDir(tmp_path / "run")
    env = {**os.environ, **ENV, "TRACKIO_DIR": str(tmp_path / "trackio")}
    proc = subprocess.Popen([*LAUNCH, "--standalone", "--nnodes", "1", "--nproc-per-node", "2", "-m", "trainyard.run", "--spec", str(spec), "--run-dir", str(rd.path)],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (rd.status().get("step") or 0) >= 2 or proc.poll() is not None, timeout=300, what="step 2")
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        rank1 = [c for c in _children(proc.pid) if _rank_of(c) == 1]
        assert len(rank1) == 1
        os.kill(rank1[0], signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        stop(proc)
    assert proc.returncode == ExitCode.CANCELED, err[-3000:]
    st = rd.status()
    assert st["state"] == RunState.CANCELED and 2 <= st["step"] < 400
    saved = sorted(rd.checkpoints.iterdir())
    assert [p.name for p in saved] == [f"checkpoint-{st['step']}"]  # the cancel's save, at the step both stopped
    assert checkpoint_problem(saved[0]) is None
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in saved[0].iterdir()}
    assert not rd.final.exists()

    # relaunched (two more steps): both ranks resume from that checkpoint, rank 0's pick
    stopped = st["step"]
    more = spec_file(tmp_path, tiny_model, "term", max_steps=stopped + 2, save_steps=1000)
    again = subprocess.run([*LAUNCH, "--standalone", "--nnodes", "1", "--nproc-per-node", "2", "-m", "trainyard.run", "--spec", str(more), "--run-dir", str(rd.path)],
                           cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    st = rd.status()
    assert st["state"] == RunState.COMPLETED and st["step"] == stopped + 2 and Path(st["resumed_from"]) == saved[0]
    assert "[rank 1] " in again.stderr and f"rank 1: resuming from {saved[0]}" in again.stderr
    assert sorted(step_losses(rd)) == list(range(1, stopped + 3))  # every step once


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_rendezvous_on_localhost_complete_one_run(tmp_path, tiny_model):
    """Two torchrun invocations with --nnodes 2 (node ranks 0 and 1) and static rendezvous
    on 127.0.0.1, the flags the k8s Indexed Job gives its pods, train one run together."""
    spec = spec_file(tmp_path, tiny_model, "nodes", max_steps=4, save_steps=2)
    rd = RunDir(tmp_path / "run")
    port = str(_free_port())
    env = {**os.environ, **ENV, "TRACKIO_DIR": str(tmp_path / "trackio")}
    procs = [
        subprocess.Popen([*LAUNCH, "--nnodes", "2", "--node-rank", str(r), "--master-addr", "127.0.0.1", "--master-port", port,
                          "--nproc-per-node", "1", "--max-restarts", "0", "-m", "trainyard.run", "--spec", str(spec), "--run-dir", str(rd.path)],
                         cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for r in (0, 1)
    ]
    try:
        errs = [p.communicate(timeout=600)[1] for p in procs]
    finally:
        for p in procs:
            stop(p)
    assert [p.returncode for p in procs] == [0, 0], "\n".join(e[-2000:] for e in errs)
    st = rd.status()
    assert st["state"] == RunState.COMPLETED and st["step"] == 4
    assert sorted(step_losses(rd)) == [1, 2, 3, 4]
    assert "world size 2" in rd.log_file.read_text() and "[rank 1]" in errs[1]
    assert (rd.final / "model.safetensors").is_file() and rd.metrics()["train/loss"] > 0
    assert set(trackio_runs(tmp_path / "trackio", "dist")) == {"nodes"}
