"""The model card of a run (README.md), built with huggingface_hub's ModelCardData.

Metadata: a `model-index` with one EvalResult per finite eval metric of metrics.json
(eval/<set>/<measure>, tatqa/, judge/, ifeval/), pipeline_tag text-generation,
library_name peft | transformers, base_model only for a real Hub id (not a local path,
the --smoke tiny model or a from-scratch model), the base model's license when known,
tags, and the metadata PEFT wrote into final/README.md (merged: its keys stay unless we set
them, tags are united). Body: outcome (a failed / diverged run says so, with the reason),
hyperparameters, metrics, the loss curve, the Trackio link, how to load it, and the
command that reproduces it from the matrix file it came from.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainyard.contract import parse_eval_metric
from trainyard.spec import RunSpec, is_local_path

if TYPE_CHECKING:
    from trainyard.run_dir import RunDir

LOSS_CURVE = "loss_curve.png"
TRL_RECIPES = ("sft", "dpo")
# Metric families of metrics.json that are evaluation results (the *_before/ ones describe the base model).
EVAL_FAMILIES = ("tatqa/", "judge/", "ifeval/")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")


def hub_base_model(spec: RunSpec) -> str | None:
    """The base model's Hub id, or None (from scratch, --smoke, a local directory)."""
    name = spec.model.name
    if spec.smoke or spec.architecture is not None or is_local_path(name) or not _HUB_ID.match(name):
        return None
    return name


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def eval_results(spec: RunSpec, metrics: dict[str, Any]):
    """One EvalResult per finite eval metric, with the dataset it was measured on."""
    from huggingface_hub import EvalResult

    d = spec.data
    held_out_split = d.eval_split or f"{d.split} (held out: {d.eval_size:g})"
    sets = {e.name: e for e in spec.eval.datasets}
    out = []
    for key in sorted(metrics):
        value = metrics[key]
        if not _finite(value):
            continue
        parsed = parse_eval_metric(key)
        if parsed is not None:
            name, measure = parsed
            if name in sets:
                e = sets[name]
                source, config, split = e.source, e.config, e.split
            else:
                source, config, split = d.source, d.config, held_out_split
        elif key.startswith(EVAL_FAMILIES):
            family, measure = key.split("/", 1)
            name = family
            if family == "judge" and spec.eval.judge is not None:
                source, config, split = spec.eval.judge.questions, None, spec.eval.judge.split
            elif family == "ifeval" and spec.eval.ifeval is not None:
                source, config, split = spec.eval.ifeval.prompts, None, spec.eval.ifeval.split
            else:
                source, config, split = d.source, d.config, d.eval_split or d.split
        else:
            continue
        out.append(
            EvalResult(
                task_type="text-generation",
                task_name="Text generation",
                dataset_type=source,
                dataset_name=f"{name} ({Path(source).name if is_local_path(source) else source})",
                dataset_config=config,
                dataset_split=split,
                metric_type=measure.replace("/", "_"),
                metric_name=f"{name} {measure}",
                metric_value=value,
            )
        )
    return out


def base_model_license(model_id: str | None) -> str | None:
    """The license in the base model's own card: the local HF cache first, then the Hub."""
    if model_id is None:
        return None
    try:
        from huggingface_hub import constants, metadata_load, try_to_load_from_cache

        path = try_to_load_from_cache(model_id, "README.md")
        if isinstance(path, str):
            return (metadata_load(path) or {}).get("license")
        if constants.HF_HUB_OFFLINE:
            return None
        from huggingface_hub import HfApi

        card = HfApi().model_info(model_id, expand=["cardData"]).card_data
        return getattr(card, "license", None) if card is not None else None
    except Exception:  # no card, gated, offline: the card just has no license line
        return None


def _peft_metadata(rundir: RunDir | None) -> dict[str, Any]:
    """The metadata PEFT's save_pretrained wrote into final/README.md (pipeline_tag, base_model:adapter: tag)."""
    if rundir is None or not (rundir.final / "README.md").is_file():
        return {}
    from huggingface_hub import metadata_load

    try:
        return metadata_load(rundir.final / "README.md") or {}
    except Exception:
        return {}


