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


# ----------------------------------------------------------------------------- 2 x 2 grid, 2 seeds per cell

SEED_YAML = """\
name: seeds
baseline: lr2e-5_r8_s1
base:
  recipe: sft
  model: {name: Qwen/Qwen3-0.6B}
  data: {source: "fixture:strandset_rust", format: strandset_rust}
  train: {max_steps: 100, logging_steps: 10}
  eval: {strategy: steps, steps: 25}
variants:
"""
# (lr, r) -> final heldout loss of seed 1, seed 2
SEED_LOSS = {
    (2e-5, 8): (2.00, 2.02),   # baseline cell: mean 2.01, std 0.014142
    (2e-5, 16): (1.99, 2.05),  # mean 2.02 (+0.01 vs baseline: within 1 std 0.042426)
    (1e-4, 8): (1.80, 1.84),   # mean 1.82
    (1e-4, 16): (1.70, 1.76),  # mean 1.73: best
}
SEED_RUNTIME = 90.0  # s of training: 100 steps -> 4,000 steps / hour
SEED_TOKENS = 51_200.0


def seed_run_name(lr: float, r: int, seed: int) -> str:
    return f"lr{lr:g}_r{r}_s{seed}".replace("e-05", "e-5").replace("0.0001", "1e-4")


def _eval_history(final: float, steps: int, every: int, train_final: float) -> list[dict]:
    """Train logs every 10 steps; evals every ``every``: loss falls to its minimum at 3/4 of
    the run, then rises by 0.05 to ``final`` (so the best eval step is not the last)."""
    hist: list[dict] = []
    for step in range(10, steps + 1, 10):
        frac = step / steps
        hist.append({"step": step, "epoch": 2 * frac, "loss": train_final + 1.0 * (1 - frac), "learning_rate": 1e-4 * (1 - frac),
                     "num_input_tokens_seen": int(SEED_TOKENS * frac)})
    for step in range(every, steps + 1, every):
        frac = step / steps
        loss = final - 0.05 + 0.6 * (0.75 - frac) if frac <= 0.75 else final - 0.05 + 0.2 * (frac - 0.75)
        hist.append({"step": step, "epoch": 2 * frac, "eval_loss": loss})
    return sorted(hist, key=lambda h: (h["step"], "eval_loss" in h))


def build_seed_runs(tmp: Path) -> tuple[Matrix, Path]:
    """runs/seeds/<run>/: a 2 x 2 grid (train.lr x lora.r), 2 seeds (train.seed) per cell, all completed."""
    lines = []
    for (lr, r), _ in SEED_LOSS.items():
        for seed in (1, 2):
            lines.append(f"  - {{name: {seed_run_name(lr, r, seed)}, train.lr: {lr}, lora.r: {r}, train.seed: {seed}}}")
    path = tmp / "seeds.yaml"
    path.write_text(SEED_YAML + "\n".join(lines) + "\n")
    matrix = load_matrix(path)
    root = tmp / "runs"
    for (lr, r), losses in SEED_LOSS.items():
        for seed, final in zip((1, 2), losses, strict=True):
            name = seed_run_name(lr, r, seed)
            rd = RunDir.for_run(root, "seeds", name)
            rd.create()
            rd.spec_file.write_text(matrix.run(name).to_json())
            rd.write_history(_eval_history(final, 100, 25, train_final=final - 0.3))
            rd.write_metrics({"train/loss": final - 0.3, "eval/heldout/loss": final, "eval/heldout/perplexity": math.exp(final),
                              "train/runtime_s": SEED_RUNTIME, "run/wall_time_s": 120.0, "train/tokens": SEED_TOKENS})
            rd.set_status("completed", step=100, max_steps=100)
    return matrix, root


# ----------------------------------------------------------------------------- DPO study

DPO_YAML = """\
name: dpo_study
baseline: beta0.1
base:
  recipe: dpo
  model: {name: Qwen/Qwen3-0.6B}
  data: {source: "fixture:tatqa", format: tatqa_preference}
  dpo: {beta: 0.1}
  train: {max_steps: 40, logging_steps: 10}
  eval:
    strategy: steps
    steps: 20
    tatqa: true
    compare_before: true
    ifeval: {prompts: google/IFEval}
    judge: {base_url: "https://api.openai.com/v1", model: gpt-4o}
variants:
  - {name: beta0.1}
  - {name: beta0.05, dpo.beta: 0.05}
  - {name: beta0.02, dpo.beta: 0.02}
  - {name: beta0.5, dpo.beta: 0.5}
"""
TATQA_N = {"arithmetic": 40, "span": 30, "count": 5, "multi-span": 10}
# run -> (TAT-QA EM after, judge overall, IFEval prompt accuracy after); before: 0.10 / 5.5 / 0.40
DPO_RESULTS = {"beta0.1": (0.20, 6.0, 0.50), "beta0.05": (0.25, 6.5, 0.60), "beta0.02": (0.25, 7.0, 0.55)}
# run -> training reward accuracy at each of the 4 logs, eval reward accuracy at steps 20 and 40
DPO_REWARDS = {"beta0.1": ((0.0, 0.5, 0.625, 0.75), (0.55, 0.70)),
               "beta0.05": ((0.0, 0.5, 0.75, 0.875), (0.60, 0.80)),
               "beta0.02": ((0.0, 0.375, 0.5, 0.625), (0.50, 0.65))}


