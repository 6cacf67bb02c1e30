"""Metric names: the one mapping from trainer log keys to the contract's names."""

from __future__ import annotations

import math
from typing import Any

TRAIN_KEYS = {
    "loss": "train/loss",
    "learning_rate": "train/learning_rate",
    "grad_norm": "train/grad_norm",
    "epoch": "train/epoch",
    "num_tokens": "train/num_tokens",
    "mean_token_accuracy": "train/mean_token_accuracy",
    "entropy": "train/entropy",
}


# Values of one train() call only, i.e. of the last segment after a resume: the end-of-train()
# log (average loss, runtime, speeds) and the running runtime / tokens-per-second that
# include_num_input_tokens_seen adds to every log. Neither curve points nor whole-run
# metrics: recipes.common computes those over every segment (train/mean_loss, ...).
TRAINER_SUMMARY_KEYS = frozenset({
    "train_loss", "train_runtime", "train_samples_per_second", "train_steps_per_second",
    "train_tokens_per_second", "total_flos",
})
_END_OF_TRAIN_KEYS = ("train_loss", "train_samples_per_second", "train_steps_per_second")


def is_trainer_summary(logs: dict[str, Any]) -> bool:
    """The log Trainer.train() writes once at its end (not a step's log)."""
    return any(k in logs for k in _END_OF_TRAIN_KEYS)


# Trainer metric groups that already contain a '/' (TRL DPO: rewards/accuracies, rewards/margins,
# logps/chosen, logits/rejected, ...): train-time values go under train/, eval ones under eval/<set>/.
TRAINER_GROUPS = ("rewards/", "logps/", "logits/")


def canonical(key: str, eval_names: list[str], default_eval: str) -> str:
    """'eval_heldout_loss' -> 'eval/heldout/loss'; 'loss' -> 'train/loss'; others 'train/<key>'."""
    if key in TRAIN_KEYS:
        return TRAIN_KEYS[key]
    if key.startswith(TRAINER_GROUPS):
        return f"train/{key}"
    if key.startswith("eval_"):
        rest = key[len("eval_"):]
        for name in sorted(eval_names, key=len, reverse=True):
            if rest.startswith(name + "_"):
                return f"eval/{name}/{rest[len(name) + 1:]}"
        return f"eval/{default_eval}/{rest}"
    if key.startswith("train_"):
        return f"train/{key[len('train_'):]}"
    if "/" in key:
        return key
    return f"train/{key}"


def canonical_dict(logs: dict[str, Any], eval_names: list[str], default_eval: str) -> dict[str, float]:
    out = {}
    for k, v in logs.items():
        if k in TRAINER_SUMMARY_KEYS:
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[canonical(k, eval_names, default_eval)] = float(v)
    return out


def safe_exp(x: float) -> float:
    """exp that returns inf instead of raising OverflowError (a diverged loss stays visible)."""
    if not math.isfinite(x):
        return float("nan") if math.isnan(x) else math.inf
    return math.exp(x) if x < 709.0 else math.inf