def card_metadata(spec: RunSpec, metrics: dict[str, Any], rundir: RunDir | None = None):
    from huggingface_hub import ModelCardData

    base = hub_base_model(spec)
    tags = ["trainyard", spec.recipe, *(["trl"] if spec.recipe in TRL_RECIPES else []), *(["peft", "lora"] if spec.lora else [])]
    if spec.smoke:
        tags.append("smoke-test")
    ours: dict[str, Any] = {
        "model_name": f"{spec.matrix}-{spec.name}",
        "base_model": base,
        "library_name": "peft" if spec.lora else "transformers",
        "pipeline_tag": "text-generation",
        "license": base_model_license(base),
        "datasets": [spec.data.source] if not spec.data.source.startswith("fixture:") and not is_local_path(spec.data.source) else None,
        "eval_results": eval_results(spec, metrics) or None,
    }
    peft = _peft_metadata(rundir)
    merged = {k: v for k, v in peft.items() if k not in ("model-index", "tags")}
    merged.update({k: v for k, v in ours.items() if v is not None})
    if base is None:
        merged.pop("base_model", None)  # PEFT writes the local path of a smoke / local base
    peft_tags = [t for t in peft.get("tags") or [] if base is not None or not str(t).startswith("base_model:")]
    merged["tags"] = list(dict.fromkeys([*peft_tags, *tags]))
    return ModelCardData(**merged)


def render_card(spec: RunSpec, metrics: dict[str, Any], state: str, *, rundir: RunDir | None = None, reason: str | None = None) -> str:
    from huggingface_hub import ModelCard

    data = card_metadata(spec, metrics, rundir)
    curve = rundir is not None and write_loss_curve(rundir, spec)
    body = "\n".join(
        [
            f"# {spec.matrix} / {spec.name}",
            "",
            spec.description or f"`{spec.recipe}` run of the `{spec.matrix}` matrix, trained with trainyard.",
            "",
            _outcome(state, reason),
            "",
            *_summary(spec),
            "",
            "## Hyperparameters",
            "",
            "| setting | value |",
            "|---|---|",
            *(f"| {k} | {_cell(v)} |" for k, v in hyperparameters(spec).items()),
            "",
            "## Metrics",
            "",
            "| metric | value |",
            "|---|---|",
            *(f"| `{k}` | {_fmt(v)} |" for k, v in sorted(metrics.items())),
            "",
            *([f"![training and eval loss]({LOSS_CURVE})", ""] if curve else []),
            f"Curves: {tracking_link(spec)}",
            "",
            "## How to load",
            "",
            "```python",
            *_load_snippet(spec),
            "```",
            "",
            "## Reproduce",
            "",
            f"`{reproduce_command(spec)}`",
            "",
        ]
    )
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def write_card(rundir: RunDir, spec: RunSpec, metrics: dict[str, Any], state: str, reason: str | None = None) -> Path:
    rundir.write_card(render_card(spec, metrics, str(state), rundir=rundir, reason=reason))
    return rundir.card_file


def _outcome(state: str, reason: str | None) -> str:
    if state == "completed":
        return "**Outcome:** completed."
    warn = {"diverged": "**Outcome: diverged.** The divergence guard stopped training (a non-finite loss, gradient or weight, or a loss spike); there are no final weights.",
            "failed": "**Outcome: failed.** The run did not finish; there are no final weights.",
            "canceled": "**Outcome: canceled** before it finished."}.get(state, f"**Outcome:** {state}.")
    return warn + (f" Reason: {reason}" if reason else "")


def _summary(spec: RunSpec) -> list[str]:
    base = hub_base_model(spec)
    if spec.architecture is not None:
        from trainyard.arch import describe

        model = f"trained from scratch (random init): {describe(spec.architecture)}"
    elif base is None:
        model = f"`{Path(spec.model.name).name}` (a local model" + (", the --smoke tiny Qwen3)" if spec.smoke else ")")
    else:
        model = f"[`{base}`](https://huggingface.co/{base})"
    method = f"LoRA r={spec.lora.r}, α={spec.lora.alpha}" if spec.lora else "full fine-tune" if spec.architecture is None else "pretraining"
    if spec.quantization:
        method += f" on a {spec.quantization.bits}-bit {spec.quantization.quant_type} base (QLoRA)"
    data = spec.data
    return [
        f"- **Base model:** {model}",
        f"- **Data:** `{data.source}`" + (f" ({data.config})" if data.config else "") + f", split `{data.split}`, format `{data.format}`" + (f", {data.limit:,} examples" if data.limit else ""),
        f"- **Method:** `{spec.recipe}`, {method}",
    ]


