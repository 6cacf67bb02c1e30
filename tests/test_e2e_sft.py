"""End to end: the shipped rust_sft matrix in --smoke mode, resume, and Ctrl-C."""

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainyard.contract import PADDING_FRACTION
from trainyard.matrix import load_matrix
from trainyard.run_dir import RunDir
from trainyard.smoke import smoke_spec

ROOT = Path(__file__).resolve().parents[1]


def launch(*args, cwd=ROOT, env=None, **kw):
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, **kw)


@pytest.mark.slow
def test_rust_sft_smoke_matrix(tmp_path):
    runs = tmp_path / "runs"
    secret = "hf_trainyardTestSecret0123456789"
    env = {"TRACKIO_DIR": str(tmp_path / "trackio"), "HF_TOKEN": secret}
    proc = launch("--matrix", "jobs/rust_sft.yaml", "--smoke", "--runs-dir", str(runs), env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("5k", "20k-r32", "20k-2ep-restarts"):
        rd = RunDir(runs / "rust_sft-smoke" / name)
        assert rd.state == "completed"
        m = rd.metrics()
        assert 0 < m["train/loss"] < 20 and 0 < m["eval/heldout/loss"] < 20
        assert m["eval/heldout/perplexity"] == pytest.approx(math.exp(m["eval/heldout/loss"]), rel=1e-12)
        assert m["data/skipped"] == 1  # the fixture's truncated row, counted
        assert (rd.final / "adapter_config.json").is_file() and (rd.final / "tokenizer.json").is_file()
        last = rd.checkpoints / f"checkpoint-{rd.status()['step']}"  # saved at the last step
        assert (rd.final / "adapter_model.safetensors").samefile(last / "adapter_model.safetensors")
        assert rd.card_file.read_text().count("eval/heldout/loss") == 1
        spec = json.loads(rd.spec_file.read_text())
        assert spec["smoke"] is True and spec["matrix"] == "rust_sft-smoke"
        assert any("eval_heldout_loss" in h for h in rd.history())
    # LoRA rank really differs between runs
    cfg = json.loads((runs / "rust_sft-smoke/20k-r32/final/adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"]) == (32, 64)
    # Trackio: one project, three runs with loss curves
    db = sqlite3.connect(tmp_path / "trackio" / "rust_sft-smoke.db")
    rows = dict(db.execute("select run_name, count(*) from metrics group by run_name").fetchall())
    assert set(rows) == {"5k", "20k-r32", "20k-2ep-restarts"} and min(rows.values()) >= 4
    logged = [json.loads(r[0]) for r in db.execute("select metrics from metrics where run_name='5k'")]
    assert sum("train/loss" in m for m in logged) >= 4 and any("eval/heldout/loss" in m for m in logged)
    during = next(m for m in logged if "eval/heldout/loss" in m)
    assert during["eval/heldout/perplexity"] == pytest.approx(math.exp(during["eval/heldout/loss"]))
    # The token in the environment reaches no spec, log, metrics, card or Trackio record
    leaks = [p for p in [*runs.rglob("*"), *(tmp_path / "trackio").rglob("*")] if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaks == [] and secret not in proc.stdout + proc.stderr
    # Running the same command again starts nothing new
    mtimes = {p: p.stat().st_mtime for p in runs.rglob("metrics.json")}
    again = launch("--matrix", "jobs/rust_sft.yaml", "--smoke", "--runs-dir", str(runs), env=env, timeout=120)
    assert again.returncode == 0
    assert again.stderr.count("already completed") == 3
    assert {p: p.stat().st_mtime for p in runs.rglob("metrics.json")} == mtimes
    status = launch("status", "--matrix", "jobs/rust_sft.yaml", "--smoke", "--runs-dir", str(runs), "--json")
    assert [r["state"] for r in json.loads(status.stdout)] == ["completed"] * 3


def _spec(tiny_model, **train):
    spec = smoke_spec(load_matrix(ROOT / "jobs/rust_sft.yaml").run("5k"), tiny_model)
    return spec.model_copy(update={"train": spec.train.model_copy(update=train)})


@pytest.mark.slow  # trains a whole run
def test_interrupted_run_resumes_from_last_checkpoint(tmp_path, tiny_model):
    from trainyard.backends.local import run_local

    spec = _spec(tiny_model, max_steps=4, save_steps=2)
    assert run_local([spec], tmp_path) == 0
    rd = RunDir.for_run(tmp_path, spec.matrix, spec.name)
    full_history = [h["step"] for h in rd.history() if "loss" in h]
    assert full_history == [1, 2, 3, 4]
    assert 0.0 <= rd.metrics()[PADDING_FRACTION] < 1.0
    # Simulate a crash after step 2: later checkpoint and outputs gone, state not final.
    import shutil

    shutil.rmtree(rd.checkpoints / "checkpoint-4")
    shutil.rmtree(rd.final)
    rd.set_status("failed", reason="simulated crash")
    assert run_local([spec], tmp_path) == 0
    st = rd.status()
    assert st["state"] == "completed" and st["resumed_from"].endswith("checkpoint-2")
    assert [h["step"] for h in rd.history() if "loss" in h] == [1, 2, 3, 4]
    assert (rd.final / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_ctrl_c_cancels_cleanly_and_checkpoints(tmp_path, tiny_model):
    spec = _spec(tiny_model, max_steps=100000, save_steps=100000, logging_steps=1)
    spec_file = tmp_path / "m.yaml"
    # Drive the launcher through the CLI on a one-run matrix written from the spec.
    import yaml

    d = spec.model_dump(mode="json")
    d.pop("name"), d.pop("matrix")
    d["train"].pop("epochs")  # max_steps is set: writing both is a config error
    spec_file.write_text(yaml.safe_dump({"name": "ctrlc", "variants": [{"name": "long"}], "base": d}))
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "--matrix", str(spec_file), "--runs-dir", str(tmp_path / "runs")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rd = RunDir(tmp_path / "runs/ctrlc/long")
    deadline = time.time() + 120
    while time.time() < deadline and (rd.status().get("step") or 0) < 3:
        time.sleep(0.5)
    assert (rd.status().get("step") or 0) >= 3, proc.stderr.read() if proc.poll() is not None else "no progress"
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=120)
    assert code == 130
    assert rd.state == "canceled"
    assert rd.last_checkpoint() is not None  # the run saved where it stopped


@pytest.mark.slow  # trains a whole run
def test_bad_data_fails_that_run_only_with_a_clear_reason(tmp_path, tiny_model):
    from trainyard.backends.local import run_local

    bad_file = tmp_path / "rows.jsonl"
    bad_file.write_text(json.dumps({"crate_name": "x", "input": "{}"}) + "\n")
    good = _spec(tiny_model, max_steps=1)
    bad = good.model_copy(update={"name": "bad", "data": good.data.model_copy(update={"source": str(bad_file)})})
    small = good.model_copy(update={"name": "small", "data": good.data.model_copy(update={"limit": 5000, "eval_size": 4})})
    assert run_local([bad, small], tmp_path) == 1  # not everything succeeded
    bad_dir = RunDir.for_run(tmp_path, bad.matrix, "bad")
    st = bad_dir.status()
    assert st["state"] == "failed"
    assert "needs column(s) ['input_data', 'output_data', 'task_category']" in st["reason"] and str(bad_file) in st["reason"]
    ok = RunDir.for_run(tmp_path, small.matrix, "small").status()
    assert ok["state"] == "completed"
    assert any("limit=5000" in w and "using all of them" in w for w in ok["warnings"])


@pytest.mark.slow  # trains a whole run
def test_parallel_runs_and_smoke_hub_push_goes_to_the_run_dir(tmp_path, tiny_model):
    from trainyard.backends.local import run_local

    base = _spec(tiny_model, max_steps=1)
    a = base.model_copy(update={"name": "a", "hub": base.hub.model_copy(update={"push": True, "repo": "someone/{matrix}-{run}"})})
    b = base.model_copy(update={"name": "b"})
    assert run_local([a, b], tmp_path, parallel=2) == 0
    sa, sb = (RunDir.for_run(tmp_path, base.matrix, n).status() for n in ("a", "b"))
    assert sa["state"] == sb["state"] == "completed"
    # both ran at once: each started before the other finished
    assert sa["started_at"] < sb["finished_at"] and sb["started_at"] < sa["finished_at"]
    pushed = Path(sa["pushed_to"])
    assert pushed == tmp_path / base.matrix / "a" / "hub" / "someone__rust_sft-smoke-a"
    assert (pushed / "adapter_model.safetensors").is_file() and "rust_sft-smoke / a" in (pushed / "README.md").read_text()
    assert "pushed_to" not in sb


def test_progress_is_written_while_training(tmp_path):
    from types import SimpleNamespace

    from trainyard.context import ProgressCallback, RunContext

    spec = load_matrix(ROOT / "jobs/rust_sft.yaml").run("5k")
    rd = RunDir(tmp_path / "run")
    rd.create()
    ctx = RunContext(spec=spec, rundir=rd, precision="fp32", device="cpu")
    history = [{"loss": 2.5, "learning_rate": 1e-5, "step": 10}]
    state = SimpleNamespace(global_step=10, max_steps=100, log_history=history)
    ProgressCallback(ctx).on_log(None, state, None, logs={"loss": 2.5})
    assert rd.status()["step"] == 10 and rd.status()["loss"] == 2.5
    assert rd.history() == history  # report can plot an unfinished run
