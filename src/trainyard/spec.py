"""The one schema: a RunSpec describes one training run completely.

Every other module receives validated RunSpec objects, never raw dicts. Unknown keys are
rejected everywhere (``extra="forbid"``) so a typo in a YAML file fails before anything
runs. Recipe-specific options live in their own section (``dpo:``, ``mixed_loss:``, ...)
so adding a recipe adds a section without touching the others.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
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
SCHEDULERS: tuple[str, ...] = get_args(Scheduler)


class Section(BaseModel):
    # allow_inf_nan=False: `lr: .inf` / `.nan` (YAML) or Infinity / NaN (JSON) are rejected in every section
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


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


class DivergenceSpec(Section):
    """The divergence guard, checked on every optimizer step (not only logged ones).

    A run is stopped and marked `diverged` when a step's loss or gradient norm is not
    finite, when the weights it is about to save are not finite, or when a step's loss
    exceeds spike_factor x the median of the last `window` step losses by more than
    spike_min_increase (so tiny losses jumping 0.01 -> 0.2 are not spikes), `patience`
    steps in a row.
    """

    enabled: bool = True
    spike_factor: float = Field(10.0, gt=1, description="loss > factor x running median is a spike")
    spike_min_increase: float = Field(2.0, ge=0, description="... and at least this far above the median")
    window: PositiveInt = Field(50, description="step losses in the running median")
    grace_steps: PositiveInt = Field(1, description="steps that only feed the median: 1 judges step 2 already")
    patience: PositiveInt = Field(
        1, description="consecutive spiking steps before stopping (raise for noisy batch-1 losses); a spiking step is never saved"
    )


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
    divergence: DivergenceSpec = Field(default_factory=DivergenceSpec)
    distributed: Literal["auto", "ddp", "fsdp"] = Field(
        "auto",
        description="with several processes (resources.processes/gpus/nodes): ddp replicates the model, fsdp shards it; "
        "auto: fsdp for a full fine-tune above 3B parameters, else ddp",
    )

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


class JudgeSpec(Section):
    """MT-Bench-style single-answer grading by an OpenAI-compatible endpoint (or recorded replies).

    The API key is read from the environment variable *named* by api_key_env; the key itself
    never appears in a spec (remote backends pass it as a secret of the same name).
    """

    questions: str = Field("HuggingFaceH4/mt_bench_prompts", description="Hub dataset id or a local .jsonl")
    split: str = "train"
    limit: PositiveInt | None = None
    base_url: str | None = Field(None, description="e.g. https://api.openai.com/v1 or a vLLM server")
    model: str | None = Field(None, description="judge model, e.g. gpt-4o")
    api_key_env: str | None = Field("OPENAI_API_KEY", pattern=r"^[A-Z_][A-Z0-9_]*$")
    recorded: str | None = Field(None, description="JSON of recorded judge replies (tests, offline)")
    max_new_tokens: PositiveInt = 512

    @model_validator(mode="after")
    def _one_judge(self) -> JudgeSpec:
        endpoint = self.base_url is not None or self.model is not None
        if endpoint == (self.recorded is not None):
            raise ValueError("eval.judge: set either base_url + model (an OpenAI-compatible endpoint) or recorded (a replies file)")
        if endpoint and (self.base_url is None or self.model is None):
            raise ValueError("eval.judge: an endpoint judge needs both base_url and model")
        return self


class IfevalSpec(Section):
    prompts: str = Field("google/IFEval", description="Hub dataset id or a local .jsonl in IFEval's format")
    split: str = "train"
    limit: PositiveInt | None = None
    max_new_tokens: PositiveInt = 1024


class EvalSpec(Section):
    strategy: Literal["steps", "epoch", "no"] = "epoch"
    steps: PositiveInt | None = Field(None, description="eval every N steps (strategy: steps)")
    held_out_name: str = Field("heldout", pattern=r"^[A-Za-z0-9_.-]+$")
    datasets: list[EvalSetSpec] = Field(default_factory=list)
    tatqa: bool = False
    judge: JudgeSpec | None = Field(None, description="MT-Bench-style judge scores after training")
    ifeval: IfevalSpec | None = Field(None, description="IFEval instruction following after training")
    compare_before: bool = Field(False, description="also score judge / IFEval before training (<name>_before/...)")

    @model_validator(mode="after")
    def _steps_need_cadence(self) -> EvalSpec:
        if self.strategy == "steps" and self.steps is None:
            raise ValueError("strategy: steps needs steps: N (evaluate every N optimizer steps)")
        names = [d.name for d in self.datasets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"eval dataset names must be unique, repeated: {dupes}")
        return self


DPO_LOSSES = Literal[
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard",
    "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
]
# TRL reads label_smoothing only in these losses (it is ignored by plain sigmoid DPO).
DPO_SMOOTHED_LOSSES = ("robust", "exo_pair", "aot", "aot_unpaired")


class DPOSpec(Section):
    """Options of recipe `dpo` (TRL DPOTrainer); allowed only there."""

    beta: PositiveFloat = Field(0.1, description="KL strength: higher stays closer to the reference")
    loss_type: DPO_LOSSES = "sigmoid"
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="robust / exo_pair / aot only")
    max_prompt_length: PositiveInt | None = Field(
        None, description="prompt tokens kept (from the end: the question stays); TRL 1.16 dropped it, we apply it to the data"
    )
    truncation_mode: Literal["keep_start", "keep_end"] = Field(
        "keep_start", description="how TRL cuts prompt+completion beyond train.max_length"
    )
    precompute_ref_log_probs: bool = False

    @model_validator(mode="after")
    def _smoothing_needs_its_loss(self) -> DPOSpec:
        if self.label_smoothing and self.loss_type not in DPO_SMOOTHED_LOSSES:
            raise ValueError(
                f"label_smoothing applies to loss_type {list(DPO_SMOOTHED_LOSSES)}; with {self.loss_type!r} "
                "TRL ignores it. Set label_smoothing: 0 or e.g. loss_type: robust"
            )
        if self.loss_type == "exo_pair" and not self.label_smoothing:
            raise ValueError("loss_type exo_pair needs label_smoothing > 0 (the EXO paper uses 1e-3)")
        return self


class TrackingSpec(Section):
    enabled: bool = True
    project: str | None = Field(None, description="default: the matrix name")
    space_id: str | None = None
    server_url: str | None = None
    private: bool = True
    # Remote backends (hf-jobs) with no space_id / server_url: a job's disk dies with it, so
    # curves go to this private Space instead (template: {user} = job owner, {matrix}).
    remote_space: str | None = Field(
        "{user}/trackio-{matrix}",
        pattern=r"^[A-Za-z0-9{}_.-]+/[A-Za-z0-9{}_.-]+$",
        description="remote backends: Trackio Space used when space_id and server_url are unset (None: curves stay in the job)",
    )
    group: str | None = Field(None, description="Trackio run group; default: the matrix name")


class HubSpec(Section):
    push: bool = False
    repo: str = Field("{user}/{matrix}-{run}", description="template: {user} {matrix} {run}")
    private: bool = True
    artifacts_repo: str | None = Field(
        "{user}/trainyard-runs",
        pattern=r"^[A-Za-z0-9{}_.-]+/[A-Za-z0-9{}_.-]+$",
        description=(
            "remote backends (hf-jobs): private Hub *dataset* repo that receives each run's "
            "small files (spec/status/metrics/history/README/logs, and final/ unless pushed "
            "to its own model repo) and its latest checkpoint under <matrix>/<run>/; "
            "`status`/`report` sync the small files back into runs/. Template: {user} = the "
            "job's namespace. Unused by the local backend."
        ),
    )
    artifacts_every: PositiveFloat = Field(
        10, description="minutes between progress uploads to artifacts_repo (state changes upload at once)"
    )
    upload_checkpoints: bool = Field(
        True,
        description=(
            "remote backends (hf-jobs): mirror the latest checkpoint (only that one) to "
            "artifacts_repo under <matrix>/<run>/checkpoints/, so a re-submitted failed, "
            "timed-out or canceled run resumes from it. Turn off for large full fine-tunes "
            "whose checkpoints (weights + optimizer state) are too big to upload on every save."
        ),
    )


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
    retries: int = Field(
        2, ge=0, description="retries after a failure, from the last checkpoint (k8s: Job backoffLimit; hf-jobs: attempts = 1 + retries)"
    )
    budget_usd: PositiveFloat | None = Field(
        None, description="remote backends: refuse to submit this run if its worst-case cost (price x timeout) exceeds it"
    )
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
    # -- launch shape (backends/launch.py): processes per node x nodes under torchrun
    processes: PositiveInt | None = Field(None, description="training processes per node (default: gpus, at least 1)")
    nodes: PositiveInt = Field(1, description="k8s: nodes (pods of an Indexed Job), each running `processes`")
    shm_size: str | None = Field(
        None, pattern=r"^\d+(\.\d+)?([KMGTPE]i?)?$", description="k8s: /dev/shm size limit (default: a quarter of memory)"
    )
    # -- scheduling metadata (k8s)
    queue: str | None = Field(
        None, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=63,
        description="k8s: Kueue LocalQueue (label kueue.x-k8s.io/queue-name; the Job starts suspended)",
    )
    labels: dict[str, str] = Field(default_factory=dict, description="k8s: extra labels on the Job and its pods")
    annotations: dict[str, str] = Field(default_factory=dict, description="k8s: extra annotations on the Job and its pods")

    @model_validator(mode="after")
    def _one_gpu_per_process(self) -> ResourcesSpec:
        if self.processes and self.gpus and self.processes > self.gpus:
            raise ValueError(f"processes ({self.processes}) > gpus ({self.gpus}): each process needs its own GPU; lower processes or raise gpus")
        return self

    @field_validator("labels", "annotations")
    @classmethod
    def _k8s_metadata_syntax(cls, mapping: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        for key, value in mapping.items():
            problem = k8s_metadata_problem(key, value if info.field_name == "labels" else None)
            if problem:
                raise ValueError(f"{key!r}: {problem}")
        return mapping


_K8S_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# label prefixes set by trainyard itself (or by resources.queue): a user value would break
# what relies on them; of these, annotations reserve only trainyard.io/ (Kueue reads its own)
RESERVED_LABEL_PREFIXES = ("trainyard.io/", "kueue.x-k8s.io/", "batch.kubernetes.io/")


def k8s_metadata_problem(key: str, label_value: str | None = None) -> str | None:
    """Why `key` (and, for labels, `label_value`) is not valid Kubernetes label syntax; None if it is."""
    prefix, _, name = key.rpartition("/")
    if not name or len(name) > 63 or not _K8S_NAME.match(name):
        return "the name part must be 1-63 characters of [A-Za-z0-9_.-], starting and ending alphanumeric"
    if "/" in key and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return "the prefix must be a DNS subdomain (lowercase, e.g. example.com/)"
    reserved = RESERVED_LABEL_PREFIXES if label_value is not None else RESERVED_LABEL_PREFIXES[:1]
    if key.startswith(reserved):
        return f"keys under {', '.join(reserved)} are set by trainyard" + (" (use resources.queue for Kueue)" if label_value is not None else "")
    if label_value is not None and label_value and (len(label_value) > 63 or not _K8S_NAME.match(label_value)):
        return f"value {label_value!r} must be at most 63 characters of [A-Za-z0-9_.-], starting and ending alphanumeric (or empty)"
    return None


class ArchitectureSpec(Section):
    """A from-scratch Llama-family decoder (recipe: pretrain), built with random init."""

    model_type: Literal["llama", "qwen3"] = "llama"
    hidden_size: PositiveInt = 384
    num_layers: PositiveInt = 6
    num_heads: PositiveInt = 6
    num_kv_heads: PositiveInt | None = Field(None, description="grouped-query attention; default: num_heads")
    head_dim: PositiveInt | None = Field(None, description="default: hidden_size / num_heads")
    intermediate_size: PositiveInt = 1536
    vocab_size: PositiveInt = 32000
    max_position_embeddings: PositiveInt = 2048
    rms_norm_eps: PositiveFloat = 1e-6
    tie_embeddings: bool = True
    attention_bias: bool = False
    rope_theta: PositiveFloat = 10000.0
    initializer_range: PositiveFloat = 0.02

    @model_validator(mode="after")
    def _heads_divide(self) -> ArchitectureSpec:
        kv = self.num_kv_heads or self.num_heads
        if self.num_heads % kv:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({kv})")
        if self.head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads}), or set head_dim"
            )
        return self


class LMSpec(Section):
    """Causal-LM text handling (recipes clm, pretrain, mixed_loss): texts -> token blocks."""

    min_chars: int = Field(0, ge=0, description="drop texts shorter than this (stripped) before tokenizing")
    stride: PositiveInt | None = Field(
        None, description="tokens between block starts; default train.max_length (no overlap)"
    )
    perplexity: Literal["block", "rolling"] = Field(
        "block", description="final perplexity: fixed blocks, or a sliding window (rolling)"
    )
    tokenizer_vocab_size: PositiveInt | None = Field(
        None, description="pretrain: BPE vocab trained on the corpus; default architecture.vocab_size"
    )


class MixedLossSpec(Section):
    """loss = (1 - alpha) CE + alpha (1 - cos(e_hat, e_y)); see trainyard.losses."""

    alpha: float = Field(0.5, ge=0, le=1)
    temperature: PositiveFloat = 1.0
    top_k: PositiveInt | None = Field(None, description="expected embedding over the top-k logits; default all")


# The image a run gets when the matrix sets none. hf-jobs does not pull it: it runs a public
# CUDA PyTorch image and installs this project's wheel (backends/wheel.py) instead.
DEFAULT_IMAGE = "ghcr.io/trainyard/trainyard:0.1.0"  # pinned: :latest changes under a resumed run

DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> int:
    """'6h' / '90m' / '45s' / '2d' / '3600' (seconds) -> seconds (resources.timeout)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if not m:
        raise ValueError(f"bad duration {text!r}: use a number with s, m, h or d, e.g. 6h")
    return int(float(m.group(1)) * DURATION_UNITS[m.group(2)])


