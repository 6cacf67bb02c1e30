"""The one schema: a RunSpec describes one training run completely.

Every other module receives validated RunSpec objects, never raw dicts. Unknown keys are
rejected everywhere (``extra="forbid"``) so a typo in a YAML file fails before anything
runs. Recipe-specific options live in their own section (``dpo:``, ``mixed_loss:``, ...)
so adding a recipe adds a section without touching the others.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "warmup_stable_decay",
)
Scheduler = Literal[
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "warmup_stable_decay",
]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSpec(Section):
    name: str = Field(description="Hub id (Qwen/Qwen3-0.6B) or a local directory")
    revision: str | None = None
    tokenizer: str | None = Field(None, description="tokenizer Hub id / dir; default: the model's")
    trust_remote_code: bool = False
    attn_implementation: str | None = Field(None, description="e.g. sdpa, flash_attention_2")


class DataSpec(Section):
    source: str = Field(description="Hub dataset id, a local file/dir, or fixture:<name>")
    config: str | None = Field(None, description="Hub dataset config (subset) name")
    split: str = "train"
    format: str = Field(description="row format, see trainyard.data.formats.FORMATS")
    text_field: str = "text"
    limit: PositiveInt | None = Field(None, description="use at most this many examples")
    eval_split: str | None = Field(None, description="a split of the same dataset held out")
    eval_size: float | int = Field(
        0.05, description="held-out fraction (<1) or count (>=1) when eval_split is unset"
    )
    eval_limit: PositiveInt | None = None
    shuffle: bool = True
    seed: int = 42

    @model_validator(mode="after")
    def _eval_size_range(self) -> DataSpec:
        if self.eval_size < 0 or (isinstance(self.eval_size, float) and 0 < self.eval_size < 1e-9):
            raise ValueError("eval_size must be a fraction in (0, 1), a count >= 1, or 0 for none")
        return self


class LoraSpec(Section):
    r: PositiveInt = 16
    alpha: PositiveInt = 32
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    bias: Literal["none", "all", "lora_only"] = "none"


class QuantizationSpec(Section):
    bits: Literal[4, 8] = 4
    quant_type: Literal["nf4", "fp4"] = "nf4"
    compute_dtype: Literal["bf16", "fp16", "fp32"] = "bf16"
    double_quant: bool = True


class TrainSpec(Section):
    epochs: PositiveFloat = 1.0
    max_steps: PositiveInt | None = Field(None, description="overrides epochs when set")
    batch_size: PositiveInt = Field(1, description="per-device train batch size")
    eval_batch_size: PositiveInt | None = None
    grad_accum: PositiveInt = 1
    lr: PositiveFloat = 2e-5
    scheduler: Scheduler = "linear"
    scheduler_cycles: PositiveInt | None = Field(
        None, description="number of hard restarts for cosine_with_restarts"
    )
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    optimizer: str = "adamw_torch"
    max_length: PositiveInt = 1024
    packing: bool = False
    completion_only_loss: bool = True
    gradient_checkpointing: bool = False
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    seed: int = 42
    logging_steps: PositiveInt = 10
    save_steps: PositiveInt | None = Field(None, description="default: once per epoch")
    save_total_limit: PositiveInt = 2

    @model_validator(mode="after")
    def _cycles_need_restarts(self) -> TrainSpec:
        if self.scheduler_cycles is not None and self.scheduler != "cosine_with_restarts":
            raise ValueError("scheduler_cycles only applies to scheduler: cosine_with_restarts")
        return self


class EvalSetSpec(Section):
    """A named evaluation set: each gets eval/<name>/loss and eval/<name>/perplexity."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    source: str
    config: str | None = None
    split: str = "test"
    format: str = "text"
    text_field: str = "text"
    limit: PositiveInt | None = None


