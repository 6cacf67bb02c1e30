"""The benchmark suite's entry points (measurements themselves are never asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_checks_skip_cleanly_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the checks would run")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-m", "trainyard.bench", "--gpu", "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device here; nothing run" in proc.stdout
    assert not list(tmp_path.iterdir())


def test_paired_ratios_divide_each_round_by_its_own_partner():
    from trainyard.bench.common import paired

    # drift between rounds (10 -> 40) cancels: every round's ratio is 2
    assert paired([20.0, 80.0, 40.0], [10.0, 40.0, 20.0]) == {"min": 2.0, "median": 2.0, "max": 2.0, "n": 3}


def test_every_cpu_case_builds_specs_the_entrypoint_accepts(tmp_path):
    """The cases' specs go through the same schema as `python -m trainyard.run` (a schema rule
    added later once broke the pretrain case unnoticed)."""
    from trainyard.bench import pretrain_case, sft_case
    from trainyard.spec import RunSpec

    spec = RunSpec.from_json(pretrain_case._spec(tmp_path).read_text())
    assert spec.recipe == "pretrain" and spec.eval.strategy == "no" and spec.train.max_steps == pretrain_case.STEPS
    setup = sft_case.prepare(tmp_path / "sft")
    for name in ("spec.json", "spec-packed.json"):
        sft = RunSpec.from_json((tmp_path / "sft" / name).read_text())
        assert sft.recipe == "sft" and sft.train.batch_size == sft_case.BATCH
    assert setup["examples"] == sft_case.EXAMPLES
