"""Cost and time of a matrix before it is submitted (HF Jobs flavors).

    tokens   = examples x epochs x mean tokens per example   (or max_steps x batch x accum x mean)
    duration = startup + max(tokens / throughput, micro-batches x 0.1 s)   (throughput: flavor, model size, method)
    cost     = price per hour x min(duration, timeout);  worst case = price x timeout

Mean tokens per example are measured on a data sample: the run's own file / fixture, or
the bundled fixture of its row format (for Hub datasets, which a dry run does not
download), counted with the model's tokenizer when its tokenizer.json is in the local HF
cache, else at 4 characters per token. Throughput comes from the matrix's own finished runs
on the same flavor and model when there are some (their measured train/tokens_per_second),
else from a FLOPs model: peak bf16 tensor FLOP/s of the flavor's GPU x an assumed MFU /
FLOPs per token (6N full fine-tune, 4N LoRA: no weight gradients for the frozen base, +2N
for DPO's reference forward, +2N with gradient checkpointing). It is a planning figure,
good to a factor of ~2; the worst case at the timeout is what the budget is checked against.

Prices: `HfApi.list_jobs_hardware()` when online, else the dated table below.
Torch-free.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainyard.spec import RunSpec, duration_seconds

PRICES_AS_OF = "2026-12-01"
# USD per hour, from https://huggingface.co/docs/hub/jobs-pricing (billed per minute).
PRICES_USD_PER_HOUR: dict[str, float] = {
    "cpu-basic": 0.01, "cpu-upgrade": 0.03, "cpu-xl": 1.00, "cpu-performance": 1.90,
    "t4-small": 0.40, "t4-medium": 0.60, "l4x1": 0.80, "l4x4": 3.80,
    "l40sx1": 1.80, "l40sx4": 8.30, "l40sx8": 23.50,
    "a10g-small": 1.00, "a10g-large": 1.50, "a10g-largex2": 3.00, "a10g-largex4": 5.00,
    "a100-large": 2.50, "a100x4": 10.00, "a100x8": 20.00,
    "h200": 5.00, "h200x2": 10.00, "h200x4": 20.00, "h200x8": 40.00,
}
# Dense bf16 (T4: fp16) tensor peak of one GPU, TFLOP/s, from NVIDIA's data sheets.
GPU_PEAK_TFLOPS = {"t4": 65.0, "l4": 121.0, "l40s": 362.0, "a10g": 125.0, "a100": 312.0, "h200": 989.0}
# Model FLOPs utilisation assumed for LoRA / full fine-tunes of this size class: small
# models keep big GPUs busy for a smaller share of the time.
MFU_SMALL, MFU_LARGE, SMALL_MODEL = 0.15, 0.30, 1.5e9
QUANTIZED_SLOWDOWN = 0.7  # 4-bit bases dequantize every matmul
MIN_STEP_S = 0.1  # floor per forward+backward micro-batch (kernel launches, optimizer), assumed
STARTUP_S = 6 * 60  # image pull, wheel install, model + data download
CHARS_PER_TOKEN = 4.0
SAMPLE_ROWS = 64
KNOWN_SIZES = {"distilgpt2": 82e6, "gpt2": 124e6, "gpt2-medium": 355e6, "gpt2-large": 774e6, "gpt2-xl": 1.5e9}


def hourly_prices(api=None) -> tuple[dict[str, float], str]:
    """{flavor: USD/hour} and where they came from: the Hub's hardware list, or the dated table."""
    if api is not None:
        try:
            prices = {}
            for hw in api.list_jobs_hardware():
                per = {"minute": 60, "hour": 1, "second": 3600}.get(str(hw.unit_label).lower())
                if per:
                    prices[hw.name] = hw.unit_cost_usd * per
            if prices:
                return prices, "list_jobs_hardware()"
        except Exception:  # offline, no token, old server: the table below
            pass
    return dict(PRICES_USD_PER_HOUR), f"offline price table of {PRICES_AS_OF}"