class EvalSpec(Section):
    strategy: Literal["steps", "epoch", "no"] = "epoch"
    steps: PositiveInt | None = Field(None, description="eval every N steps (strategy: steps)")
    held_out_name: str = Field("heldout", pattern=r"^[A-Za-z0-9_.-]+$")
    datasets: list[EvalSetSpec] = Field(default_factory=list)
    tatqa: bool = False
    judge: bool = False

    @model_validator(mode="after")
    def _steps_need_cadence(self) -> EvalSpec:
        if self.strategy == "steps" and self.steps is None:
            raise ValueError("strategy: steps needs steps: N (evaluate every N optimizer steps)")
        names = [d.name for d in self.datasets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"eval dataset names must be unique, repeated: {dupes}")
        return self


class TrackingSpec(Section):
    enabled: bool = True
    project: str | None = Field(None, description="default: the matrix name")
    space_id: str | None = None
    server_url: str | None = None
    private: bool = True


class HubSpec(Section):
    push: bool = False
    repo: str = Field("{user}/{matrix}-{run}", description="template: {user} {matrix} {run}")
    private: bool = True


class TolerationSpec(Section):
    """A Kubernetes pod toleration (e.g. for tainted GPU nodes)."""

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class ResourcesSpec(Section):
    flavor: str = Field("a100-large", description="HF Jobs hardware flavor")
    gpus: int = Field(1, ge=0)
    cpu: str = Field("8", pattern=r"^\d+(\.\d+)?m?$", description="CPU quantity, e.g. 8 or 500m")
    memory: str = Field(
        "64Gi", pattern=r"^\d+(\.\d+)?([KMGTPE]i?)?$", description="memory quantity, e.g. 64Gi"
    )
    timeout: str = Field("6h", pattern=r"^\d+(\.\d+)?[smhd]?$")
    retries: int = Field(2, ge=0, description="k8s: Job backoffLimit (failed pods retried from the last checkpoint)")
    namespace: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="k8s namespace (default: $TRAINYARD_K8S_NAMESPACE or trainyard)",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="k8s nodeSelector, e.g. {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}"
    )
    tolerations: list[TolerationSpec] = Field(default_factory=list, description="k8s pod tolerations")
    priority_class: str | None = Field(None, description="k8s PriorityClass, e.g. trainyard-batch")
    pvc: str = Field("trainyard-runs", description="k8s PVC mounted at /output (run directories)")
    cache_pvc: str | None = Field(
        "trainyard-hf-cache", description="k8s PVC mounted as the HF cache (None: no cache volume)"
    )


class RunSpec(Section):
    """Everything one run needs; serialized to spec.json and handed to the entrypoint."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$", max_length=96)
    matrix: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    recipe: str
    model: ModelSpec
    data: DataSpec
    lora: LoraSpec | None = None
    quantization: QuantizationSpec | None = None
    train: TrainSpec = Field(default_factory=TrainSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    hub: HubSpec = Field(default_factory=HubSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    image: str = "ghcr.io/trainyard/trainyard:latest"
    smoke: bool = Field(False, description="set by --smoke: tiny model, fixture data, capped")
    description: str | None = None

    @model_validator(mode="after")
    def _recipe_known(self) -> RunSpec:
        from trainyard.recipes import RECIPES

        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; choose one of {sorted(RECIPES)}")
        from trainyard.data.formats import FORMATS

        for where, fmt in [("data", self.data.format)] + [
            (f"eval.datasets[{d.name}]", d.format) for d in self.eval.datasets
        ]:
            if fmt not in FORMATS:
                raise ValueError(f"{where}.format: unknown format {fmt!r}; choose one of {sorted(FORMATS)}")
        if self.quantization is not None and self.lora is None:
            raise ValueError("quantization needs lora: a quantized base can only train adapters (QLoRA)")
        return self

    @property
    def tracking_project(self) -> str:
        return self.tracking.project or self.matrix

    def fingerprint(self) -> str:
        """Stable hash of the resolved spec: a run directory belongs to exactly one spec."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls.model_validate(json.loads(text))


def field_paths(model: type[BaseModel] = RunSpec, prefix: str = "") -> dict[str, Any]:
    """All dotted keys the schema accepts, e.g. {'train.lr': <FieldInfo>, 'lora': ...}."""
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        out[path] = info
        for sub in _section_types(info.annotation):
            out.update(field_paths(sub, prefix=path + "."))
    return out


def _section_types(annotation: Any) -> list[type[BaseModel]]:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
