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