def gpu_of(flavor: str) -> tuple[str | None, int]:
    """'a100x4' -> ('a100', 4), 'a10g-largex2' -> ('a10g', 2), 'cpu-basic' -> (None, 0)."""
    m = re.match(r"^(t4|l4|l40s|a10g|a100|h200)", flavor)
    if not m:
        return None, 0
    count = re.search(r"x(\d+)$", flavor)
    return m.group(1), int(count.group(1)) if count else 1


def model_parameters(spec: RunSpec) -> float | None:
    if spec.architecture is not None:
        from trainyard.arch import count_config_parameters

        return float(count_config_parameters(spec.architecture))
    name = spec.model.name.rstrip("/").rsplit("/", 1)[-1]
    if name.lower() in KNOWN_SIZES:
        return KNOWN_SIZES[name.lower()]
    m = re.search(r"(\d+(?:\.\d+)?)\s*([BM])\b", name.replace("-", " ").replace("_", " "), re.IGNORECASE)
    if not m:
        return None
    return float(m.group(1)) * (1e9 if m.group(2).upper() == "B" else 1e6)


def flops_per_token(spec: RunSpec, params: float) -> float:
    per = (4 if spec.lora else 6) * params
    if spec.recipe == "dpo":
        per += 2 * params  # the reference model's forward pass
    if spec.train.gradient_checkpointing:
        per += 2 * params  # the forward is recomputed
    return per


def gpus_used(spec: RunSpec, flavor_gpus: int) -> int:
    """GPUs a run trains on. One process today; multi-GPU launch swaps this in."""
    return min(1, flavor_gpus) if flavor_gpus else 0


def table_throughput(spec: RunSpec) -> tuple[float | None, str]:
    gpu, n = gpu_of(spec.resources.flavor)
    params = model_parameters(spec)
    if gpu is None:
        return None, f"no throughput for {spec.resources.flavor} (CPU flavors are not modelled)"
    if params is None:
        return None, f"model size of {spec.model.name!r} unknown"
    mfu = MFU_SMALL if params < SMALL_MODEL else MFU_LARGE
    tps = gpus_used(spec, n) * GPU_PEAK_TFLOPS[gpu] * 1e12 * mfu / flops_per_token(spec, params)
    if spec.quantization is not None:
        tps *= QUANTIZED_SLOWDOWN
    return tps, f"FLOPs model: {gpu} {GPU_PEAK_TFLOPS[gpu]:g} TFLOP/s x MFU {mfu:g}, {params / 1e9:.3g}B params"


def measured_throughput(spec: RunSpec, runs_root: Path | None) -> float | None:
    """Median train/tokens_per_second of this matrix's finished runs on the same flavor and model."""
    if runs_root is None or not (runs_root / spec.matrix).is_dir():
        return None
    seen = []
    for d in sorted((runs_root / spec.matrix).iterdir()):
        try:
            other = RunSpec.from_json((d / "spec.json").read_text())
            tps = json.loads((d / "metrics.json").read_text()).get("train/tokens_per_second")
        except Exception:
            continue
        same = other.resources.flavor == spec.resources.flavor and other.model.name == spec.model.name and bool(other.lora) == bool(spec.lora)
        if same and isinstance(tps, (int, float)) and math.isfinite(tps) and tps > 0:
            seen.append(float(tps))
    return statistics.median(seen) if seen else None


# ----------------------------------------------------------------------------- tokens


def _sample_rows(spec: RunSpec) -> tuple[list[dict[str, Any]], str]:
    from trainyard.data.formats import get_format
    from trainyard.fixtures import fixture_for_source, fixture_path

    src = spec.data.source
    candidates = []
    if src.startswith("fixture:"):
        candidates.append((fixture_path(src.removeprefix("fixture:")), f"fixture {src.removeprefix('fixture:')}"))
    elif Path(src).expanduser().is_file() and src.endswith((".jsonl", ".json")):
        candidates.append((Path(src).expanduser(), src))
    fx = fixture_for_source(src) or get_format(spec.data.format).fixture
    candidates.append((fixture_path(fx), f"bundled {fx} sample"))
    for path, label in candidates:
        rows = _read_rows(path)
        if rows:
            return rows, label
    return [], "no sample"


