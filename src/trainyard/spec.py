"""The one schema: a RunSpec describes one training run completely.

Every other module receives validated RunSpec objects, never raw dicts. Unknown keys are
rejected everywhere (``extra="forbid"``) so a typo in a YAML file fails before anything
runs. Recipe-specific options live in their own section (``dpo:``, ``mixed_loss:``, ...)
so adding a recipe adds a section without touching the others.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

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


# transformers.training_args.OptimizerNames (4.x/5.x), kept here so validating needs no
# transformers import; tests/test_spec_rules.py checks it against the installed version.
Optimizer = Literal[
    "adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adafactor",
    "adamw_anyprecision", "adamw_torch_4bit", "adamw_torch_8bit", "ademamix", "sgd", "adagrad",
    "adamw_bnb_8bit", "adamw_8bit", "ademamix_8bit", "lion_8bit", "lion_32bit", "paged_adamw_32bit",
    "paged_adamw_8bit", "paged_ademamix_32bit", "paged_ademamix_8bit", "paged_lion_32bit",
    "paged_lion_8bit", "rmsprop", "rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit",
    "galore_adamw", "galore_adamw_8bit", "galore_adafactor", "galore_adamw_layerwise",
    "galore_adamw_8bit_layerwise", "galore_adafactor_layerwise", "lomo", "adalomo", "grokadamw",
    "schedule_free_radam", "schedule_free_adamw", "schedule_free_sgd", "apollo_adamw",
    "apollo_adamw_layerwise", "stable_adamw",
]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
# transformers' attention implementations; a Hub kernel ("kernels-community/flash-attn") also works.
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flash_attention_4", "flex_attention", "paged|eager")
_HUB_KERNEL = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?$")
# A value that looks like a credential: secrets live in the environment, never in a spec.
SECRET_PATTERN = re.compile(r"\b(hf_[A-Za-z0-9]{30,}|sk-[A-Za-z0-9_-]{20,}|ghp_[A-Za-z0-9]{30,})\b")

AUTHORED = {"authored": True}  # validation context of a matrix file: rules about what was *written*


def authored(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("authored"))


def _is_numeric_annotation(annotation: Any) -> bool:
    args = get_args(annotation)
    if args:
        return any(_is_numeric_annotation(a) for a in args)
    return annotation in (int, float) or (isinstance(annotation, type) and issubclass(annotation, (int, float)) and annotation is not bool)


class Section(BaseModel):
    # inf / nan are never a setting (a grid value `.inf` used to crash run naming).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bools_for_numbers(cls, data: Any) -> Any:
        """YAML reads `yes` / `on` / `true` as a bool, and pydantic would take it as 1."""
        if isinstance(data, dict):
            for name, value in data.items():
                info = cls.model_fields.get(name) if isinstance(name, str) else None
                if isinstance(value, bool) and info is not None and _is_numeric_annotation(info.annotation) and bool not in _flat_args(info.annotation):
                    raise ValidationError.from_exception_data(cls.__name__, [{
                        "type": PydanticCustomError("bool_for_number", "{msg}", {"msg": f"expects a number, got {str(value).lower()} (YAML reads yes/no/on/off/true/false as booleans); write a number"}),
                        "loc": (name,), "input": value,
                    }])
        return data


def _flat_args(annotation: Any) -> tuple:
    args = get_args(annotation)
    return tuple(x for a in args for x in (_flat_args(a) or (a,))) if args else ()


def rule_error(title: str, problems: list[tuple[tuple, str]]) -> ValidationError:
    """Cross-field problems as one ValidationError, each at its own key (loc)."""
    return ValidationError.from_exception_data(title, [
        {"type": PydanticCustomError("rule", "{msg}", {"msg": msg}), "loc": loc, "input": None} for loc, msg in problems
    ])


class ModelSpec(Section):
    name: str = Field(min_length=1, description="Hub id (Qwen/Qwen3-0.6B) or a local directory holding config.json")
    revision: str | None = Field(None, description="Hub branch, tag or commit of the model")
    tokenizer: str | None = Field(None, description="tokenizer Hub id / dir; default: the model's")
    trust_remote_code: bool = Field(False, description="run the model repo's own Python code (needed by some architectures)")
    attn_implementation: str | None = Field(
        None, description=f"one of {', '.join(ATTN_IMPLEMENTATIONS)}, or a Hub kernel repo (kernels-community/...)"
    )

    @field_validator("attn_implementation")
    @classmethod
    def _attn_known(cls, v: str | None) -> str | None:
        if v is not None and v not in ATTN_IMPLEMENTATIONS and not _HUB_KERNEL.match(v):
            from trainyard.errors import did_you_mean

            raise ValueError(f"unknown attention implementation {v!r}{did_you_mean(v, set(ATTN_IMPLEMENTATIONS))}; choose one of {list(ATTN_IMPLEMENTATIONS)}")
        return v


class DataSpec(Section):
    source: str = Field(min_length=1, description="Hub dataset id, a local file/dir, or fixture:<name>")
    config: str | None = Field(None, description="Hub dataset config (subset) name")
    split: str = Field("train", min_length=1, description="split to train on")
    format: str = Field(description="row format (see the formats table below)")
    text_field: str = Field("text", min_length=1, description="column holding the text (formats text / *_text)")
    limit: PositiveInt | None = Field(None, description="use at most this many training examples")
    eval_split: str | None = Field(None, description="a split of the same dataset held out")
    eval_size: float | int = Field(
        0.05, description="held-out fraction (<1) or count (>=1) when eval_split is unset; 0: none"
    )
    eval_limit: PositiveInt | None = Field(None, description="at most this many held-out examples")
    shuffle: bool = Field(True, description="shuffle rows before taking limit / the held-out part")
    seed: int = Field(42, description="shuffle seed")

    @model_validator(mode="after")
    def _eval_size_range(self) -> DataSpec:
        size = self.eval_size
        if size < 0 or (isinstance(size, float) and 0 < size < 1e-9):
            raise rule_error("DataSpec", [(("eval_size",), "eval_size must be a fraction in (0, 1), a count >= 1, or 0 for none")])
        if size >= 1 and float(size) != int(size):
            raise rule_error("DataSpec", [(("eval_size",), f"eval_size {size}: a fraction must be below 1 (e.g. 0.05) and a count a whole number (e.g. 500)")])
        if self.eval_split is not None and self.eval_split == self.split:
            raise rule_error("DataSpec", [(("eval_split",), f"eval_split {self.eval_split!r} is the training split: the model would be evaluated on its training data. Use another split, or unset eval_split to hold out eval_size")])
        return self

    @property
    def has_held_out(self) -> bool:
        return self.eval_split is not None or bool(self.eval_size)


class LoraSpec(Section):
    r: PositiveInt = Field(16, description="adapter rank")
    alpha: PositiveInt = Field(32, description="scaling numerator (effective scale alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="module names to adapt (checked against the model's config), or all-linear"
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="which biases train")

    @field_validator("target_modules")
    @classmethod
    def _modules_named(cls, v):
        if isinstance(v, list) and (not v or any(not m.strip() for m in v)):
            raise ValueError("target_modules needs at least one module name (e.g. [q_proj, v_proj]) or all-linear")
        return v


class QuantizationSpec(Section):
    """QLoRA: the base model loaded in 4 / 8 bits (bitsandbytes, CUDA only)."""

    bits: Literal[4, 8] = Field(4, description="4 (QLoRA) or 8")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type")
    compute_dtype: Literal["bf16", "fp16", "fp32"] = Field("bf16", description="dtype of the matmuls")
    double_quant: bool = Field(True, description="quantize the quantization constants too")


class DivergenceSpec(Section):
    """The divergence guard, checked on every optimizer step (not only logged ones).

    A run is stopped and marked `diverged` when a step's loss or gradient norm is not
    finite, when the weights it is about to save are not finite, or when a step's loss
    exceeds spike_factor x the median of the last `window` step losses by more than
    spike_min_increase (so tiny losses jumping 0.01 -> 0.2 are not spikes), `patience`
    steps in a row.
    """

    enabled: bool = Field(True, description="watch for divergence (off: train to the end whatever the loss)")
    spike_factor: float = Field(10.0, gt=1, description="loss > factor x running median is a spike")
    spike_min_increase: float = Field(2.0, ge=0, description="... and at least this far above the median")
    window: PositiveInt = Field(50, description="step losses in the running median")
    grace_steps: PositiveInt = Field(1, description="steps that only feed the median: 1 judges step 2 already")
    patience: PositiveInt = Field(
        1, description="consecutive spiking steps before stopping (raise for noisy batch-1 losses); a spiking step is never saved"
    )


class TrainSpec(Section):
    epochs: PositiveFloat = Field(1.0, description="passes over the training data (unless max_steps is set)")
    max_steps: PositiveInt | None = Field(None, description="optimizer steps to train; replaces epochs (set one of them)")
    batch_size: PositiveInt = Field(1, description="per-device train batch size")
    eval_batch_size: PositiveInt | None = Field(None, description="per-device eval batch size; default batch_size")
    grad_accum: PositiveInt = Field(1, description="gradient accumulation steps (effective batch = batch_size x grad_accum)")
    lr: PositiveFloat = Field(2e-5, description="peak learning rate (1 or more is a warning: usually a typo such as 2e+5 for 2e-5)")
    scheduler: Scheduler = Field("linear", description="learning-rate schedule (transformers lr_scheduler_type)")
    scheduler_cycles: PositiveInt | None = Field(
        None, description="number of hard restarts for cosine_with_restarts"
    )
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="fraction of the steps spent warming up")
    warmup_steps: int = Field(0, ge=0, description="warm-up steps (instead of warmup_ratio)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    optimizer: Optimizer = Field("adamw_torch_fused", description="transformers optim name (default: its own default on torch >= 2.8, one fused kernel per step), e.g. adamw_torch, adamw_8bit, adafactor")
    max_length: PositiveInt = Field(1024, description="tokens per example / block (checked against the model's positions)")
    packing: bool = Field(False, description="sft: pack whole examples into rows (best-fit), each attending only to itself")
    completion_only_loss: bool = Field(True, description="sft: loss on the completion tokens only")
    group_by_length: bool = Field(True, description="sft/dpo without packing: batch examples of similar length (less padding)")
    use_liger_kernel: bool = Field(False, description="Liger fused kernels (CUDA, needs liger-kernel installed)")
    torch_compile: bool = Field(False, description="torch.compile the model")
    gradient_checkpointing: bool = Field(False, description="trade compute for activation memory")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on GPUs that have it, fp16 on older GPUs, fp32 on CPU"
    )
    seed: int = Field(42, description="training seed")
    logging_steps: PositiveInt = Field(10, description="log the training loss every N steps")
    save_steps: PositiveInt | None = Field(None, description="checkpoint every N steps; default: once per epoch")
    save_total_limit: PositiveInt = Field(2, description="checkpoints kept")
    divergence: DivergenceSpec = Field(default_factory=DivergenceSpec, description="stop a run whose loss or gradients go non-finite or spike")
    distributed: Literal["auto", "ddp", "fsdp"] = Field(
        "auto",
        description="with several processes (resources.processes/gpus/nodes): ddp replicates the model, fsdp shards it; "
        "auto: fsdp for a full fine-tune above 3B parameters, else ddp",
    )

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> TrainSpec:
        problems: list[tuple[tuple, str]] = []
        if self.scheduler_cycles is not None and self.scheduler != "cosine_with_restarts":
            problems.append((("scheduler_cycles",), "scheduler_cycles only applies to scheduler: cosine_with_restarts"))
        if self.warmup_ratio and self.warmup_steps:
            problems.append((("warmup_steps",), f"both warmup_ratio ({self.warmup_ratio:g}) and warmup_steps ({self.warmup_steps}) are set; set one of them"))
        if self.max_steps is not None and self.warmup_steps >= self.max_steps:
            problems.append((("warmup_steps",), f"warmup_steps ({self.warmup_steps}) >= max_steps ({self.max_steps}): the run would end before warm-up does"))
        if authored(info) and self.max_steps is not None and "epochs" in self.model_fields_set:
            problems.append((("max_steps",), f"both epochs ({self.epochs:g}) and max_steps ({self.max_steps}) are set; max_steps would silently override epochs. Set one of them"))
        if problems:
            raise rule_error("TrainSpec", problems)
        return self


class EvalSetSpec(Section):
    """A named evaluation set: each gets eval/<name>/loss and eval/<name>/perplexity."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="metric prefix: eval/<name>/...")
    source: str = Field(min_length=1, description="Hub dataset id, a local file/dir, or fixture:<name>")
    config: str | None = Field(None, description="Hub dataset config (subset) name")
    split: str = Field("test", description="split to evaluate")
    format: str = Field("text", description="row format")
    text_field: str = Field("text", description="column holding the text")
    limit: PositiveInt | None = Field(None, description="at most this many examples")