def _dpo_history(train_acc: tuple, eval_acc: tuple) -> list[dict]:
    hist: list[dict] = []
    for i, acc in enumerate(train_acc):
        step = 10 * (i + 1)
        hist.append({"step": step, "epoch": step / 40, "loss": 0.6931 - 0.05 * i, "learning_rate": 5e-6 * (1 - step / 40),
                     "rewards/accuracies": acc, "rewards/margins": 0.1 * i, "num_input_tokens_seen": 1000 * step})
        if step % 20 == 0:
            j = step // 20 - 1
            hist.append({"step": step, "epoch": step / 40, "eval_loss": 0.69 - 0.04 * j, "eval_rewards/accuracies": eval_acc[j],
                         "eval_rewards/margins": 0.05 + 0.1 * j})
    return hist


def dpo_metrics(em: float, judge: float, ife: float) -> dict[str, float]:
    m: dict[str, float] = {"train/loss": 0.5431, "eval/heldout/loss": 0.65, "train/runtime_s": 400.0, "train/tokens": 40_000.0}
    for prefix, e in (("tatqa_before", 0.10), ("tatqa", em)):
        m[f"{prefix}/exact_match"], m[f"{prefix}/f1"] = e, e + 0.1
        m[f"{prefix}/questions"] = float(sum(TATQA_N.values()))
        for ty, n in TATQA_N.items():
            m[f"{prefix}/{ty}/exact_match"], m[f"{prefix}/{ty}/f1"], m[f"{prefix}/{ty}/questions"] = e, e + 0.1, float(n)
    for prefix, j in (("judge_before", 5.5), ("judge", judge)):
        m.update({f"{prefix}/turn1": j + 0.5, f"{prefix}/turn2": j - 0.5, f"{prefix}/overall": j, f"{prefix}/missing": 0.0,
                  f"{prefix}/questions": 80.0})
    for prefix, p in (("ifeval_before", 0.40), ("ifeval", ife)):
        m.update({f"{prefix}/prompt_accuracy": p, f"{prefix}/instruction_accuracy": p + 0.1, f"{prefix}/prompts": 541.0,
                  f"{prefix}/instructions": 834.0})
    return m


def build_dpo_runs(tmp: Path) -> tuple[Matrix, Path]:
    """runs/dpo_study/: 3 completed DPO runs (TAT-QA tie between beta0.05 and beta0.02) and
    beta0.5, diverged at step 30 with a lower (better) eval DPO loss that must never be ranked."""
    path = tmp / "dpo_study.yaml"
    path.write_text(DPO_YAML)
    matrix = load_matrix(path)
    root = tmp / "runs"
    for name, (em, judge, ife) in DPO_RESULTS.items():
        rd = RunDir.for_run(root, "dpo_study", name)
        rd.create()
        rd.spec_file.write_text(matrix.run(name).to_json())
        rd.write_history(_dpo_history(*DPO_REWARDS[name]))
        m = dpo_metrics(em, judge, ife)
        m["eval/heldout/rewards/accuracies"] = DPO_REWARDS[name][1][-1]
        rd.write_metrics(m)
        rd.set_status("completed", step=40, max_steps=40)
    rd = RunDir.for_run(root, "dpo_study", "beta0.5")
    rd.create()
    rd.spec_file.write_text(matrix.run("beta0.5").to_json())
    rd.write_history(_dpo_history((0.0, 0.5, 0.9), (0.9,))[:4])
    rd.write_metrics({"train/loss": math.nan, "eval/heldout/loss": 0.01, "eval/heldout/rewards/accuracies": 0.99,
                      "tatqa_before/exact_match": 0.10})
    rd.set_status("diverged", step=30, max_steps=40, reason="non-finite grad_norm (nan) at step 30")
    return matrix, root


# ----------------------------------------------------------------------------- mixed loss

MIXED_YAML = """\
name: mixed
baseline: ce
base:
  recipe: mixed_loss
  model: {name: distilbert/distilgpt2}
  data: {source: "fixture:financial_reports", format: text}
  mixed_loss: {alpha: 0.5, temperature: 1.0, top_k: 256}
  train: {max_steps: 20, logging_steps: 10}
  eval: {strategy: steps, steps: 10}
variants:
  - {name: ce, mixed_loss.alpha: 0.0}
  - {name: a0.5}
"""


def build_mixed_runs(tmp: Path) -> tuple[Matrix, Path]:
    """ce: CE 2.9 (objective = CE); a0.5: CE 3.0 but objective (1-α)·CE + α·cos = 1.6 (lower, not comparable)."""
    path = tmp / "mixed.yaml"
    path.write_text(MIXED_YAML)
    matrix = load_matrix(path)
    root = tmp / "runs"
    for name, ce, cos, train_obj, train_ce in (("ce", 2.9, 0.3, 2.95, 2.95), ("a0.5", 3.0, 0.2, 1.7, 3.1)):
        alpha = 0.0 if name == "ce" else 0.5
        rd = RunDir.for_run(root, "mixed", name)
        rd.create()
        rd.spec_file.write_text(matrix.run(name).to_json())
        rd.write_history([
            {"step": 10, "loss": train_obj + 0.5, "ce_loss": train_ce + 0.5, "cos_loss": cos, "learning_rate": 5e-5},
            {"step": 10, "eval_loss": 9.0, "eval_ce_loss": ce + 0.4, "eval_cos_loss": cos},
            {"step": 20, "loss": train_obj, "ce_loss": train_ce, "cos_loss": cos, "learning_rate": 0.0},
            {"step": 20, "eval_loss": 8.0, "eval_ce_loss": ce, "eval_cos_loss": cos},
        ])
        rd.write_metrics({"train/loss": train_obj, "eval/heldout/loss": ce, "eval/heldout/perplexity": math.exp(ce),
                          "eval/heldout/ce_loss": ce, "eval/heldout/cos_loss": cos,
                          "eval/heldout/mixed_loss": (1 - alpha) * ce + alpha * cos})
        rd.set_status("completed", step=20, max_steps=20)
    return matrix, root
