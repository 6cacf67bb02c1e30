"""What each recipe accepts, declared once and checked by the schema (never at run time).

A descriptor names the data shapes its trainer takes (a format's ``produces``), the
sections it needs and those it would silently ignore (forbidden, so a setting never does
nothing), and its own cross-field rules. ``RunSpec`` validation runs :func:`check`;
``docs/config.md`` prints the table. Pure Python: the launcher imports it without torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainyard.spec import RunSpec

Loc = tuple[str, ...]
Rule = Callable[["RunSpec"], Iterator[tuple[Loc, str]]]

LM_TEXT = ("text",)
SFT_SHAPES = ("prompt_completion", "messages", "text")


@dataclass(frozen=True)
class RecipeDescriptor:
    name: str
    summary: str
    produces: tuple[str, ...]  # data shapes the trainer takes (trainyard.data.formats.Format.produces)
    needs: tuple[str, ...] = ()  # sections that must be present
    forbids: tuple[str, ...] = ()  # settings the recipe would ignore: must stay unset
    eval_produces: tuple[str, ...] | None = None  # shapes of eval.datasets; None: eval.datasets unsupported
    rules: tuple[Rule, ...] = ()


# Settings only some recipes read; every other recipe forbids them.
RECIPE_ONLY = {
    "dpo": "dpo",
    "architecture": "pretrain",
    "mixed_loss": "mixed_loss",
    "eval.tatqa": "dpo",
    "train.packing": "sft",
}
GENERATION_EVALS = ("eval.judge", "eval.ifeval", "eval.compare_before")  # sft and dpo generate replies
LM_ONLY = ("lm",)  # the text -> blocks section of the causal-LM recipes


def _max_length_fits_architecture(spec: RunSpec) -> Iterator[tuple[Loc, str]]:
    arch = spec.architecture
    if arch is not None and spec.train.max_length > arch.max_position_embeddings:
        yield ("train", "max_length"), (
            f"train.max_length {spec.train.max_length} exceeds architecture.max_position_embeddings "
            f"{arch.max_position_embeddings}; lower max_length or raise max_position_embeddings"
        )
    if arch is not None and spec.lm.tokenizer_vocab_size and spec.lm.tokenizer_vocab_size > arch.vocab_size:
        yield ("lm", "tokenizer_vocab_size"), (
            f"lm.tokenizer_vocab_size {spec.lm.tokenizer_vocab_size} is larger than architecture.vocab_size "
            f"{arch.vocab_size}: token ids would fall outside the embedding; raise vocab_size"
        )


def _stride_within_block(spec: RunSpec) -> Iterator[tuple[Loc, str]]:
    if spec.lm.stride is not None and spec.lm.stride > spec.train.max_length:
        yield ("lm", "stride"), f"lm.stride ({spec.lm.stride}) > train.max_length ({spec.train.max_length}) would skip tokens"


def _dpo_prompt_budget(spec: RunSpec) -> Iterator[tuple[Loc, str]]:
    d = spec.dpo
    if d is not None and d.max_prompt_length is not None and d.max_prompt_length >= spec.train.max_length:
        yield ("dpo", "max_prompt_length"), (
            f"dpo.max_prompt_length ({d.max_prompt_length}) must be below train.max_length "
            f"({spec.train.max_length}), which also has to hold the answer"
        )


def _tatqa_needs_raw_questions(spec: RunSpec) -> Iterator[tuple[Loc, str]]:
    if spec.eval.tatqa is not None and spec.data.format != "tatqa_preference":
        yield ("eval", "tatqa"), "eval.tatqa with recipe dpo reads the raw TAT-QA questions: it needs data.format: tatqa_preference"


def _lora_not_from_scratch(spec: RunSpec) -> Iterator[tuple[Loc, str]]:
    if spec.lora is not None:
        yield ("lora",), (
            "LoRA trains adapters on a pretrained base; a from-scratch model (recipe pretrain) has none. "
            "Remove `lora:` or use recipe clm to continue training a pretrained model"
        )


RECIPE_DESCRIPTORS: dict[str, RecipeDescriptor] = {
    d.name: d
    for d in (
        RecipeDescriptor(
            "sft", "supervised fine-tuning (TRL SFTTrainer), full or LoRA",
            produces=SFT_SHAPES, eval_produces=SFT_SHAPES,
        ),
        RecipeDescriptor(
            "dpo", "direct preference optimization (TRL DPOTrainer), full, LoRA or QLoRA",
            produces=("preference",), needs=("dpo",), eval_produces=None,
            rules=(_dpo_prompt_budget, _tatqa_needs_raw_questions),
        ),
        RecipeDescriptor(
            "clm", "causal-LM (continued) training on text blocks, full or LoRA",
            produces=LM_TEXT, eval_produces=LM_TEXT, rules=(_stride_within_block,),
        ),
        RecipeDescriptor(
            "pretrain", "a small LM from scratch (architecture: section), random init",
            produces=LM_TEXT, needs=("architecture",), forbids=("quantization",), eval_produces=LM_TEXT,
            rules=(_lora_not_from_scratch, _max_length_fits_architecture, _stride_within_block),
        ),
        RecipeDescriptor(
            "mixed_loss", "causal LM with CE + embedding-cosine loss (mixed_loss: section)",
            produces=LM_TEXT, needs=("mixed_loss",), eval_produces=LM_TEXT, rules=(_stride_within_block,),
        ),
    )
}
LM_RECIPES = ("clm", "pretrain", "mixed_loss")
GENERATING_RECIPES = ("sft", "dpo")


def _value(spec: Any, dotted: str) -> Any:
    node = spec
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _is_set(spec: RunSpec, dotted: str) -> bool:
    value = _value(spec, dotted)
    if dotted == "lm":
        from trainyard.spec import LMSpec

        return value != LMSpec()
    return value not in (None, False, [], {})


def forbidden(name: str) -> tuple[str, ...]:
    """Every setting recipe `name` would ignore."""
    d = RECIPE_DESCRIPTORS[name]
    out = list(d.forbids) + [key for key, owner in RECIPE_ONLY.items() if owner != name]
    if name not in GENERATING_RECIPES:
        out += GENERATION_EVALS
    if name not in LM_RECIPES:
        out += LM_ONLY
    if d.eval_produces is None:
        out.append("eval.datasets")
    return tuple(dict.fromkeys(out))


def check(spec: RunSpec) -> list[tuple[Loc, str]]:
    """Problems of `spec` against its recipe's descriptor: (loc, message) each."""
    from trainyard.data.formats import FORMATS

    d = RECIPE_DESCRIPTORS[spec.recipe]
    problems: list[tuple[Loc, str]] = []
    fmt = FORMATS.get(spec.data.format)
    if fmt is not None and fmt.produces not in d.produces:
        fitting = sorted(n for n, f in FORMATS.items() if f.produces in d.produces)
        problems.append((("data", "format"), (
            f"format {spec.data.format!r} gives {fmt.produces} rows; recipe {spec.recipe} takes {' / '.join(d.produces)}: "
            f"use one of {fitting}"
        )))
    if d.eval_produces is not None:
        for i, ev in enumerate(spec.eval.datasets):
            f = FORMATS.get(ev.format)
            if f is not None and f.produces not in d.eval_produces:
                fitting = sorted(n for n, x in FORMATS.items() if x.produces in d.eval_produces)
                problems.append((("eval", "datasets", str(i), "format"), (
                    f"eval set {ev.name!r}: format {ev.format!r} gives {f.produces} rows; recipe {spec.recipe} evaluates "
                    f"{' / '.join(d.eval_produces)}: use one of {fitting}"
                )))
    for section in d.needs:
        if _value(spec, section) is None:
            article = "an" if section[0] in "aeiou" else "a"
            problems.append(((section,), f"recipe {spec.recipe} needs {article} `{section}:` section (see docs/config.md)"))
    for key in forbidden(spec.recipe):
        if _is_set(spec, key):
            owner = RECIPE_ONLY.get(key)
            users = f"only recipe {owner} uses it" if owner else (
                "only recipes sft / dpo generate replies to score" if key in GENERATION_EVALS else
                "only the causal-LM recipes clm / pretrain / mixed_loss use it" if key in LM_ONLY else
                f"recipe {spec.recipe} does not support it"
            )
            problems.append((tuple(key.split(".")), f"{key}: {users} (this run's recipe is {spec.recipe}); remove it"))
    for rule in d.rules:
        problems.extend(rule(spec))
    return problems


def table() -> list[dict[str, str]]:
    """Rows for docs/config.md."""
    from trainyard.data.formats import FORMATS

    rows = []
    for name, d in RECIPE_DESCRIPTORS.items():
        formats = sorted(n for n, f in FORMATS.items() if f.produces in d.produces)
        rows.append({
            "recipe": name,
            "what": d.summary,
            "data.format": ", ".join(formats),
            "needs": ", ".join(d.needs) or "–",
            "ignores (refused)": ", ".join(forbidden(name)),
        })
    return rows