class JudgeSpec(Section):
    """MT-Bench-style single-answer grading by an OpenAI-compatible endpoint (or recorded replies).

    The API key is read from the environment variable *named* by api_key_env; the key itself
    never appears in a spec (remote backends pass it as a secret of the same name).
    """

    questions: str = Field("HuggingFaceH4/mt_bench_prompts", description="Hub dataset id or a local .jsonl")
    split: str = Field("train", description="split of the questions dataset")
    limit: PositiveInt | None = Field(None, description="at most this many questions")
    base_url: str | None = Field(None, description="e.g. https://api.openai.com/v1 or a vLLM server")
    model: str | None = Field(None, description="judge model, e.g. gpt-4o")
    api_key_env: str | None = Field("OPENAI_API_KEY", pattern=r"^[A-Z_][A-Z0-9_]*$", description="NAME of the environment variable holding the key (never the key)")
    recorded: str | None = Field(None, description="JSON of recorded judge replies (tests, offline)")
    max_new_tokens: PositiveInt = Field(512, description="judged reply length")

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
    split: str = Field("train", description="split of the prompts dataset")
    limit: PositiveInt | None = Field(None, description="at most this many prompts")
    max_new_tokens: PositiveInt = Field(1024, description="reply length")


class TatqaEvalSpec(Section):
    """TAT-QA exact match / F1 of greedy replies, before and after training (recipe dpo,
    data.format tatqa_preference); questions come from data.eval_split (default dev)."""

    limit: PositiveInt | None = Field(None, description="at most this many questions; default all")
    max_new_tokens: PositiveInt = Field(96, description="reply length (the reply is 2-3 short lines)")
    batch_size: PositiveInt | None = Field(None, description="generation batch; default train.eval_batch_size or 8")