def _read_rows(path: Path) -> list[dict[str, Any]]:
    try:
        if path.suffix == ".jsonl":
            rows = []
            with open(path) as fh:
                for line in fh:
                    if line.strip():
                        rows.append(json.loads(line))
                    if len(rows) >= SAMPLE_ROWS:
                        break
            return rows
        data = json.loads(path.read_text())
        return [r for r in data if isinstance(r, dict)][:SAMPLE_ROWS] if isinstance(data, list) else []
    except Exception:
        return []


def _texts(example: Any) -> list[str]:
    if isinstance(example, str):
        return [example]
    if isinstance(example, dict):
        return [t for v in example.values() for t in _texts(v)]
    if isinstance(example, list):
        return [t for v in example for t in _texts(v)]
    return []


def _counter(spec: RunSpec):
    """Token counter: the model's cached tokenizer.json (no download), else chars / 4."""
    try:
        from huggingface_hub import try_to_load_from_cache
        from tokenizers import Tokenizer

        path = try_to_load_from_cache(spec.model.tokenizer or spec.model.name, "tokenizer.json")
        if isinstance(path, str):
            tok = Tokenizer.from_file(path)
            return (lambda text: len(tok.encode(text, add_special_tokens=False).ids)), "tokenizer"
    except Exception:
        pass
    return (lambda text: math.ceil(len(text) / CHARS_PER_TOKEN)), f"{CHARS_PER_TOKEN:g} chars/token"


def mean_tokens_per_example(spec: RunSpec) -> tuple[float | None, str]:
    from trainyard.data.formats import get_format

    rows, where = _sample_rows(spec)
    fmt = get_format(spec.data.format)
    count, how = _counter(spec)
    lengths = []
    for row in rows:
        try:
            ex = fmt.convert(row, spec.data.text_field)
        except Exception:
            continue
        if not ex:
            continue
        if spec.recipe == "dpo" and isinstance(ex, dict):  # prompt + chosen and prompt + rejected
            prompt = count(" ".join(_texts(ex.get("prompt"))))
            n = 2 * prompt + count(" ".join(_texts(ex.get("chosen")))) + count(" ".join(_texts(ex.get("rejected"))))
        else:
            n = count(" ".join(_texts(ex)))
        lengths.append(min(n, spec.train.max_length * (2 if spec.recipe == "dpo" else 1)))
    if not lengths:
        return None, f"no rows of {spec.data.format} to measure"
    return statistics.fmean(lengths), f"{len(lengths)} rows of the {where}, {how}"


def estimated_tokens(spec: RunSpec) -> tuple[float | None, float | None, str]:
    """(training tokens, examples trained on, how they were counted)."""
    mean, how = mean_tokens_per_example(spec)
    if mean is None:
        return None, None, how
    t = spec.train
    if t.max_steps:
        examples = t.max_steps * t.batch_size * t.grad_accum
        return examples * mean, examples, f"{t.max_steps} steps x {t.batch_size * t.grad_accum} examples x {mean:.0f} tokens ({how})"
    if not spec.data.limit:
        return None, None, "data.limit unset: the dataset size is not known before download"
    examples = spec.data.limit * t.epochs
    return examples * mean, examples, f"{spec.data.limit:,} examples x {t.epochs:g} epochs x {mean:.0f} tokens ({how})"


# ----------------------------------------------------------------------------- estimate


@dataclass
class Estimate:
    run: str
    flavor: str
    timeout_s: int
    price_per_hour: float | None
    tokens: float | None = None
    tokens_per_second: float | None = None
    duration_s: float | None = None  # expected, startup included
    notes: list[str] = field(default_factory=list)

    @property
    def billed_s(self) -> float | None:
        return None if self.duration_s is None else min(self.duration_s, self.timeout_s)

    @property
    def cost_usd(self) -> float | None:
        if self.price_per_hour is None or self.billed_s is None:
            return None
        return self.price_per_hour * self.billed_s / 3600

    @property
    def worst_usd(self) -> float | None:
        return None if self.price_per_hour is None else self.price_per_hour * self.timeout_s / 3600

    @property
    def hits_timeout(self) -> bool:
        return self.duration_s is not None and self.duration_s > self.timeout_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.run, "flavor": self.flavor, "tokens": self.tokens, "tokens_per_second": self.tokens_per_second,
            "duration_s": self.duration_s, "timeout_s": self.timeout_s, "usd_per_hour": self.price_per_hour,
            "cost_usd": self.cost_usd, "worst_case_usd": self.worst_usd, "notes": self.notes,
        }


