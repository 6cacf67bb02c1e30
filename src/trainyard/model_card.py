"""Model card text for a finished run (huggingface_hub.ModelCard with YAML metadata)."""

from __future__ import annotations

import math
from typing import Any

from trainyard.spec import RunSpec, is_local_path


def render_card(spec: RunSpec, metrics: dict[str, Any], state: str) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(
        base_model=None if is_local_path(spec.model.name) else spec.model.name,  # a local dir is no Hub id
        library_name="peft" if spec.lora else "transformers",
        tags=["trainyard", spec.recipe, *(["lora"] if spec.lora else [])],
        datasets=[spec.data.source] if "/" in spec.data.source and not spec.data.source.startswith((".", "/")) else None,
    )
    rows = "\n".join(f"| `{k}` | {_fmt(v)} |" for k, v in sorted(metrics.items()))
    t = spec.train
    lora = f"LoRA r={spec.lora.r}, α={spec.lora.alpha}, dropout={spec.lora.dropout}" if spec.lora else "full fine-tune"
    quant = f", {spec.quantization.bits}-bit {spec.quantization.quant_type} base" if spec.quantization else ""
    body = f"""
# {spec.matrix} / {spec.name}

{spec.description or f"`{spec.recipe}` run of the `{spec.matrix}` matrix, trained with trainyard."}

- **Base model:** `{spec.model.name}`
- **Data:** `{spec.data.source}` ({spec.data.format}{f", limit {spec.data.limit}" if spec.data.limit else ""})
- **Method:** {spec.recipe}, {lora}{quant}
- **Training:** {t.epochs:g} epoch(s){f", max {t.max_steps} steps" if t.max_steps else ""}, lr {t.lr:g}, {t.scheduler} schedule,
  batch {t.batch_size} × accumulation {t.grad_accum}, max length {t.max_length}
- **Outcome:** {state}

## Metrics

| metric | value |
|---|---|
{rows}

Reproduce: `python launch.py --matrix jobs/{spec.matrix}.yaml --only {spec.name}`
"""
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "diverged (∞)" if not math.isfinite(v) else f"{v:.4g}"
    return str(v)
