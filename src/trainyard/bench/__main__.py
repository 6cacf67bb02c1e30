"""python -m trainyard.bench [--cases sft eval pretrain launcher] [--rounds 3] [--out docs]
python -m trainyard.bench --gpu [--out DIR]      (CUDA checks; skips cleanly without a GPU)

Writes <out>/benchmarks.json (every measurement, machine, versions, date) and
<out>/benchmarks.md (the summary table). Measures; asserts nothing."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

CASES = ("sft", "eval", "pretrain", "launcher")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainyard.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per case (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of every side (default 1: a busy shared core stalls multi-thread ops)")
    p.add_argument("--out", default="docs", help="directory for benchmarks.json / benchmarks.md (default docs)")
    p.add_argument("--work", help="scratch directory (default: a temporary one)")
    p.add_argument("--gpu", action="store_true", help="run the CUDA checks instead (trainyard.bench.gpu)")
    args = p.parse_args(argv)
    if args.gpu:
        from trainyard.bench.gpu import main as gpu_main

        return gpu_main(["--out", args.out])
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    from trainyard.bench import common

    work = Path(args.work or tempfile.mkdtemp(prefix="trainyard-bench-"))
    started = time.perf_counter()
    results: dict = {"machine": {**common.machine(), "threads": args.threads}, "rounds": args.rounds}

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    for case in args.cases:
        log(f"[{time.perf_counter() - started:6.0f}s] {case}")
        t = time.perf_counter()
        if case == "sft":
            from trainyard.bench import sft_case

            results["sft"] = sft_case.run(work / "sft", args.rounds, args.threads, log)
        elif case == "eval":
            from trainyard.bench import eval_case

            results["eval"] = eval_case.run(work / "eval", args.rounds, log)
        elif case == "pretrain":
            from trainyard.bench import pretrain_case

            results["pretrain"] = pretrain_case.run(work / "pretrain", min(args.rounds, 2), args.threads, log)
        else:
            from trainyard.bench import launcher_case

            results["launcher"] = launcher_case.run(work / "launcher", 1, log)  # absolute times, not a comparison
        results.setdefault("case_seconds", {})[case] = time.perf_counter() - t
    results["total_seconds"] = time.perf_counter() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").write_text(json.dumps(results, indent=2) + "\n")
    from trainyard.bench.report import render

    (out / "benchmarks.md").write_text(render(results))
    log(f"wrote {out / 'benchmarks.json'} and {out / 'benchmarks.md'} in {results['total_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