def estimate(spec: RunSpec, prices: dict[str, float], runs_root: Path | None = None) -> Estimate:
    e = Estimate(spec.name, spec.resources.flavor, duration_seconds(spec.resources.timeout), prices.get(spec.resources.flavor))
    if e.price_per_hour is None:
        e.notes.append(f"no price known for {spec.resources.flavor}")
    e.tokens, examples, how = estimated_tokens(spec)
    e.notes.append(how)
    measured = measured_throughput(spec, runs_root)
    if measured is not None:
        e.tokens_per_second, source = measured, "measured on this matrix's finished runs"
    else:
        e.tokens_per_second, source = table_throughput(spec)
    e.notes.append(source)
    if e.tokens is not None and e.tokens_per_second:
        compute_s = e.tokens / e.tokens_per_second
        if measured is None:  # small batches of short rows are launch-bound, not FLOP-bound
            compute_s = max(compute_s, examples / spec.train.batch_size * MIN_STEP_S)
        e.duration_s = STARTUP_S + compute_s
    if e.hits_timeout:
        e.notes.append("expected to run past resources.timeout: it would be stopped there (raise the timeout)")
    return e


@dataclass
class Plan:
    estimates: list[Estimate]
    price_source: str

    @property
    def total_usd(self) -> float | None:
        costs = [e.cost_usd for e in self.estimates]
        return None if any(c is None for c in costs) else sum(costs)

    @property
    def total_worst_usd(self) -> float | None:
        worst = [e.worst_usd for e in self.estimates]
        return None if any(w is None for w in worst) else sum(worst)

    @property
    def total_duration_s(self) -> float | None:
        d = [e.billed_s for e in self.estimates]
        return None if any(x is None for x in d) else sum(d)


def plan(specs: list[RunSpec], prices: dict[str, float], price_source: str, runs_root: Path | None = None) -> Plan:
    return Plan([estimate(s, prices, runs_root) for s in specs], price_source)


def budget_problems(specs: list[RunSpec], p: Plan, matrix_budget: float | None, where: str = "") -> list[str]:
    """Runs (and the matrix) whose worst case exceeds their budget, with the figures."""
    problems = []
    by_name = {e.run: e for e in p.estimates}
    for s in specs:
        budget, e = s.resources.budget_usd, by_name[s.name]
        if budget is None:
            continue
        if e.worst_usd is None:
            problems.append(f"{where}run {s.name!r} | key 'resources.budget_usd': ${budget:.2f} cannot be checked: no price known for {e.flavor} ({p.price_source})")
        elif e.worst_usd > budget:
            problems.append(
                f"{where}run {s.name!r} | key 'resources.budget_usd': worst case ${e.worst_usd:.2f} ({e.flavor} at ${e.price_per_hour:.2f}/h "
                f"x timeout {fmt_duration(e.timeout_s)}) exceeds the budget ${budget:.2f}; lower resources.timeout or raise the budget"
            )
    if matrix_budget is not None:
        total = p.total_worst_usd
        if total is None:
            problems.append(f"{where}key 'budget_usd': ${matrix_budget:.2f} cannot be checked: a run's flavor has no known price ({p.price_source})")
        elif total > matrix_budget:
            problems.append(
                f"{where}key 'budget_usd': worst case of the {len(specs)} run(s) to submit is ${total:.2f} (price x timeout, summed) "
                f"and exceeds the matrix budget ${matrix_budget:.2f}; submit fewer runs (--only), lower resources.timeout, or raise budget_usd"
            )
    return problems


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes = round(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def fmt_usd(v: float | None) -> str:
    return "?" if v is None else f"${v:,.2f}"


def fmt_tokens(v: float | None) -> str:
    if v is None:
        return "?"
    return f"{v / 1e9:.2f}B" if v >= 1e9 else f"{v / 1e6:.1f}M" if v >= 1e6 else f"{v / 1e3:.0f}k"
