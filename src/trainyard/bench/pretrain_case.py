"""Pretraining throughput of the 25,269,120-parameter SLM as model FLOPs utilization (MFU)
against a matmul peak measured in the same invocation, on the same threads.

MFU = achieved model FLOP/s / peak FLOP/s; model FLOPs per token = 6·N (forward + backward
of every weight matrix, N = 25,269,120: with tied embeddings the output projection counts
once) + 12·layers·hidden·seq (attention scores and values). Achieved = the pretrain
recipe's `train/tokens_per_second` (`python -m trainyard.run`, the whole training loop:
optimizer, loss, data), measured after one warm-up step.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from trainyard.bench.common import python, run_timed, spread, thread_env

SEQ = 256
BATCH = 8
STEPS = 6


def matmul_peak(threads: int, seconds: float = 3.0) -> dict[str, Any]:
    """Best fp32 GEMM rate over the model's own shapes and a square one (GFLOP/s)."""
    import torch

    torch.set_num_threads(threads)
    rows = BATCH * SEQ
    shapes = [(rows, 384, 1536), (rows, 1536, 384), (rows, 384, 32000), (1024, 1024, 1024)]
    best: dict[str, float] = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b
        rate = 0.0
        end = time.perf_counter() + seconds / len(shapes)
        while time.perf_counter() < end:
            t = time.perf_counter()
            a @ b
            rate = max(rate, 2 * m * k * n / (time.perf_counter() - t) / 1e9)
        best[f"{m}x{k}x{n}"] = rate
    return {"gflops": max(best.values()), "by_shape": best}


def _texts(work: Path, copies: int = 4) -> Path:
    """The bundled WikiText fixture, repeated: 19 blocks of 256 tokens per copy, so every
    measured step is a full batch (a partial last batch is a smaller, slower GEMM)."""
    from trainyard.fixtures import fixture_path

    path = work / "wikitext-x4.jsonl"
    path.write_text(fixture_path("wikitext").read_text() * copies)
    return path


def _spec(work: Path, batch: int = BATCH, steps: int = STEPS, precision: str = "fp32") -> Path:
    """The shipped slm_wikitext103 run, its architecture unchanged, on the bundled WikiText
    fixture (repeated) for a few steps (no eval, no tracking, no checkpoints)."""
    from trainyard.matrix import load_matrix

    root = Path(__file__).resolve().parents[3]
    spec = load_matrix(root / "jobs/slm_wikitext103.yaml").runs[0]
    spec = spec.model_copy(update={
        "train": spec.train.model_copy(update={"max_steps": steps, "batch_size": batch, "grad_accum": 1, "max_length": SEQ,
                                               "logging_steps": 1, "save_steps": None, "eval_batch_size": batch, "warmup_steps": 1,
                                               "precision": precision}),
        "eval": spec.eval.model_copy(update={"strategy": "no", "steps": None}),
        "tracking": spec.tracking.model_copy(update={"enabled": False}),
        "data": spec.data.model_copy(update={"source": str(_texts(work)), "config": None, "split": "train", "limit": None,
                                             "eval_size": 0, "eval_split": None, "eval_limit": None}),
    })
    path = work / "pretrain-spec.json"
    path.write_text(type(spec).from_json(spec.to_json()).to_json())  # the entrypoint's own validation
    return path


def run(work: Path, rounds: int, threads: int, log=print) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    spec_path = _spec(work)
    arch = json.loads(spec_path.read_text())["architecture"]
    peaks, rates = [], []
    params = None
    for r in range(rounds):
        peaks.append(matmul_peak(threads))
        run_dir = work / f"pretrain-{r}"
        t = run_timed([python(), "-m", "trainyard.run", "--spec", str(spec_path), "--run-dir", str(run_dir)], thread_env(threads))
        if t.returncode != 0:
            raise RuntimeError(f"pretrain run failed:\n{t.stderr[-3000:]}")
        m = json.loads((run_dir / "metrics.json").read_text())
        params = int(m["model/parameters"])
        rates.append(_steady_tokens_per_s(run_dir, m))
        log(f"  pretrain round {r + 1}/{rounds}: {rates[-1]:.0f} tok/s, peak {peaks[-1]['gflops']:.1f} GFLOP/s")
    flops_per_token = 6 * params + 12 * arch["num_layers"] * arch["hidden_size"] * SEQ
    mfu = [rate * flops_per_token / 1e9 / peak["gflops"] for rate, peak in zip(rates, peaks, strict=True)]
    return {
        "setup": {"parameters": params, "seq": SEQ, "batch_size": BATCH, "steps": STEPS, "threads": threads, "precision": "fp32",
                  "flops_per_token": flops_per_token},
        "matmul_peak_gflops": spread([p["gflops"] for p in peaks]),
        "peak_by_shape_gflops": peaks[-1]["by_shape"],
        "tokens_per_s": spread(rates),
        "achieved_gflops": spread([r * flops_per_token / 1e9 for r in rates]),
        "mfu_vs_measured_peak": spread(mfu),
    }


def _steady_tokens_per_s(run_dir: Path, metrics: dict) -> float:
    """Tokens/s after the first (warm-up) step: the tokens the trainer counted between the
    first and the last logged step over its own clock (`train_runtime` of each log entry)."""
    steps = [e for e in json.loads((run_dir / "history.json").read_text()) if "loss" in e and "train_runtime" in e]
    if len(steps) >= 3 and steps[-1]["train_runtime"] > steps[0]["train_runtime"]:
        first, last = steps[0], steps[-1]
        return (last["num_input_tokens_seen"] - first["num_input_tokens_seen"]) / (last["train_runtime"] - first["train_runtime"])
    return metrics["train/tokens_per_second"]
