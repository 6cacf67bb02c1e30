"""Fake run directories for report tests: a 6-run matrix in every state a report meets."""

from __future__ import annotations

import math
from pathlib import Path

from trainyard.matrix import Matrix, load_matrix
from trainyard.run_dir import RunDir

MATRIX_YAML = """\
name: demo
description: LoRA SFT on Strandset-Rust, learning rate x rank.
baseline: lr2e-5_r8
base:
  recipe: sft
  model: {name: Qwen/Qwen3-0.6B}
  data: {source: "fixture:strandset_rust", format: strandset_rust}
  lora: {r: 16}
  train: {max_steps: 200, logging_steps: 10}
  eval:
    strategy: steps
    steps: 50
    datasets:
      - {name: wiki, source: "fixture:strandset_rust", format: strandset_rust}
      - {name: code, source: "fixture:strandset_rust", format: strandset_rust}
# explicit names: the tests must not depend on how matrix.py spells grid run names
variants:
  - {name: lr2e-5_r8, train.lr: 2.0e-5, lora.r: 8}
  - {name: lr1e-4_r8, train.lr: 1.0e-4, lora.r: 8}
  - {name: lr1e-3_r8, train.lr: 1.0e-3, lora.r: 8}
  - {name: lr2e-5_r32, train.lr: 2.0e-5, lora.r: 32}
  - {name: lr1e-4_r32, train.lr: 1.0e-4, lora.r: 32}
  - {name: lr1e-3_r32, train.lr: 1.0e-3, lora.r: 32}
"""

SETS = ("heldout", "wiki", "code")
# Final per-set losses of the completed runs; perplexity = exp(loss).
FINAL_LOSS = {
    "lr2e-5_r8": {"heldout": 2.0, "wiki": 2.5, "code": 1.5},  # baseline
    "lr1e-4_r8": {"heldout": 1.8, "wiki": 2.4, "code": 1.2},  # best everywhere
    "lr2e-5_r32": {"heldout": 1.9, "wiki": 2.6, "code": 1.4},
}


def write_matrix(tmp: Path) -> Path:
    path = tmp / "demo.yaml"
    path.write_text(MATRIX_YAML)
    return path


def _history(final: dict[str, float], steps: int = 200, diverge_at: int | None = None, lr: float = 1e-4) -> list[dict]:
    hist: list[dict] = []
    for step in range(10, steps + 1, 10):
        frac = step / steps
        loss = 1.2 + 3.0 * math.exp(-4 * frac) + (final["heldout"] - 1.2) * frac
        if diverge_at is not None and step >= diverge_at:
            loss = math.inf
        warm = min(1.0, step / 20)
        hist.append({"step": step, "epoch": frac, "loss": loss, "learning_rate": lr * warm * (1 - frac) + 1e-12, "grad_norm": 1.0})
        if step % 50 == 0:
            ev = {"step": step, "epoch": frac}
            for s in SETS:
                v = final[s] + 1.5 * (1 - frac)
                ev[f"eval_{s}_loss"] = math.inf if diverge_at is not None and step >= diverge_at else v
            hist.append(ev)
    return hist


def eval_metrics(final: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for s, loss in final.items():
        out[f"eval/{s}/loss"] = loss
        out[f"eval/{s}/perplexity"] = math.exp(loss) if math.isfinite(loss) else math.inf
    return out


def build_runs(tmp: Path) -> tuple[Matrix, Path]:
    """runs/demo/<run>/ for: 3 completed, 1 diverged (inf), 1 failed, 1 queued."""
    matrix = load_matrix(write_matrix(tmp))
    root = tmp / "runs"

    def rundir(name: str) -> RunDir:
        rd = RunDir.for_run(root, "demo", name)
        rd.create()
        rd.spec_file.write_text(matrix.run(name).to_json())
        return rd

    tps = {"lr2e-5_r8": 1000.0, "lr1e-4_r8": 1100.0, "lr2e-5_r32": 900.0}
    lrs = {"lr2e-5_r8": 2e-5, "lr1e-4_r8": 1e-4, "lr2e-5_r32": 2e-5}
    for name, final in FINAL_LOSS.items():
        rd = rundir(name)
        hist = _history(final, lr=lrs[name])
        rd.write_history(hist)
        m = {"train/loss": hist[-2]["loss"], "train/runtime_s": 60.0, "train/tokens_per_second": tps[name], **eval_metrics(final)}
        rd.write_metrics(m)
        rd.set_status("completed", step=200, max_steps=200)

    # lr 1e-3, r8: loss became inf at step 120; perplexity "inf" on every set
    rd = rundir("lr1e-3_r8")
    rd.write_history(_history({"heldout": 2.0, "wiki": 2.5, "code": 1.5}, diverge_at=120, lr=1e-3))
    rd.write_metrics({"train/loss": math.inf, **eval_metrics({"heldout": math.inf, "wiki": math.inf, "code": 2.2})})
    rd.set_status("diverged", step=120, max_steps=200, reason="non-finite loss at step 120")

    rd = rundir("lr1e-4_r32")
    rd.set_status("failed", step=0, max_steps=200, error="Traceback (most recent call last):\n  ...\ntorch.OutOfMemoryError: CUDA out of memory")

    rd = rundir("lr1e-3_r32")
    rd.set_status("queued")
    return matrix, root
