"""CUDA checks, meant for whenever a GPU machine is at hand (under 8 minutes on one H200):

    python -m trainyard.bench --gpu [--out DIR] [--skip compile]

1. every shipped recipe, one short --smoke run on CUDA (bf16), the DPO one on a 4-bit base
   (bitsandbytes): state completed, finite loss, precision and attention recorded;
2. packing correctness on CUDA with the attention implementation in use (FlashAttention
   varlen if flash-attn is installed, else SDPA): packed loss == examples scored alone;
3. SFT tokens/s, trainyard vs TRL defaults and TRL + group_by_length (bench model, bf16);
   with `train.use_liger_kernel` (when liger-kernel is installed) and `train.torch_compile`;
4. the 25,269,120-parameter SLM's tokens/s and bf16 MFU against a bf16 GEMM peak measured
   on the same GPU (and against the card's nominal dense bf16 peak where known).

Writes <out>/gpu_benchmarks.json. Without CUDA it prints why and exits 0 (nothing to do).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NOMINAL_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}
ROOT = Path(__file__).resolve().parents[3]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def recipe_runs(work: Path) -> list[dict[str, Any]]:
    from trainyard.bench.common import python, run_timed, thread_env
    from trainyard.fixtures.tiny_model import ensure_tiny_model
    from trainyard.matrix import load_matrix
    from trainyard.smoke import smoke_spec

    tiny = str(ensure_tiny_model())
    out = []
    for matrix in sorted((ROOT / "jobs").glob("*.yaml")):
        original = load_matrix(matrix).runs[0]
        spec = smoke_spec(original, tiny)
        if original.quantization is not None:  # keep the 4-bit base (smoke drops it for CPU)
            spec = spec.model_copy(update={"quantization": original.quantization})
        path = work / f"{matrix.stem}.json"
        path.write_text(spec.to_json())
        run_dir = work / matrix.stem
        t = run_timed([python(), "-m", "trainyard.run", "--spec", str(path), "--run-dir", str(run_dir)], thread_env(8), timeout=300)
        status = json.loads((run_dir / "status.json").read_text()) if (run_dir / "status.json").is_file() else {}
        metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
        loss = metrics.get("train/loss")
        row = {"matrix": matrix.stem, "recipe": spec.recipe, "quantization": bool(spec.quantization), "state": status.get("state"),
               "returncode": t.returncode, "wall_s": t.wall_s, "train_loss": loss,
               "finite_loss": isinstance(loss, float) and math.isfinite(loss), "tokens_per_s": metrics.get("train/tokens_per_second"),
               "reason": status.get("reason")}
        if t.returncode != 0:
            row["stderr_tail"] = t.stderr[-1500:]
        out.append(row)
        _log(f"  {matrix.stem}: {row['state']} loss={loss} in {t.wall_s:.0f}s")
    return out


def packing_check() -> dict[str, Any]:
    """Packed SFT batch on CUDA: the trainer's loss equals the examples scored alone."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from trainyard.data.loading import load_examples
    from trainyard.fixtures.tiny_model import ensure_tiny_model
    from trainyard.recipes.batching import (
        configure_packing,
        sft_packing_kwargs,
        uses_varlen_attention,
    )
    from trainyard.spec import DataSpec

    tiny = ensure_tiny_model()
    try:
        import flash_attn  # noqa: F401

        attn = "flash_attention_2"
    except ImportError:
        attn = "sdpa"
    model = AutoModelForCausalLM.from_pretrained(tiny, attn_implementation=attn, dtype=torch.bfloat16).cuda()
    ds, _, _ = load_examples(DataSpec(source="fixture:strandset_rust", format="strandset_rust", eval_size=0, limit=48))
    args = SFTConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=4, max_length=1024, report_to="none", bf16=True,
                     gradient_checkpointing=False, **sft_packing_kwargs(True))
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=AutoTokenizer.from_pretrained(tiny))
    configure_packing(trainer)
    batch = next(iter(trainer.get_train_dataloader()))
    model.eval()
    with torch.no_grad():
        packed = float(trainer.compute_loss(model, {k: v.cuda() if hasattr(v, "cuda") else v for k, v in batch.items()}))
        ids, labels, pos = batch["input_ids"].tolist(), batch["labels"].tolist(), batch["position_ids"].tolist()
        total, count = 0.0, 0
        for row_ids, row_labels, row_pos in zip(ids, labels, pos, strict=True):
            starts = [i for i, p in enumerate(row_pos) if p == 0] + [len(row_pos)]
            for a, b in zip(starts, starts[1:], strict=False):
                target = torch.tensor(row_labels[a:b][1:], device="cuda")
                keep = target != -100
                if not keep.any():
                    continue
                logits = model(input_ids=torch.tensor([row_ids[a:b]], device="cuda"), use_cache=False).logits[0, :-1].float()
                total += float(torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum"))
                count += int(keep.sum())
    alone = total / count
    return {"attention": attn, "varlen": uses_varlen_attention(model), "padding_free_batch": "attention_mask" not in batch and batch["input_ids"].shape[0] == 1,
            "packed_loss": packed, "examples_alone_loss": alone, "relative_difference": abs(packed - alone) / alone,
            "ok": abs(packed - alone) / alone < 2e-2}  # bf16 forward: agreement to bf16 precision


def sft_speed(work: Path, skip: set[str]) -> dict[str, Any]:
    from trainyard.bench import sft_case
    from trainyard.spec import RunSpec

    sft_case.prepare(work)
    for name in ("trl_defaults", "trl_group_by_length"):  # TRL's own GPU defaults (bf16 on)
        cfg = json.loads((work / f"{name}.json").read_text())
        cfg["args"].pop("bf16", None)
        cfg["use_cpu"] = False
        (work / f"{name}.json").write_text(json.dumps(cfg))
    res: dict[str, Any] = {}
    for side in sft_case.SIDES:
        res[side] = sft_case.run_side(side, work, 0, 8)
        _log(f"  sft {side}: {res[side]['tokens_per_s']:.0f} tok/s")
    base = RunSpec.from_json((work / "spec.json").read_text())
    variants = {}
    try:
        import liger_kernel  # noqa: F401

        variants["use_liger_kernel"] = {"use_liger_kernel": True}
    except ImportError:
        res["use_liger_kernel"] = "skipped: liger-kernel not installed"
    if "compile" not in skip:
        variants["torch_compile"] = {"torch_compile": True}
    for name, update in variants.items():
        spec = base.model_copy(update={"train": base.train.model_copy(update=update)})
        (work / "spec.json").write_text(spec.to_json())
        try:
            res[name] = sft_case.run_side("trainyard", work, name, 8)
            _log(f"  sft {name}: {res[name]['tokens_per_s']:.0f} tok/s")
        except RuntimeError as e:
            res[name] = f"failed: {str(e)[-800:]}"
    (work / "spec.json").write_text(base.to_json())
    ty = res["trainyard"]["tokens_per_s"]
    res["ratio_vs_trl_defaults"] = ty / res["trl_defaults"]["tokens_per_s"]
    res["ratio_vs_trl_group_by_length"] = ty / res["trl_group_by_length"]["tokens_per_s"]
    return res


def bf16_peak_tflops(seconds: float = 5.0) -> float:
    import torch

    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(10):
            a @ b
        stop.record()
        torch.cuda.synchronize()
        best = max(best, 10 * 2 * n**3 / (start.elapsed_time(stop) / 1e3) / 1e12)
    return best


def slm_mfu(work: Path) -> dict[str, Any]:
    import torch

    from trainyard.bench import pretrain_case
    from trainyard.bench.common import python, run_timed, thread_env

    batch, steps = 64, 40
    spec_path = pretrain_case._spec(work, batch=batch, steps=steps, precision="bf16")
    arch = json.loads(spec_path.read_text())["architecture"]
    peak = bf16_peak_tflops()
    run_dir = work / "slm"
    t = run_timed([python(), "-m", "trainyard.run", "--spec", str(spec_path), "--run-dir", str(run_dir)], thread_env(8), timeout=400)
    if t.returncode != 0:
        return {"error": t.stderr[-1500:]}
    m = json.loads((run_dir / "metrics.json").read_text())
    rate = pretrain_case._steady_tokens_per_s(run_dir, m, batch=batch)
    flops = 6 * int(m["model/parameters"]) + 12 * arch["num_layers"] * arch["hidden_size"] * pretrain_case.SEQ
    achieved = rate * flops / 1e12
    name = torch.cuda.get_device_name(0)
    nominal = next((v for k, v in NOMINAL_BF16_TFLOPS.items() if k in name), None)
    return {"gpu": name, "parameters": m["model/parameters"], "batch": batch, "seq": pretrain_case.SEQ, "steps": steps,
            "tokens_per_s": rate, "achieved_tflops": achieved, "measured_bf16_peak_tflops": peak,
            "mfu_vs_measured_peak": achieved / peak, "mfu_vs_nominal_peak": achieved / nominal if nominal else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainyard.bench --gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=".", help="directory for gpu_benchmarks.json")
    p.add_argument("--skip", nargs="*", default=[], choices=["recipes", "packing", "sft", "compile", "slm"])
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("trainyard.bench --gpu: no CUDA device here; nothing run (the CPU suite is `python -m trainyard.bench`)")
        return 0
    from trainyard.bench.common import machine

    skip = set(args.skip)
    work = Path(tempfile.mkdtemp(prefix="trainyard-gpu-bench-"))
    started = time.perf_counter()
    res: dict[str, Any] = {"machine": machine()}
    steps = [("recipes", lambda: recipe_runs(work / "recipes")), ("packing", packing_check),
             ("sft", lambda: sft_speed(work / "sft", skip)), ("slm", lambda: slm_mfu(work / "slm"))]
    for name, fn in steps:
        if name in skip:
            continue
        _log(f"[{time.perf_counter() - started:5.0f}s] {name}")
        (work / name).mkdir(parents=True, exist_ok=True)
        try:
            res[name] = fn()
        except Exception as e:  # record and go on: one broken case must not hide the others
            res[name] = {"error": f"{type(e).__name__}: {e}"}
    res["total_seconds"] = time.perf_counter() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_benchmarks.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    ok = all(r.get("state") == "completed" and r.get("finite_loss") for r in res.get("recipes", [])) and res.get("packing", {}).get("ok", True)
    _log(f"wrote {out / 'gpu_benchmarks.json'} in {res['total_seconds']:.0f}s; checks {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
