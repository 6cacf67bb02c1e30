"""SFT: trainyard's run entrypoint vs a plain TRL script on the same model, data and LoRA.

Sides (one process each, interleaved every round, the same threads):
- trainyard: `python -m trainyard.run --spec` with the recipe's defaults (length-grouped
  batches, gradient checkpointing off, tracking on, metrics/card/final/ written);
- TRL defaults: SFTConfig defaults (gradient checkpointing on, random batches);
- TRL + group_by_length: gradient checkpointing off and length-grouped batches, the best
  TRL setup without packing;
- trainyard packed: `train.packing: true` (examples kept apart), for the packing default.
Same loss on every side: completion-only token-weighted cross-entropy on the same
prompt/completion rows. Throughput = non-padding input tokens / training runtime (the
trainer's own count and clock, `train_runtime`, on every side); process wall time and fixed
overhead (wall - training) too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainyard.bench.common import (
    bench_model,
    last_json_line,
    paired,
    python,
    run_timed,
    spread,
    thread_env,
)

EXAMPLES = 96
BATCH = 8
MAX_LENGTH = 1024
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"}
SIDES = ("trainyard", "trl_defaults", "trl_group_by_length", "trainyard_packed")


def prepare(work: Path) -> dict[str, Any]:
    from trainyard.data.loading import load_examples
    from trainyard.spec import DataSpec, RunSpec

    model = bench_model(work / "model")
    data = DataSpec(source="fixture:strandset_rust", format="strandset_rust", limit=EXAMPLES, eval_size=0)
    ds, _, _ = load_examples(data)
    rows = work / "train.jsonl"
    rows.write_text("".join(json.dumps({"prompt": r["prompt"], "completion": r["completion"]}) + "\n" for r in ds))
    spec = RunSpec.model_validate({
        "name": "sft", "matrix": "bench", "recipe": "sft", "model": {"name": str(model)},
        "data": data.model_dump(mode="json"),
        "lora": {"r": LORA["r"], "alpha": LORA["lora_alpha"], "dropout": LORA["lora_dropout"], "target_modules": LORA["target_modules"]},
        "train": {"epochs": 1, "batch_size": BATCH, "max_length": MAX_LENGTH, "lr": 2e-4},
        "eval": {"strategy": "no"},
    })
    (work / "spec.json").write_text(spec.to_json())
    packed = spec.model_copy(update={"name": "sft-packed", "train": spec.train.model_copy(update={"packing": True})})
    (work / "spec-packed.json").write_text(packed.to_json())
    # bf16=False: TRL's configs default to bf16 autocast; trainyard trains fp32 on CPU
    # ("auto"), and both sides must compute the same loss.
    base = {"bf16": False, "per_device_train_batch_size": BATCH, "max_length": MAX_LENGTH, "learning_rate": 2e-4, "num_train_epochs": 1,
            "seed": spec.train.seed, "data_seed": spec.data.seed}
    configs = {
        "trl_defaults": base,
        "trl_group_by_length": {**base, "gradient_checkpointing": False, "train_sampling_strategy": "group_by_length"},
    }
    for name, args in configs.items():
        cfg = {"data": str(rows), "model": str(model), "output_dir": str(work / name), "lora": LORA, "args": args}
        (work / f"{name}.json").write_text(json.dumps(cfg))
    return {"examples": len(ds), "model": str(model), "spec": str(work / "spec.json")}


def run_side(side: str, work: Path, round_no: int, threads: int) -> dict[str, Any]:
    env = thread_env(threads)
    if side.startswith("trainyard"):
        run_dir = work / f"{side}-{round_no}"
        env["TRACKIO_DIR"] = str(work / "trackio")
        spec = work / ("spec-packed.json" if side == "trainyard_packed" else "spec.json")
        t = run_timed([python(), "-m", "trainyard.run", "--spec", str(spec), "--run-dir", str(run_dir)], env)
        if t.returncode != 0:
            raise RuntimeError(f"trainyard run failed:\n{t.stderr[-3000:]}")
        m = json.loads((run_dir / "metrics.json").read_text())
        # the Trainer's own train_runtime / train_loss, as the TRL side reports them: one
        # clock and one loss statistic on both sides (trainyard's train/mean_loss equals the
        # Trainer's train_loss on an uninterrupted run; the loss row checks it)
        end = next(e for e in reversed(json.loads((run_dir / "history.json").read_text())) if "train_runtime" in e)
        out = {"tokens": m["train/tokens"], "train_runtime": end["train_runtime"], "train_loss": end["train_loss"],
               "mean_loss": m["train/mean_loss"], "clock_runtime": m["train/runtime_s"], "padding_fraction": m.get("train/padding_fraction")}
    else:
        t = run_timed([python(), str(Path(__file__).with_name("trl_sft.py")), str(work / f"{side}.json")], env)
        if t.returncode != 0:
            raise RuntimeError(f"{side} failed:\n{t.stderr[-3000:]}")
        out = last_json_line(t.stdout)
    out["wall_s"] = t.wall_s
    out["tokens_per_s"] = out["tokens"] / out["train_runtime"]
    out["overhead_s"] = t.wall_s - out["train_runtime"]
    return out


def run(work: Path, rounds: int, threads: int, log=print) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    setup = prepare(work)
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in SIDES}
    for r in range(rounds):
        order = SIDES if r % 2 == 0 else tuple(reversed(SIDES))  # alternate who goes first
        for side in order:
            res = run_side(side, work, r, threads)
            results[side].append(res)
            log(f"  sft round {r + 1}/{rounds} {side}: {res['tokens_per_s']:.0f} tok/s, wall {res['wall_s']:.1f}s, loss {res['train_loss']:.6f}")
    tps = {s: [x["tokens_per_s"] for x in results[s]] for s in SIDES}
    wall_tps = {s: [x["tokens"] / x["wall_s"] for x in results[s]] for s in SIDES}
    return {
        "setup": {**setup, "batch_size": BATCH, "max_length": MAX_LENGTH, "lora": LORA, "rounds": rounds, "threads": threads},
        "tokens_per_s": {s: spread(v) for s, v in tps.items()},
        "ratio_vs_trl_defaults": paired(tps["trainyard"], tps["trl_defaults"]),
        "ratio_vs_trl_group_by_length": paired(tps["trainyard"], tps["trl_group_by_length"]),
        "packed_ratio_vs_unpacked": paired(tps["trainyard_packed"], tps["trainyard"]),
        "process_ratio_vs_trl_defaults": paired(wall_tps["trainyard"], wall_tps["trl_defaults"]),
        "process_ratio_vs_trl_group_by_length": paired(wall_tps["trainyard"], wall_tps["trl_group_by_length"]),
        "overhead_s": {s: spread([x["overhead_s"] for x in results[s]]) for s in SIDES},
        "overhead_minus_trl_s": paired_diff([x["overhead_s"] for x in results["trainyard"]], [x["overhead_s"] for x in results["trl_group_by_length"]]),
        "train_loss": {s: [x["train_loss"] for x in results[s]] for s in SIDES},
        "loss_diff_vs_trl_group_by_length": max(abs(a["train_loss"] - b["train_loss"]) for a, b in zip(results["trainyard"], results["trl_group_by_length"], strict=True)),
        "mean_loss_diff_vs_trainer_train_loss": max(abs(x["mean_loss"] - x["train_loss"]) for x in results["trainyard"]),
        "padding_fraction": results["trainyard"][0].get("padding_fraction"),
        "packed_padding_fraction": results["trainyard_packed"][0].get("padding_fraction"),
        "runs": results,
    }


def paired_diff(a: list[float], b: list[float]) -> dict[str, float]:
    return spread([x - y for x, y in zip(a, b, strict=True)])
