"""The entrypoint's exit codes: config errors are 2 (never retried), an unexpected failure is
1 with its traceback in logs/run.log only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = {
    "name": "r", "matrix": "m", "recipe": "sft", "model": {"name": "Qwen/Qwen3-0.6B"},
    "data": {"source": "fixture:strandset_rust", "format": "strandset_rust"}, "tracking": {"enabled": False},
}


def run(spec_text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    spec = tmp_path / "spec.json"
    spec.write_text(spec_text)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "trainyard.run", "--spec", str(spec), "--run-dir", str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, timeout=300)


def test_an_invalid_spec_exits_2_in_one_line(tmp_path):
    proc = run(json.dumps({**SPEC, "train": {"learning_rate": 1e-4}}), tmp_path)
    assert proc.returncode == 2 and "bad spec" in proc.stderr and "learning_rate" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run("{not json", tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_a_setting_this_machine_cannot_run_exits_2(tmp_path):
    from trainyard.preflight import local_cuda

    if local_cuda():
        return  # fp16 is fine here
    proc = run(json.dumps({**SPEC, "train": {"precision": "fp16"}}), tmp_path)
    assert proc.returncode == 2, proc.stderr
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and "needs a GPU" in (status.get("reason") or status.get("error"))


def test_an_unexpected_failure_exits_1_with_the_traceback_in_the_log_only(tmp_path):
    proc = run(json.dumps({**SPEC, "model": {"name": "no-such-org/no-such-model-xyz"}}), tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "run failed" in proc.stderr and "Traceback" not in proc.stderr
    assert "Traceback" in (tmp_path / "run" / "logs" / "run.log").read_text()