class RunSpec(Section):
    """Everything one run needs; serialized to spec.json and handed to the entrypoint."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$", max_length=96)
    matrix: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    recipe: str
    model: ModelSpec
    data: DataSpec
    lora: LoraSpec | None = None
    quantization: QuantizationSpec | None = None
    architecture: ArchitectureSpec | None = None
    lm: LMSpec = Field(default_factory=LMSpec)
    mixed_loss: MixedLossSpec | None = None
    train: TrainSpec = Field(default_factory=TrainSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    dpo: DPOSpec | None = Field(None, description="recipe dpo only")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    hub: HubSpec = Field(default_factory=HubSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    image: str = Field(
        DEFAULT_IMAGE,
        description="container image with trainyard installed; unset on hf-jobs: a public CUDA PyTorch image installs this project's wheel",
    )
    matrix_file: str | None = Field(None, description="set by the matrix loader: the matrix YAML, relative to the working directory")
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
        self._check_lm_sections()
        return self

    def _check_lm_sections(self) -> None:
        if self.recipe == "pretrain":
            if self.architecture is None:
                raise ValueError("recipe pretrain builds a model from scratch: it needs an `architecture:` section")
            if self.lora is not None:
                raise ValueError(
                    "lora: LoRA trains adapters on a pretrained base; a from-scratch model (recipe pretrain) "
                    "has none. Remove `lora:` or use recipe clm to continue training a pretrained model"
                )
        elif self.architecture is not None:
            raise ValueError(f"architecture: only recipe pretrain builds a model from scratch (this run: {self.recipe})")
        if self.recipe == "mixed_loss" and self.mixed_loss is None:
            raise ValueError("recipe mixed_loss needs a `mixed_loss:` section (alpha, temperature, top_k)")
        if self.mixed_loss is not None and self.recipe != "mixed_loss":
            raise ValueError(f"mixed_loss: only recipe mixed_loss uses it (this run: {self.recipe})")
        if self.lm.stride is not None and self.lm.stride > self.train.max_length:
            raise ValueError(
                f"lm.stride ({self.lm.stride}) > train.max_length ({self.train.max_length}) would skip tokens"
            )

    @model_validator(mode="after")
    def _dpo_section(self) -> RunSpec:
        from trainyard.data.formats import FORMATS

        if self.recipe != "dpo":
            if self.dpo is not None:
                raise ValueError(f"dpo: options apply only to recipe: dpo (this run's recipe is {self.recipe!r}); remove the dpo: section")
            return self
        if self.dpo is None:
            raise ValueError("recipe dpo needs a dpo: section, e.g. dpo: {beta: 0.1, max_prompt_length: 384}")
        fmt = FORMATS.get(self.data.format)
        if fmt is not None and fmt.produces != "preference":
            preference = sorted(n for n, f in FORMATS.items() if f.produces == "preference")
            raise ValueError(f"data.format {self.data.format!r} has no chosen/rejected answers; recipe dpo needs one of {preference}")
        if self.dpo.max_prompt_length is not None and self.dpo.max_prompt_length >= self.train.max_length:
            raise ValueError(
                f"dpo.max_prompt_length ({self.dpo.max_prompt_length}) must be below train.max_length "
                f"({self.train.max_length}), which also has to hold the answer"
            )
        if self.eval.tatqa and self.data.format != "tatqa_preference":
            raise ValueError("eval.tatqa with recipe dpo reads the raw TAT-QA questions: it needs data.format: tatqa_preference")
        if self.eval.datasets:
            raise ValueError("recipe dpo evaluates its held-out pairs (and TAT-QA with eval.tatqa: true); eval.datasets is not supported")
        return self

    def sources(self) -> list[tuple[str, str]]:
        """(key, value) of every model / data location the run reads (fixtures excluded)."""
        e = self.eval
        out = [("model.name", self.model.name), ("model.tokenizer", self.model.tokenizer), ("data.source", self.data.source)]
        out += [(f"eval.datasets[{d.name}].source", d.source) for d in e.datasets]
        if e.judge is not None:
            out += [("eval.judge.questions", e.judge.questions), ("eval.judge.recorded", e.judge.recorded)]
        if e.ifeval is not None:
            out.append(("eval.ifeval.prompts", e.ifeval.prompts))
        return [(k, v) for k, v in out if v is not None and not v.startswith("fixture:")]

    @property
    def tracking_project(self) -> str:
        return self.tracking.project or self.matrix

    def fingerprint(self) -> str:
        """Stable hash of the resolved spec: a run directory belongs to exactly one spec."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # Where and how a run executes, not what it trains: changing these (a longer timeout
    # after a job timed out, another image tag) must not stop a run resuming its checkpoint.
    EXECUTION_SECTIONS: ClassVar[frozenset[str]] = frozenset({"resources", "image", "tracking", "hub", "description", "matrix_file"})

    def training_fingerprint(self) -> str:
        """Hash of what determines the training trajectory: a checkpoint resumes only under it."""
        blob = json.dumps(self.model_dump(mode="json", exclude=set(self.EXECUTION_SECTIONS)), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls.model_validate(json.loads(text))


LOCAL_FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".txt", ".arrow")


def is_local_path(value: str) -> bool:
    """A model / data location on this machine rather than a Hub id."""
    return value.startswith(("/", "./", "../", "~")) or value.endswith(LOCAL_FILE_SUFFIXES) or Path(value).expanduser().exists()


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