class EvalSpec(Section):
    strategy: Literal["steps", "epoch", "no"] = Field("epoch", description="when to evaluate during training")
    steps: PositiveInt | None = Field(None, description="eval every N steps (strategy: steps only)")
    held_out_name: str = Field("heldout", pattern=r"^[A-Za-z0-9_.-]+$", description="metric name of the held-out part of data")
    datasets: list[EvalSetSpec] = Field(default_factory=list, description="named eval sets (a list of the keys below)")
    tatqa: TatqaEvalSpec | None = Field(None, description="TAT-QA generation scores; `true` for the defaults")
    judge: JudgeSpec | None = Field(None, description="MT-Bench-style judge scores after training")
    ifeval: IfevalSpec | None = Field(None, description="IFEval instruction following after training")
    compare_before: bool = Field(False, description="also score judge / IFEval before training (<name>_before/...)")

    @field_validator("tatqa", mode="before")
    @classmethod
    def _tatqa_flag(cls, v: Any) -> Any:
        """`tatqa: true` keeps working: the section with its defaults."""
        if v is True:
            return {}
        if v is False:
            return None
        return v

    @model_validator(mode="after")
    def _steps_need_cadence(self) -> EvalSpec:
        problems: list[tuple[tuple, str]] = []
        if self.strategy == "steps" and self.steps is None:
            problems.append((("steps",), "strategy: steps needs steps: N (evaluate every N optimizer steps)"))
        if self.strategy != "steps" and self.steps is not None:
            problems.append((("steps",), f"steps: {self.steps} only applies to strategy: steps (this is strategy: {self.strategy}); set strategy: steps or remove steps"))
        names = [d.name for d in self.datasets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append((("datasets",), f"eval dataset names must be unique, repeated: {dupes}"))
        if self.held_out_name in names:
            problems.append((("held_out_name",), f"eval dataset name {self.held_out_name!r} is also the held-out set's name (eval/{self.held_out_name}/...); rename one"))
        if self.compare_before and self.judge is None and self.ifeval is None:
            problems.append((("compare_before",), "compare_before scores judge / IFEval before training, but neither eval.judge nor eval.ifeval is set"))
        if problems:
            raise rule_error("EvalSpec", problems)
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
    loss_type: DPO_LOSSES = Field("sigmoid", description="TRL DPO loss")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="robust / exo_pair / aot only")
    max_prompt_length: PositiveInt | None = Field(
        None, description="prompt tokens kept (from the end: the question stays); TRL 1.16 dropped it, we apply it to the data"
    )
    truncation_mode: Literal["keep_start", "keep_end"] = Field(
        "keep_start", description="how TRL cuts prompt+completion beyond train.max_length"
    )
    precompute_ref_log_probs: bool = Field(False, description="score the reference model once before training")

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
    enabled: bool = Field(True, description="log curves to Trackio")
    project: str | None = Field(None, description="default: the matrix name")
    space_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", description="Trackio Space (org/name) to sync to")
    server_url: str | None = Field(None, description="a self-hosted Trackio server")
    private: bool = Field(True, description="a created Space is private")
    # Remote backends (hf-jobs) with no space_id / server_url: a job's disk dies with it, so
    # curves go to this private Space instead (template: {user} = job owner, {matrix}).
    remote_space: str | None = Field(
        "{user}/trackio-{matrix}",
        pattern=r"^[A-Za-z0-9{}_.-]+/[A-Za-z0-9{}_.-]+$",
        description="remote backends: Trackio Space used when space_id and server_url are unset (None: curves stay in the job)",
    )
    group: str | None = Field(None, description="Trackio run group; default: the matrix name")


