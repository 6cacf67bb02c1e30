"""Evaluation: trainyard's exact token-weighted eval vs `Trainer.evaluate`, same model and sets.

- sft: the SFT recipe's final eval (`token_weighted_loss`) vs `SFTTrainer.evaluate()` on the
  same trainer, model and held-out prompt/completion rows (long-tailed lengths).
- lm: the LM recipes' final eval (`evaluate_texts`, block windows) vs `Trainer.evaluate()` on
  the same blocks (equal lengths: no padding to save, only the vocabulary projection).
Exactness against a float64 copy of the model scoring every example alone; time as paired
ratios over interleaved rounds; peak memory as resident-set growth during one call each.
"""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path
from typing import Any

from trainyard.bench.common import bench_model, paired, spread

SFT_EVAL_ROWS = 104  # the fixture rows after the 96 training ones
EVAL_BATCH = 8


class PeakRSS:
    """Resident-set growth over a block, sampled every millisecond (CPU tensors are mmapped
    by glibc when large, so freeing them shows)."""

    def __enter__(self):
        self.base = self.peak = _rss()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.stop.wait(0.001):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, _rss())
        self.growth_mb = (self.peak - self.base) / 2**20


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _timed(fn) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _reference_nll(model64, rows: list[dict]) -> float:
    """float64 model, one example at a time: Σ NLL / N over every label != -100."""
    import torch

    total, count = [], 0
    with torch.inference_mode():
        for row in rows:
            ids = torch.tensor([row["input_ids"]])
            logits = model64(input_ids=ids, use_cache=False).logits[0, :-1]
            assert logits.dtype == torch.float64
            target = torch.tensor(row["labels"][1:])
            keep = target != -100
            total += torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="none").tolist()
            count += int(keep.sum())
    return math.fsum(total) / count


def sft_eval(work: Path, rounds: int, log=print) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from trainyard.data.loading import load_examples
    from trainyard.evaluation.trainer_eval import token_weighted_loss
    from trainyard.spec import DataSpec

    path = bench_model(work / "model")
    ds, _, _ = load_examples(DataSpec(source="fixture:strandset_rust", format="strandset_rust", eval_size=0))
    ds = ds.select(range(len(ds) - SFT_EVAL_ROWS, len(ds)))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    # bf16=False: TRL defaults to bf16 autocast, which would score a different model
    args = SFTConfig(output_dir=str(work / "sft-eval"), per_device_eval_batch_size=EVAL_BATCH, max_length=1024,
                     report_to="none", use_cpu=True, disable_tqdm=True, bf16=False)
    trainer = SFTTrainer(model=model, args=args, eval_dataset={"heldout": ds}, train_dataset=ds,
                         processing_class=AutoTokenizer.from_pretrained(path))
    eval_set = trainer.eval_dataset["heldout"]
    rows = eval_set.select_columns(["input_ids", "labels"]).to_list()
    ref = _reference_nll(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64).eval(), rows)

    def ours():
        return token_weighted_loss(trainer, eval_set).loss

    def theirs():
        return trainer.evaluate()["eval_heldout_loss"]

    ours(), theirs()  # warm-up: first-call allocations, dataset formatting caches
    times, losses, mem_ours, mem_theirs = _compare(ours, theirs, rounds, log, "sft")
    return _summary(times, losses, ref, mem_ours, mem_theirs,
                    {"rows": len(rows), "target_tokens": sum(sum(1 for x in r["labels"][1:] if x != -100) for r in rows), "eval_batch_size": EVAL_BATCH,
                     **_forward_tokens([len(r["input_ids"]) for r in rows], trainer.args.per_device_eval_batch_size)})