def hyperparameters(spec: RunSpec) -> dict[str, Any]:
    t = spec.train
    h: dict[str, Any] = {
        "learning rate": t.lr, "epochs": t.epochs, "max steps": t.max_steps, "batch size (per device)": t.batch_size,
        "gradient accumulation": t.grad_accum, "effective batch": t.batch_size * t.grad_accum,
        "scheduler": t.scheduler + (f" ({t.scheduler_cycles} cycles)" if t.scheduler_cycles else ""),
        "warmup": f"ratio {t.warmup_ratio:g}" if t.warmup_ratio else f"{t.warmup_steps} steps",
        "max length": t.max_length, "optimizer": t.optimizer, "weight decay": t.weight_decay, "max grad norm": t.max_grad_norm,
        "precision": t.precision, "packing": t.packing, "seed": t.seed,
    }
    if spec.lora:
        lo = spec.lora
        h.update({"LoRA r": lo.r, "LoRA α": lo.alpha, "LoRA dropout": lo.dropout, "LoRA targets": lo.target_modules})
    if spec.quantization:
        q = spec.quantization
        h["quantization"] = f"{q.bits}-bit {q.quant_type}, compute {q.compute_dtype}"
    for section in ("dpo", "mixed_loss"):
        sub = getattr(spec, section)
        if sub is not None:
            h.update({f"{section}.{k}": v for k, v in sub.model_dump().items() if v is not None})
    return {k: v for k, v in h.items() if v is not None}


def tracking_link(spec: RunSpec) -> str:
    t = spec.tracking
    if not t.enabled:
        return "Trackio was off for this run."
    if t.space_id:
        return f"[Trackio](https://huggingface.co/spaces/{t.space_id}) (project `{spec.tracking_project}`, run `{spec.name}`)"
    if t.server_url:
        return f"Trackio server {t.server_url.split('?', 1)[0]} (project `{spec.tracking_project}`, run `{spec.name}`)"
    return f"local Trackio: `trackio show --project {spec.tracking_project}`"


def _load_snippet(spec: RunSpec) -> list[str]:
    repo = "path/to/final"
    if spec.hub.push and not spec.smoke:
        from trainyard.hub_storage import resolve_repo_id

        repo = resolve_repo_id(spec.hub.repo, spec.matrix, spec.name)
    if spec.lora:
        return ["from peft import AutoPeftModelForCausalLM", "from transformers import AutoTokenizer", "",
                f'model = AutoPeftModelForCausalLM.from_pretrained("{repo}")', f'tokenizer = AutoTokenizer.from_pretrained("{repo}")']
    return ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
            f'model = AutoModelForCausalLM.from_pretrained("{repo}")', f'tokenizer = AutoTokenizer.from_pretrained("{repo}")']


def reproduce_command(spec: RunSpec) -> str:
    matrix = spec.matrix_file or f"<the matrix file of {spec.matrix}>"
    backend = " --backend hf-jobs" if os.environ.get("TRAINYARD_ARTIFACTS_REPO") else ""
    return f"python launch.py --matrix {matrix} --only {spec.name}{backend}" + (" --smoke" if spec.smoke else "")


def write_loss_curve(rundir: RunDir, spec: RunSpec) -> bool:
    """loss_curve.png next to the card: training loss and every eval set's loss by step."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        from trainyard.report_charts import eval_curves, train_curves

        history = rundir.history()
        train = train_curves(history, "loss")
        evals = eval_curves(history, [spec.eval.held_out_name, *(e.name for e in spec.eval.datasets)], spec.eval.held_out_name)
        if not train.steps and not any(c.steps for c in evals.values()):
            return False
        fig = Figure(figsize=(7, 4))
        ax = fig.add_subplot()
        if train.steps:
            ax.plot(train.steps, train.values, label="train loss", linewidth=1.5)
        for name, c in sorted(evals.items()):
            if c.steps:
                ax.plot(c.steps, c.values, marker="o", markersize=3, label=f"eval {name} loss")
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (nats / token)")
        ax.set_title(f"{spec.matrix} / {spec.name}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        FigureCanvasAgg(fig)
        fig.savefig(rundir.path / LOSS_CURVE, dpi=100, bbox_inches="tight")
        return True
    except Exception:  # a chart must never fail a run
        return False


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return ", ".join(map(str, v))
    return str(v).replace("|", "\\|")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "diverged (∞)" if not math.isfinite(v) else f"{v:.4g}"
    return str(v)
