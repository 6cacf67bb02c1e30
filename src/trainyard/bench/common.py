"""Shared pieces of the benchmark cases: the benchmark model, paired statistics, the
machine description, subprocess runs pinned to the same threads."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The SFT model: a 3.7M-parameter Qwen3 on the tiny fixture tokenizer.
BENCH_QWEN3 = dict(hidden_size=256, intermediate_size=896, num_hidden_layers=4, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=64, max_position_embeddings=2048, tie_word_embeddings=True)


def bench_model(out: Path, seed: int = 0) -> Path:
    """A seeded random Qwen3 + the tiny fixture tokenizer, saved under `out` (reused)."""
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from trainyard.fixtures.tiny_model import ensure_tiny_model

    tok = AutoTokenizer.from_pretrained(ensure_tiny_model())
    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, **BENCH_QWEN3)
    model = Qwen3ForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def thread_env(threads: int) -> dict[str, str]:
    """Environment of every timed subprocess: same intra-op threads, offline, quiet."""
    t = str(threads)
    return {**os.environ, "OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t, "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error",
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}


@dataclass
class Timed:
    wall_s: float
    returncode: int
    stdout: str
    stderr: str


def run_timed(cmd: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 900) -> Timed:
    """Wall time of a whole process, interpreter start to exit."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return Timed(time.perf_counter() - start, proc.returncode, proc.stdout, proc.stderr)


def last_json_line(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"no JSON result line in output:\n{text[-2000:]}")


def spread(values: list[float]) -> dict[str, float]:
    """min / median / max of a list (the benchmark's one summary)."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def paired(numer: list[float], denom: list[float]) -> dict[str, float]:
    """Ratios of the same round's measurements, summarized: robust to machine drift."""
    return spread([a / b for a, b in zip(numer, denom, strict=True)])


def machine() -> dict[str, Any]:
    import torch
    import transformers
    import trl

    info: dict[str, Any] = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "host_cpus": os.cpu_count(),
        "cpu": _cpu_name(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    for name in ("peft", "datasets", "accelerate"):
        with contextlib.suppress(ImportError):
            info[name] = __import__(name).__version__
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def python() -> str:
    return sys.executable