class HubSpec(Section):
    push: bool = Field(False, description="push final/ and the model card to a Hub model repo")
    push_to: Literal["hub", "run_dir"] = Field(
        "hub", description="where a push goes: the Hub, or hub/ inside the run directory (set by --smoke; offline tests)"
    )
    repo: str = Field("{user}/{matrix}-{run}", pattern=r"^[A-Za-z0-9{}_.-]+/[A-Za-z0-9{}_.=+-]+$",
                      description="model repo to push to, namespace/name; template: {user} {matrix} {run}")
    private: bool = Field(True, description="created repos are private")
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

    key: str | None = Field(None, description="taint key")
    operator: Literal["Equal", "Exists"] = Field("Equal", description="match the value, or any")
    value: str | None = Field(None, description="taint value")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(None, description="taint effect; null: all")


class ResourcesSpec(Section):
    flavor: str = Field("a100-large", description="HF Jobs hardware flavor")
    gpus: int = Field(1, ge=0, description="k8s: nvidia.com/gpu per pod (0: CPU only)")
    cpu: str = Field("8", pattern=r"^\d+(\.\d+)?m?$", description="CPU quantity, e.g. 8 or 500m")
    memory: str = Field(
        "64Gi", pattern=r"^\d+(\.\d+)?([KMGTPE]i?)?$", description="memory quantity, e.g. 64Gi"
    )
    timeout: str = Field("6h", pattern=r"^\d+(\.\d+)?[smhd]?$", description="job time limit: 45m, 6h, 2d or seconds (> 0)")
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

    @field_validator("cpu", "memory", "timeout", mode="before")
    @classmethod
    def _number_as_quantity(cls, v: Any) -> Any:
        """`timeout: 3600` / `cpu: 8` are written as numbers; the quantities are strings."""
        return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _nothing_zero(self) -> ResourcesSpec:
        """k8s takes activeDeadlineSeconds 0 / memory "0" as given: a job that can never run."""
        problems: list[tuple[tuple, str]] = []
        if float(re.match(r"[\d.]+", self.cpu).group()) == 0:
            problems.append((("cpu",), f"cpu {self.cpu!r} is zero; give the CPUs the job needs, e.g. 8"))
        if float(re.match(r"[\d.]+", self.memory).group()) == 0:
            problems.append((("memory",), f"memory {self.memory!r} is zero; give the memory the job needs, e.g. 64Gi"))
        if duration_seconds(self.timeout) <= 0:
            problems.append((("timeout",), f"timeout {self.timeout!r} is zero: the job would be killed at once; e.g. 6h"))
        if self.shm_size is not None and float(re.match(r"[\d.]+", self.shm_size).group()) == 0:
            problems.append((("shm_size",), f"shm_size {self.shm_size!r} is zero; e.g. 16Gi, or unset for a quarter of memory"))
        if problems:
            raise rule_error("ResourcesSpec", problems)
        return self

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

    model_type: Literal["llama", "qwen3"] = Field("llama", description="family (qwen3 adds per-head q/k norms)")
    hidden_size: PositiveInt = Field(384, description="model width")
    num_layers: PositiveInt = Field(6, description="decoder layers")
    num_heads: PositiveInt = Field(6, description="attention heads")
    num_kv_heads: PositiveInt | None = Field(None, description="grouped-query attention; default: num_heads")
    head_dim: PositiveInt | None = Field(None, description="default: hidden_size / num_heads")
    intermediate_size: PositiveInt = Field(1536, description="MLP width")
    vocab_size: PositiveInt = Field(32000, description="embedding rows (>= the tokenizer's vocabulary)")
    max_position_embeddings: PositiveInt = Field(2048, description="longest sequence (>= train.max_length)")
    rms_norm_eps: PositiveFloat = Field(1e-6, description="RMSNorm epsilon")
    tie_embeddings: bool = Field(True, description="share input and output embeddings")
    attention_bias: bool = Field(False, description="biases in the attention projections")
    rope_theta: PositiveFloat = Field(10000.0, description="rotary embedding base")
    initializer_range: PositiveFloat = Field(0.02, description="std of the random init")

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

    alpha: float = Field(0.5, ge=0, le=1, description="weight of the cosine term (0: plain CE)")
    temperature: PositiveFloat = Field(1.0, description="softmax temperature of the expected embedding")
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

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$", max_length=96, description="run name: set by the matrix (variant name or the varying values)")
    matrix: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="matrix name: set from the file's `name:`")
    recipe: str = Field(description="sft, dpo, clm, pretrain or mixed_loss (see Recipes)")
    model: ModelSpec = Field(description="the base model")
    data: DataSpec = Field(description="the training data and its held-out part")
    lora: LoraSpec | None = Field(None, description="train LoRA adapters instead of the full model")
    quantization: QuantizationSpec | None = Field(None, description="load the base in 4/8 bits (needs lora, a CUDA GPU)")
    architecture: ArchitectureSpec | None = Field(None, description="recipe pretrain: the model to build")
    lm: LMSpec = Field(default_factory=LMSpec, description="causal-LM recipes: texts -> token blocks")
    mixed_loss: MixedLossSpec | None = Field(None, description="recipe mixed_loss: the objective")
    train: TrainSpec = Field(default_factory=TrainSpec, description="optimization")
    eval: EvalSpec = Field(default_factory=EvalSpec, description="evaluation during and after training")
    dpo: DPOSpec | None = Field(None, description="recipe dpo only")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="Trackio live curves")
    hub: HubSpec = Field(default_factory=HubSpec, description="pushing the final model; remote run files")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="hardware and limits of remote jobs")
    image: str = Field(
        DEFAULT_IMAGE,
        description="container image with trainyard installed; unset on hf-jobs: a public CUDA PyTorch image installs this project's wheel",
    )
    matrix_file: str | None = Field(None, description="set by the matrix loader: the matrix YAML, relative to the working directory")
    smoke: bool = Field(False, description="set by --smoke: tiny model, fixture data, capped")
    description: str | None = Field(None, description="free text, shown in reports")

    @model_validator(mode="after")
    def _recipe_rules(self, info: ValidationInfo) -> RunSpec:
        """The recipe's descriptor (formats, sections, its rules) and the cross-section rules."""
        from trainyard.data.formats import FORMATS
        from trainyard.errors import did_you_mean
        from trainyard.recipes import RECIPES
        from trainyard.recipes.descriptors import check

        if self.recipe not in RECIPES:
            raise rule_error("RunSpec", [(("recipe",), f"unknown recipe {self.recipe!r}{did_you_mean(self.recipe, set(RECIPES))}; choose one of {sorted(RECIPES)}")])
        problems: list[tuple[tuple, str]] = []
        for loc, fmt in [(("data", "format"), self.data.format)] + [
            (("eval", "datasets", str(i), "format"), d.format) for i, d in enumerate(self.eval.datasets)
        ]:
            if fmt not in FORMATS:
                problems.append((loc, f"unknown format {fmt!r}{did_you_mean(fmt, set(FORMATS))}; choose one of {sorted(FORMATS)}"))
        if self.quantization is not None and self.lora is None:
            problems.append((("quantization",), "quantization needs lora: a quantized base can only train adapters (QLoRA)"))
        if not problems:
            problems += check(self)
        problems += self._schedule_problems(authored(info))
        if problems:
            raise rule_error("RunSpec", problems)
        return self

    def estimated_steps(self) -> int | None:
        """Optimizer steps on one device when knowable from the spec alone: max_steps, or
        one example per row (sft without packing, dpo) with data.limit set."""
        t = self.train
        if t.max_steps is not None:
            return t.max_steps
        if self.data.limit and (self.recipe == "dpo" or (self.recipe == "sft" and not t.packing)):
            return math.ceil(math.ceil(self.data.limit / (t.batch_size * t.grad_accum)) * t.epochs)
        return None

    def _schedule_problems(self, written: bool) -> list[tuple[tuple, str]]:
        t, e = self.train, self.eval
        problems: list[tuple[tuple, str]] = []
        steps = self.estimated_steps()
        if steps is not None and t.max_steps is None and t.warmup_steps >= steps:
            problems.append((("train", "warmup_steps"), (
                f"warmup_steps ({t.warmup_steps}) >= the run's {steps} steps (data.limit {self.data.limit} / "
                f"(batch_size {t.batch_size} x grad_accum {t.grad_accum}) x epochs {t.epochs:g}): the run would end warming up"
            )))
        if written and e.strategy == "steps" and e.steps is not None and t.max_steps is not None and e.steps > t.max_steps:
            problems.append((("eval", "steps"), f"eval.steps ({e.steps}) > train.max_steps ({t.max_steps}): no evaluation would run during training"))
        explicit = e.strategy == "steps" or (written and e.strategy == "epoch" and "strategy" in e.model_fields_set)
        if explicit and not self.data.has_held_out and not e.datasets:
            problems.append((("eval", "strategy"), (
                f"eval.strategy {e.strategy} but nothing to evaluate: data.eval_size is 0, no data.eval_split and no eval.datasets; "
                "hold out data (data.eval_size: 0.05) or set eval.strategy: no"
            )))
        return problems

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
