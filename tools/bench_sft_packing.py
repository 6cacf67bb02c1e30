"""SFT throughput of TRL's three packing modes on CPU: no packing, packing "wrapped", packing "bfd".

Backs the choice in src/trainyard/recipes/sft.py (packing on -> packing_strategy="wrapped"):
TRL's default "bfd" strategy forces padding-free batches (one flattened row per batch), which
on CPU without FlashAttention means SDPA over a block-diagonal mask of the whole batch.

Each run trains a fresh seeded Qwen3 (tokenizer of the --smoke tiny model) with TRL SFTTrainer
on the bundled Strandset-Rust fixture, loaded through trainyard's own loader, for
--warmup + --steps optimizer steps; only the last --steps are timed. Throughput is
*non-padding* input tokens per second, counted from the batches the trainer actually sees
(attention_mask sum; for padding-free batches every position is a real token). Padded slots
and loss (completion) tokens are counted too. Configs are run interleaved (A B C A B C ...)
to spread machine drift over all of them; median and min/max over --repeats are reported.

    HF_HUB_OFFLINE=1 .venv/bin/python tools/bench_sft_packing.py [--steps 20] [--repeats 3] [--json out.json]

A measuring tool, not a test: it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any

CONFIGS: dict[str, dict[str, Any]] = {
    "no packing": {"packing": False},
    "packing wrapped": {"packing": True, "packing_strategy": "wrapped"},
    "packing bfd": {"packing": True, "packing_strategy": "bfd"},
}
BASELINE = "no packing"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps per run (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing starts (default 3)")
    p.add_argument("--repeats", type=int, default=3, help="runs per config, interleaved (default 3)")
    p.add_argument("--max-length", type=int, default=512, help="SFT max_length / packed row length (default 512)")
    p.add_argument("--batch-size", type=int, default=8, help="per-device train batch size (default 8)")
    p.add_argument("--hidden", type=int, default=192, help="Qwen3 hidden size, a multiple of 32 (default 192)")
    p.add_argument("--layers", type=int, default=2, help="Qwen3 decoder layers (default 2)")
    p.add_argument("--lora-r", type=int, default=0, help="train a LoRA adapter of this rank, as the recipe does (default 0: full fine-tune)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1; 0 = torch's default). See docs/benchmarks.md: on a shared 2-core machine, 2 threads stall on a busy core")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS), metavar="NAME", help=f"subset of {list(CONFIGS)}")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.repeats < 1:
        p.error("--steps and --repeats must be >= 1, --warmup >= 0")
    if args.hidden % 32:
        p.error("--hidden must be a multiple of 32 (head_dim 32)")
    if BASELINE not in args.configs:
        args.configs = [BASELINE, *args.configs]
    return args


def load_data():
    from trainyard.data.loading import load_examples
    from trainyard.spec import DataSpec

    ds, _, stats = load_examples(DataSpec(source="fixture:strandset_rust", format="strandset_rust", eval_size=0))
    return ds, stats


def build_model(tokenizer, hidden: int, layers: int, max_length: int, seed: int):
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    heads = max(2, hidden // 32)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=3 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads // 2 if heads % 2 == 0 else heads,
        head_dim=hidden // heads,
        max_position_embeddings=max(4096, max_length),
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def run_once(name: str, args: argparse.Namespace, tokenizer, train_ds, outdir: str) -> dict[str, Any]:
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    per_step: list[dict[str, int]] = []  # one entry per training_step call (grad_accum = 1)
    step_end: dict[int, float] = {}

    class CountingTrainer(SFTTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            ids = inputs["input_ids"]
            mask = inputs.get("attention_mask")
            per_step.append({
                "slots": ids.numel(),  # positions computed, padding included
                "tokens": int(mask.sum()) if mask is not None else ids.numel(),  # padding-free: no padding
                "loss_tokens": int((inputs["labels"] != -100).sum()),
                "rows": ids.shape[0],
                "row_len": ids.shape[1],
            })
            return super().training_step(model, inputs, num_items_in_batch)

    class Clock(TrainerCallback):
        def on_train_begin(self, a, state, control, **kw):
            step_end[0] = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            step_end[state.global_step] = time.perf_counter()

    model = build_model(tokenizer, args.hidden, args.layers, args.max_length, args.seed)
    peft_config = None
    if args.lora_r:
        from peft import LoraConfig

        peft_config = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    cfg = SFTConfig(
        output_dir=outdir,
        max_steps=args.warmup + args.steps,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=1e-4,
        lr_scheduler_type="constant",
        warmup_steps=0,
        seed=args.seed,
        data_seed=args.seed,
        max_length=args.max_length,
        completion_only_loss=True,
        gradient_checkpointing=False,
        use_cpu=True,
        bf16=False,
        fp16=False,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        # "non_padding" counts attention_mask (or input_ids != pad); "all"/True counts padding too.
        include_num_input_tokens_seen="non_padding",
        **CONFIGS[name],
    )
    t0 = time.perf_counter()
    trainer = CountingTrainer(model=model, args=cfg, train_dataset=train_ds, processing_class=tokenizer, peft_config=peft_config, callbacks=[Clock()])
    setup_s = time.perf_counter() - t0
    with contextlib.redirect_stdout(io.StringIO()):  # Trainer prints its final metrics dict
        out = trainer.train()
    w, n = args.warmup, args.warmup + args.steps
    timed = per_step[w:n]
    seconds = step_end[n] - step_end[w]
    tokens = sum(s["tokens"] for s in timed)
    slots = sum(s["slots"] for s in timed)
    hf_seen = int(trainer.state.num_input_tokens_seen)
    result = {
        "config": name,
        "attn_implementation": trainer.model.config._attn_implementation,
        "padding_free": bool(getattr(trainer, "padding_free", False)),
        "train_rows": len(trainer.train_dataset),
        "setup_s": setup_s,
        "timed_s": seconds,
        "train_s": float(out.metrics.get("train_runtime", float("nan"))),
        "timed_steps": len(timed),
        "tokens": tokens,
        "padded_slots": slots,
        "loss_tokens": sum(s["loss_tokens"] for s in timed),
        "padding_fraction": 1 - tokens / slots if slots else 0.0,
        "tokens_per_s": tokens / seconds,
        "slots_per_s": slots / seconds,
        "steps_per_s": len(timed) / seconds,
        "mean_rows_x_len": f"{statistics.mean(s['rows'] for s in timed):.1f}×{statistics.mean(s['row_len'] for s in timed):.0f}",
        "hf_non_padding_tokens_all_steps": hf_seen,
        "our_tokens_all_steps": sum(s["tokens"] for s in per_step),
        "final_loss": float(out.training_loss),
    }
    del trainer, model
    return result


def summarize(runs: list[dict[str, Any]], configs: list[str]) -> list[dict[str, Any]]:
    """Per config: median and min/max over repeats; ratios are paired per repeat (each run vs the
    no-packing run of the same interleaved round), then the median and min/max of those."""
    base = {r["repeat"]: r for r in runs if r["config"] == BASELINE}
    rows = []
    for name in configs:
        rs = [r for r in runs if r["config"] == name]
        tps = [r["tokens_per_s"] for r in rs]
        secs = [r["timed_s"] for r in rs]
        ratios = [r["tokens_per_s"] / base[r["repeat"]]["tokens_per_s"] for r in rs]
        rows.append({
            "config": name,
            "runs": len(rs),
            "tokens_per_s_median": statistics.median(tps),
            "tokens_per_s_min": min(tps),
            "tokens_per_s_max": max(tps),
            "timed_s_median": statistics.median(secs),
            "timed_s_min": min(secs),
            "timed_s_max": max(secs),
            "tokens_per_step": rs[0]["tokens"] / rs[0]["timed_steps"],
            "padding_fraction": rs[0]["padding_fraction"],
            "batch_shape": rs[0]["mean_rows_x_len"],
            "ratio_vs_baseline_median": statistics.median(ratios),
            "ratio_vs_baseline_min": min(ratios),
            "ratio_vs_baseline_max": max(ratios),
        })
    return rows


def markdown_table(rows: list[dict[str, Any]], steps: int) -> str:
    head = (
        f"| config | non-padding tokens/s, median (min–max) | × no packing, paired per repeat | s for {steps} steps, median (min–max) | tokens/step | batch (rows×len) | padding |\n"
        "|---|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['tokens_per_s_median']:,.0f} ({r['tokens_per_s_min']:,.0f}–{r['tokens_per_s_max']:,.0f}) "
            f"| {r['ratio_vs_baseline_median']:.2f}× ({r['ratio_vs_baseline_min']:.2f}–{r['ratio_vs_baseline_max']:.2f}) "
            f"| {r['timed_s_median']:.1f} ({r['timed_s_min']:.1f}–{r['timed_s_max']:.1f}) "
            f"| {r['tokens_per_step']:,.0f} | {r['batch_shape']} | {r['padding_fraction']:.0%} |"
        )
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    import torch
    import transformers
    import trl

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    import torch
    from datasets.utils.logging import disable_progress_bar
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from trainyard.fixtures.tiny_model import ensure_tiny_model

    if args.threads:
        torch.set_num_threads(args.threads)
    disable_progress_bar()
    hf_logging.set_verbosity_error()
    logging.getLogger("trainyard").setLevel(logging.ERROR)

    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_model())
    train_ds, stats = load_data()
    env = environment()
    n_params = sum(p.numel() for p in build_model(tokenizer, args.hidden, args.layers, args.max_length, args.seed).parameters())
    print(
        f"# SFT packing benchmark: Qwen3 hidden={args.hidden} layers={args.layers} ({n_params / 1e6:.2f}M params), "
        f"{'LoRA r=' + str(args.lora_r) if args.lora_r else 'full fine-tune'}, fp32 CPU, batch {args.batch_size}, max_length {args.max_length}, "
        f"{args.warmup} warm-up + {args.steps} timed steps, {args.repeats} repeats interleaved; "
        f"data: {stats.examples} Strandset-Rust fixture examples; torch {env['torch']} ({env['torch_threads']} threads), "
        f"transformers {env['transformers']}, trl {env['trl']}",
        flush=True,
    )
    runs: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_sft_packing-") as tmp:
        for rep in range(args.repeats):
            for name in args.configs:
                r = run_once(name, args, tokenizer, train_ds, os.path.join(tmp, f"{rep}-{name.replace(' ', '_')}"))
                r["repeat"] = rep
                runs.append(r)
                print(
                    f"  rep {rep + 1}/{args.repeats} {name:<16} {r['tokens_per_s']:>8,.0f} tok/s  {r['timed_s']:6.2f} s  "
                    f"{r['tokens']:>7,} tokens ({r['padding_fraction']:.0%} padding)  setup {r['setup_s']:.1f} s  loss {r['final_loss']:.3f}",
                    flush=True,
                )
    total_s = time.perf_counter() - t_all
    rows = summarize(runs, args.configs)
    print()
    print(markdown_table(rows, args.steps))
    print()
    seen_ok = all(r["hf_non_padding_tokens_all_steps"] == r["our_tokens_all_steps"] for r in runs)
    print(
        f"attention: {runs[0]['attn_implementation']}; padding-free batches: "
        f"{', '.join(n for n in args.configs if next(r for r in runs if r['config'] == n)['padding_free']) or 'none'}; "
        f"HF include_num_input_tokens_seen='non_padding' agrees with our count: {seen_ok}; total {total_s:.0f} s"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "environment": env, "parameters": n_params, "data_examples": stats.examples, "total_s": total_s, "summary": rows, "runs": runs}, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
