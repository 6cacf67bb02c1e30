"""docs/benchmarks.md from the suite's results (the JSON keeps every run)."""

from __future__ import annotations

from typing import Any

TARGETS = {
    "sft_vs_trl_defaults": 1.3,
    "sft_vs_trl_group_by_length": 1.0,
    "eval_vs_trainer_evaluate": 2.0,
    "pretrain_mfu": 0.60,
}


def _r(s: dict[str, float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})"


def render(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Written by `python -m trainyard.bench` (CPU cases; `--gpu` for the CUDA checks). Every figure is",
        "median (min–max) over interleaved rounds; ratios are paired (each round's sides divided),",
        "so machine drift cancels. The JSON next to this file holds every run.",
        "",
        f"- date (UTC): {m['date_utc']}; rounds: {res['rounds']}; torch threads per side: {m['threads']}",
        f"- machine: {m['cpu']}, {m['host_cpus']} CPUs, load average at start {m.get('loadavg_1m')}",
        f"- python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, trl {m['trl']}, peft {m.get('peft')}",
        "",
        "| figure | result | target |",
        "|---|---|---|",
    ]
    if "sft" in res:
        s = res["sft"]
        lines += [
            f"| SFT tokens/s, trainyard ÷ TRL defaults (paired) | {_r(s['ratio_vs_trl_defaults'])} | ≥ {TARGETS['sft_vs_trl_defaults']} |",
            f"| SFT tokens/s, trainyard ÷ TRL + group_by_length (paired) | {_r(s['ratio_vs_trl_group_by_length'])} | ≥ {TARGETS['sft_vs_trl_group_by_length']} |",
            f"| SFT whole process (tokens ÷ wall), ÷ TRL defaults | {_r(s['process_ratio_vs_trl_defaults'])} | |",
            f"| SFT whole process, ÷ TRL + group_by_length | {_r(s['process_ratio_vs_trl_group_by_length'])} | |",
            f"| per-run fixed overhead (wall − training), trainyard − TRL, s | {_r(s['overhead_minus_trl_s'], '{:.1f}')} | ≤ 1 |",
            f"| train loss, max abs. difference trainyard vs TRL + group_by_length | {s['loss_diff_vs_trl_group_by_length']:.2e} | same loss |",
            f"| trainyard padding fraction (`train/padding_fraction`): length-grouped / packed | {s['padding_fraction']:.3f} / {s['packed_padding_fraction']:.3f} | |",
            f"| SFT tokens/s, trainyard packed ÷ trainyard length-grouped (paired) | {_r(s['packed_ratio_vs_unpacked'])} | (packing default) |",
        ]
    if "eval" in res:
        for name, e in res["eval"].items():
            lines += [
                f"| eval ({name}) speed, Trainer.evaluate time ÷ trainyard time | {_r(e['speedup_vs_trainer_evaluate'])} | ≥ {TARGETS['eval_vs_trainer_evaluate']} |",
                f"| eval ({name}) loss rel. error vs float64: trainyard / Trainer.evaluate | {e['relative_error']['trainyard']:.1e} / {e['relative_error']['trainer_evaluate']:.1e} | exact |",
                f"| eval ({name}) peak RSS growth MB: trainyard / Trainer.evaluate | {e['peak_rss_growth_mb']['trainyard']:.0f} / {e['peak_rss_growth_mb']['trainer_evaluate']:.0f} | ≤ Trainer |",
            ]
    if "pretrain" in res:
        pt = res["pretrain"]
        lines += [
            f"| pretrain 25.3M SLM MFU vs measured fp32 matmul peak | {_r(pt['mfu_vs_measured_peak'])} | ≥ {TARGETS['pretrain_mfu']} |",
            f"| pretrain tokens/s ({pt['setup']['threads']} thread) / matmul peak GFLOP/s | {_r(pt['tokens_per_s'], '{:.0f}')} / {_r(pt['matmul_peak_gflops'], '{:.1f}')} | |",
        ]
    if "launcher" in res:
        for name, t in res["launcher"]["seconds"].items():
            lines.append(f"| launcher `{name}` ({res['launcher']['runs']} runs), s | {_r(t, '{:.1f}')} | |")
    lines += ["", f"Suite wall time: {res['total_seconds']:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in res.get('case_seconds', {}).items())}).", ""]
    lines += NOTES
    return "\n".join(lines) + "\n"


NOTES = [
    "## What each case measures",
    "",
    "- **SFT** (`trainyard/bench/sft_case.py`): a 4.1M-parameter Qwen3 (seeded random init, the",
    "  tiny fixture tokenizer), 96 Strandset-Rust fixture examples (long-tailed lengths), LoRA r16",
    "  on all linear layers, batch 8, max_length 1024, 1 epoch, fp32, completion-only loss on every",
    "  side. trainyard = `python -m trainyard.run` with the recipe's defaults (length-grouped batches,",
    "  gradient checkpointing off, Trackio on, metrics/card/final/ written); TRL defaults =",
    "  `SFTConfig` defaults (gradient checkpointing on) except `bf16=False` (TRL defaults to bf16",
    "  autocast; trainyard trains fp32 on CPU, and both sides must compute the same loss); TRL +",
    "  group_by_length = also gradient checkpointing off and `train_sampling_strategy=\"group_by_length\"`.",
    "  Tokens/s = non-padding input tokens ÷ the trainer's `train_runtime`. Each side is a fresh process,",
    "  sides alternate order every round. trainyard and TRL + group_by_length draw the same batches,",
    "  so their losses agree (the loss row).",
    "- **Eval** (`eval_case.py`): *sft* = the SFT recipe's final eval (`token_weighted_loss`: rows",
    "  longest first in token-budget batches, vocabulary projection only at target positions) vs",
    "  `SFTTrainer.evaluate()` on the same trainer and 104 held-out rows; *lm* = the LM recipes' scorer on",
    "  exactly the blocks `Trainer.evaluate()` gets (25.3M SLM, vocab 32,000, 256-token blocks). Loss",
    "  error against a float64 copy of the model scoring each example alone. `Trainer.evaluate` averages",
    "  batch means (not token-weighted), hence its error on long-tailed sets. On equal-length blocks",
    "  there is no padding to skip, so the two do the same work: the 2× target is an SFT-eval figure.",
    "- **Pretrain** (`pretrain_case.py`): the shipped `slm_wikitext103` architecture (25,269,120",
    "  parameters) through `python -m trainyard.run` on the WikiText fixture, batch 8 × 256, fp32; MFU =",
    "  (6·N + 12·layers·hidden·seq) FLOPs/token × steady tokens/s (after step 1) ÷ the best fp32 GEMM",
    "  rate measured in the same round on the model's own shapes.",
    "- **Launcher** (`launcher_case.py`): whole `launch.py` processes on a generated 1,000-run grid:",
    "  `validate`, `--backend k8s --dry-run` (1,000 Job manifests rendered and validated), `status`",
    "  over 1,000 run directories.",
]