def lm_eval(work: Path, rounds: int, log=print) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from trainyard.arch import build_model
    from trainyard.data.lm import lm_collator, to_blocks
    from trainyard.evaluation.perplexity import score_windows
    from trainyard.evaluation.texts import load_texts
    from trainyard.evaluation.windows import Window
    from trainyard.fixtures import fixture_path
    from trainyard.spec import ArchitectureSpec

    tok = AutoTokenizer.from_pretrained(bench_model(work / "model"))
    arch = ArchitectureSpec(model_type="llama", hidden_size=384, num_layers=6, num_heads=6, num_kv_heads=2,
                            intermediate_size=1536, vocab_size=32000, max_position_embeddings=256, tie_embeddings=True)
    model = build_model(arch, seed=0, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id).eval()
    texts = load_texts(str(fixture_path("wikitext")), "text")
    blocks = to_blocks(texts, tok, 256)
    args = TrainingArguments(output_dir=str(work / "lm-eval"), per_device_eval_batch_size=EVAL_BATCH, report_to="none", use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, eval_dataset=blocks, data_collator=lm_collator(tok))
    rows = [{"input_ids": r["input_ids"], "labels": r["input_ids"]} for r in blocks.to_list()]
    model.save_pretrained(work / "slm")
    ref = _reference_nll(AutoModelForCausalLM.from_pretrained(work / "slm", dtype=torch.float64).eval(), rows)
    # the LM recipes' scorer (evaluate_texts' core) on exactly the Trainer's blocks
    windows = [Window(r["input_ids"], len(r["input_ids"]) - 1, -1) for r in rows]

    def ours():
        nll, _, _ = score_windows(model, windows, batch_size=EVAL_BATCH, pad_id=tok.pad_token_id)
        return math.fsum(nll) / sum(w.n_scored for w in windows)

    def theirs():
        return trainer.evaluate()["eval_loss"]

    ours(), theirs()
    times, losses, mem_ours, mem_theirs = _compare(ours, theirs, rounds, log, "lm")
    return _summary(times, losses, ref, mem_ours, mem_theirs,
                    {"blocks": len(rows), "block_length": 256, "parameters": sum(p.numel() for p in model.parameters()), "eval_batch_size": EVAL_BATCH})


def _forward_tokens(lengths: list[int], batch: int) -> dict[str, Any]:
    """Token positions each side runs the model over. An exact evaluator cannot skip a real
    token (every target's context is needed), so `Trainer.evaluate`'s padding (its batches
    in dataset order, each padded to its longest row) bounds the speed-up a forward over
    real tokens only can reach: padding_bound = trainer_positions / real_tokens."""
    from trainyard.evaluation.perplexity import token_budget_batches

    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    ours = token_budget_batches(order, lengths, batch * lengths[order[0]])
    trainer = sum(max(lengths[i:i + batch]) * len(lengths[i:i + batch]) for i in range(0, len(lengths), batch))
    real = sum(lengths)
    return {"real_tokens": real, "trainer_positions": trainer, "trainyard_positions": sum(len(b) * lengths[b[0]] for b in ours),
            "padding_bound": trainer / real}


def _compare(ours, theirs, rounds: int, log, tag: str):
    """Interleaved rounds (the order flips every round), then each side's peak memory once:
    -> (seconds per side, last loss per side, MB growth ours, MB growth theirs)."""
    times: dict[str, list[float]] = {"trainyard": [], "trainer_evaluate": []}
    losses: dict[str, float] = {}
    for r in range(rounds):
        order = [("trainyard", ours), ("trainer_evaluate", theirs)]
        for name, fn in order if r % 2 == 0 else reversed(order):
            t, loss = _timed(fn)
            times[name].append(t)
            losses[name] = loss
        log(f"  eval/{tag} round {r + 1}/{rounds}: trainyard {times['trainyard'][-1]:.2f}s, Trainer.evaluate {times['trainer_evaluate'][-1]:.2f}s")
    with PeakRSS() as m_ours:
        ours()
    with PeakRSS() as m_theirs:
        theirs()
    return times, losses, m_ours.growth_mb, m_theirs.growth_mb


def _summary(times, losses, ref, mem_ours, mem_theirs, setup) -> dict[str, Any]:
    return {
        "setup": setup,
        "seconds": {k: spread(v) for k, v in times.items()},
        "speedup_vs_trainer_evaluate": paired(times["trainer_evaluate"], times["trainyard"]),
        "loss": {**losses, "float64_reference": ref},
        "relative_error": {k: abs(v - ref) / ref for k, v in losses.items()},
        "peak_rss_growth_mb": {"trainyard": mem_ours, "trainer_evaluate": mem_theirs},
    }


def run(work: Path, rounds: int, log=print) -> dict[str, Any]:
    import torch

    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    return {"sft": sft_eval(work, rounds, log), "lm": lm_eval(work, rounds, log)}
