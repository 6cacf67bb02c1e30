"""Launcher: the commands a user runs on a big study, as whole processes (interpreter start
included): validate a 1,000-run matrix, render + validate its 1,000 k8s Jobs (dry run),
and `status` over 1,000 run directories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainyard.bench.common import python, run_timed, spread, thread_env

MATRIX = """\
name: bench_1000
base:
  recipe: sft
  model: {name: Qwen/Qwen3-0.6B}
  data: {source: Fortytwo-Network/Strandset-Rust-v1, format: strandset_rust, eval_size: 0.05}
  lora: {r: 16, alpha: 32}
  train: {epochs: 1, batch_size: 2, lr: 2.0e-5, max_length: 1024}
  resources: {gpus: 1, timeout: 2h}
grid:
  train.lr: [1.0e-5, 2.0e-5, 3.0e-5, 5.0e-5, 1.0e-4, 2.0e-4, 3.0e-4, 5.0e-4, 1.0e-3, 2.0e-3]
  lora.r: [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048]
  train.seed: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
"""


def run(work: Path, rounds: int, log=print) -> dict[str, Any]:
    from trainyard.matrix import load_matrix
    from trainyard.run_dir import RunDir

    work.mkdir(parents=True, exist_ok=True)
    matrix = work / "bench_1000.yaml"
    matrix.write_text(MATRIX)
    runs_dir = work / "runs"
    runs = load_matrix(matrix).runs
    for i, spec in enumerate(runs):
        rd = RunDir.for_run(runs_dir, spec.matrix, spec.name)
        rd.create()
        rd.spec_file.write_text(spec.to_json())
        rd.set_status(["completed", "failed", "running", "queued"][i % 4])
    root = Path(__file__).resolve().parents[3]
    launch = [python(), str(root / "launch.py")]
    commands = {
        "validate_1000": [*launch, "validate", "--matrix", str(matrix)],
        "k8s_dry_run_1000": [*launch, "--matrix", str(matrix), "--backend", "k8s", "--dry-run"],
        "status_1000": [*launch, "status", "--matrix", str(matrix), "--runs-dir", str(runs_dir), "--json"],
    }
    env = thread_env(1)
    times: dict[str, list[float]] = {k: [] for k in commands}
    for r in range(rounds):
        for name, cmd in commands.items():
            t = run_timed(cmd, env, cwd=work)
            if name != "status_1000" and t.returncode != 0:
                raise RuntimeError(f"{name} failed ({t.returncode}):\n{t.stderr[-2000:]}")
            times[name].append(t.wall_s)
        log(f"  launcher round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()))
    return {"runs": len(runs), "seconds": {k: spread(v) for k, v in times.items()}}
