"""User-facing errors: each names the file, the run and the key, and says how to fix it."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

# Names users bring from transformers / TRL / axolotl / torchtune configs -> our dotted key.
ALIASES: dict[str, str] = {
    "learning_rate": "train.lr",
    "lr_rate": "train.lr",
    "per_device_train_batch_size": "train.batch_size",
    "micro_batch_size": "train.batch_size",
    "train_batch_size": "train.batch_size",
    "per_device_eval_batch_size": "train.eval_batch_size",
    "num_train_epochs": "train.epochs",
    "num_epochs": "train.epochs",
    "n_epochs": "train.epochs",
    "epoch": "train.epochs",
    "gradient_accumulation_steps": "train.grad_accum",
    "gradient_accumulation": "train.grad_accum",
    "grad_accumulation": "train.grad_accum",
    "accumulation_steps": "train.grad_accum",
    "warmup": "train.warmup_ratio",
    "warmup_fraction": "train.warmup_ratio",
    "num_warmup_steps": "train.warmup_steps",
    "lr_scheduler_type": "train.scheduler",
    "lr_scheduler": "train.scheduler",
    "scheduler_type": "train.scheduler",
    "num_cycles": "train.scheduler_cycles",
    "optim": "train.optimizer",
    "optimizer_type": "train.optimizer",
    "max_seq_length": "train.max_length",
    "max_seq_len": "train.max_length",
    "seq_len": "train.max_length",
    "sequence_len": "train.max_length",
    "sequence_length": "train.max_length",
    "context_length": "train.max_length",
    "block_size": "train.max_length",
    "cutoff_len": "train.max_length",
    "bf16": "train.precision",
    "fp16": "train.precision",
    "dtype": "train.precision",
    "torch_dtype": "train.precision",
    "mixed_precision": "train.precision",
    "clip_grad_norm": "train.max_grad_norm",
    "gradient_clipping": "train.max_grad_norm",
    "save_every": "train.save_steps",
    "log_steps": "train.logging_steps",
    "logging_interval": "train.logging_steps",
    "steps": "train.max_steps",
    "total_steps": "train.max_steps",
    "num_steps": "train.max_steps",
    "train_steps": "train.max_steps",
    "lora_r": "lora.r",
    "rank": "lora.r",
    "lora_rank": "lora.r",
    "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout",
    "lora_target_modules": "lora.target_modules",
    "lora_target_linear": "lora.target_modules",
    "load_in_4bit": "quantization.bits",
    "load_in_8bit": "quantization.bits",
    "bnb_4bit_quant_type": "quantization.quant_type",
    "model_name_or_path": "model.name",
    "model_name": "model.name",
    "base_model": "model.name",
    "model_id": "model.name",
    "pretrained_model_name_or_path": "model.name",
    "tokenizer_name": "model.tokenizer",
    "attn_implementation": "model.attn_implementation",
    "flash_attention": "model.attn_implementation",
    "dataset": "data.source",
    "dataset_name": "data.source",
    "dataset_path": "data.source",
    "dataset_text_field": "data.text_field",
    "text_column": "data.text_field",
    "max_samples": "data.limit",
    "num_samples": "data.limit",
    "max_train_samples": "data.limit",
    "val_set_size": "data.eval_size",
    "val_size": "data.eval_size",
    "test_size": "data.eval_size",
    "validation_split": "data.eval_split",
    "validation_split_percentage": "data.eval_size",
    "eval_strategy": "eval.strategy",
    "evaluation_strategy": "eval.strategy",
    "eval_steps": "eval.steps",
    "eval_every": "eval.steps",
    "num_layers": "architecture.num_layers",
    "n_layer": "architecture.num_layers",
    "n_layers": "architecture.num_layers",
    "num_hidden_layers": "architecture.num_layers",
    "n_head": "architecture.num_heads",
    "num_attention_heads": "architecture.num_heads",
    "num_key_value_heads": "architecture.num_kv_heads",
    "n_embd": "architecture.hidden_size",
    "d_model": "architecture.hidden_size",
    "max_position": "architecture.max_position_embeddings",
    "n_positions": "architecture.max_position_embeddings",
    "dpo_beta": "dpo.beta",
    "beta": "dpo.beta",
    "loss_type": "dpo.loss_type",
    "push_to_hub": "hub.push",
    "hub_model_id": "hub.repo",
    "report_to": "tracking.enabled",
    "wandb_project": "tracking.project",
    "timeout_hours": "resources.timeout",
    "num_gpus": "resources.gpus",
    "gpu": "resources.gpus",
    "hardware": "resources.flavor",
}


@dataclass
class Problem:
    file: str
    message: str
    run: str | None = None
    key: str | None = None
    line: int | None = None

    def where(self) -> str:
        return self.file + (f":{self.line}" if self.line else "")

    def __str__(self) -> str:
        parts = [self.where()]
        if self.run:
            parts.append(f"run {self.run!r}")
        if self.key:
            parts.append(f"key {self.key!r}")
        return f"{' | '.join(parts)}: {self.message}"


RUNS_SHOWN = 4


def group_problems(problems: list[Problem], total_runs: int | None = None) -> list[str]:
    """One line per distinct problem; the runs that share it are listed together."""
    groups: dict[tuple, list[str | None]] = {}
    for p in problems:
        groups.setdefault((p.where(), p.key, p.message), []).append(p.run)
    lines = []
    for (where, key, message), runs in groups.items():
        parts = [where]
        names = list(dict.fromkeys(r for r in runs if r))
        if len(names) == 1:
            parts.append(f"run {names[0]!r}")
        elif names and total_runs and len(names) == total_runs:
            parts.append(f"all {total_runs} runs")
        elif names:
            shown = ", ".join(repr(n) for n in names[:RUNS_SHOWN])
            more = f" and {len(names) - RUNS_SHOWN} more" if len(names) > RUNS_SHOWN else ""
            parts.append(f"{len(names)} runs: {shown}{more}")
        if key:
            parts.append(f"key {key!r}")
        lines.append(f"{' | '.join(parts)}: {message}")
    return lines


@dataclass
class SpecError(Exception):
    """One or more problems found while loading / expanding / validating a matrix."""

    problems: list[Problem] = field(default_factory=list)
    total_runs: int | None = None

    def __str__(self) -> str:
        lines = group_problems(self.problems, self.total_runs)
        n = len(lines)
        head = f"{n} problem{'s' if n != 1 else ''} found; nothing was run or submitted:"
        return "\n".join([head] + [f"  - {line}" for line in lines])


class BadInput(ValueError):
    """The spec or the data is wrong: the entrypoint exits ExitCode.BAD_INPUT, never retried."""


class ConfigError(BadInput):
    """A setting this machine or model cannot honor (fp16 without a GPU, max_length over the
    model's positions, ...), found at run time."""


class DataFormatError(BadInput):
    """A dataset lacks what its format needs (found when the data is first loaded)."""


def did_you_mean(word: str, candidates: list[str] | set[str]) -> str:
    close = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def suggest_key(dotted: str, known: set[str] | dict, siblings: set[str] | None = None, full: bool = False) -> str:
    """' (did you mean ...?)' for an unknown dotted key: a known alias first (learning_rate ->
    lr), then a close sibling in the same section, then the same leaf in another section
    (train.beta -> dpo.beta), then any close dotted key. A key of the same section is named
    by its leaf (as written in a section); elsewhere, or with `full`, by its dotted path."""
    parent, _, leaf = dotted.rpartition(".")

    def name(target: str) -> str:
        t_parent, _, t_leaf = target.rpartition(".")
        return t_leaf if (t_parent == parent and not full) else target

    alias = ALIASES.get(leaf) or ALIASES.get(leaf.lower())
    if alias and alias != dotted:
        return f" (did you mean {name(alias)!r}?)"
    if siblings:
        close = difflib.get_close_matches(leaf, sorted(siblings), n=1, cutoff=0.6)
        if close:
            return f" (did you mean {name('.'.join(p for p in (parent, close[0]) if p))!r}?)"
    elsewhere = sorted(k for k in known if k.split(".")[-1] == leaf and k != dotted)
    if elsewhere:
        return f" (did you mean {elsewhere[0]!r}?)"
    return did_you_mean(dotted, set(known))


class BackendError(RuntimeError):
    """A backend cannot take a run (bad flavor, no token, API refusal); the message says the fix."""
