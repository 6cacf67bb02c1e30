"""Instruction following (IFEval): instruction-level accuracy and prompt-level success.

The checks are lm-evaluation-harness's IFEval implementation (``lm_eval.tasks.ifeval``), not
rules written again here. It needs the ``eval`` extra (lm-eval, langdetect, immutabledict,
nltk) and NLTK's ``punkt_tab`` data, provisioned once with
``python -m trainyard.evaluation.provision`` (the harness would otherwise try to download
it on import, which fails offline).

Metrics: ``ifeval/instruction_accuracy`` and ``ifeval/prompt_accuracy`` (strict, the
headline numbers), plus ``..._loose`` (the harness's loose variant: also accepts the
response without its first / last line or without ``*``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainyard.evaluation.generate import generate_chat, strip_thinking

IFEVAL_FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "eval" / "ifeval.jsonl"
PUNKT_RESOURCE = "tokenizers/punkt_tab/english/"


class IfevalUnavailable(RuntimeError):
    """The IFEval checkers cannot run here (extra not installed or NLTK data missing)."""


def punkt_available() -> bool:
    try:
        import nltk

        nltk.data.find(PUNKT_RESOURCE)
    except (ImportError, LookupError):
        return False
    return True


def _harness() -> tuple[Any, Mapping[str, Any]]:
    """lm-eval's IFEval utils, after checking what it needs (so its import never downloads)."""
    try:
        import immutabledict  # noqa: F401
        import langdetect
        import lm_eval  # noqa: F401
        import nltk  # noqa: F401
    except ImportError as exc:
        raise IfevalUnavailable(
            f"IFEval needs the 'eval' extra (missing module {exc.name!r}): pip install 'trainyard[eval]'"
        ) from exc
    if not punkt_available():
        raise IfevalUnavailable(
            "NLTK data 'punkt_tab' is not installed, and IFEval's sentence checks need it. Run "
            "`python -m trainyard.evaluation.provision` once where there is network (the Docker "
            "image does it at build time), or set NLTK_DATA to a directory that holds it."
        )
    langdetect.DetectorFactory.seed = 0  # langdetect is random otherwise: same text, same verdict
    from lm_eval.tasks.ifeval import instructions_registry, utils

    return utils, instructions_registry.INSTRUCTION_DICT


@dataclass(frozen=True)
class IfevalPrompt:
    key: int | str
    prompt: str
    instruction_id_list: tuple[str, ...]
    kwargs: tuple[dict[str, Any], ...]


def load_ifeval(source: str | Path = IFEVAL_FIXTURE, *, split: str = "train",
                limit: int | None = None) -> list[IfevalPrompt]:
    """Rows in IFEval's format (key, prompt, instruction_id_list, kwargs) from a local
    .jsonl file or a Hub dataset id such as ``google/IFEval``."""
    path = Path(source)
    if path.suffix == ".jsonl" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: IFEval prompt file not found")
        lines = path.read_text(encoding="utf-8").splitlines()
        rows = [(f"{path}:{n}", json.loads(line)) for n, line in enumerate(lines, 1) if line.strip()]
    else:
        from datasets import load_dataset

        rows = [(f"{source}[{i}]", r) for i, r in enumerate(load_dataset(str(source), split=split))]
    prompts = []
    for where, row in rows:
        missing = [k for k in ("key", "prompt", "instruction_id_list", "kwargs") if k not in row]
        if missing:
            raise ValueError(f"{where}: missing IFEval field(s) {missing}")
        if len(row["kwargs"]) != len(row["instruction_id_list"]):
            raise ValueError(f"{where}: kwargs must have one entry per instruction id")
        prompts.append(IfevalPrompt(row["key"], row["prompt"], tuple(row["instruction_id_list"]),
                                    tuple(dict(k or {}) for k in row["kwargs"])))
    return prompts[:limit] if limit is not None else prompts


def score_ifeval(prompts: Sequence[IfevalPrompt], responses: Sequence[str]) -> dict[str, Any]:
    """Strict and loose accuracies of ``responses[i]`` to ``prompts[i]`` (harness checkers)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    utils, registry = _harness()
    for p in prompts:
        unknown = [i for i in p.instruction_id_list if i not in registry]
        if unknown:
            raise ValueError(f"IFEval prompt {p.key!r}: unknown instruction id(s) {unknown}")
    per_prompt = []
    totals = {"strict": [0, 0, 0], "loose": [0, 0, 0]}  # followed instructions, instructions, prompts ok
    for p, response in zip(prompts, responses, strict=True):
        example = utils.InputExample(key=p.key, instruction_id_list=list(p.instruction_id_list),
                                     prompt=p.prompt, kwargs=[dict(k) for k in p.kwargs])
        row: dict[str, Any] = {"key": p.key}
        for mode, check in (("strict", utils.test_instruction_following_strict),
                            ("loose", utils.test_instruction_following_loose)):
            out = check(example, response)
            totals[mode][0] += sum(out.follow_instruction_list)
            totals[mode][1] += len(out.follow_instruction_list)
            totals[mode][2] += bool(out.follow_all_instructions)
            row[mode] = list(out.follow_instruction_list)
        per_prompt.append(row)
    n = len(prompts)

    def ratio(a: int, b: int) -> float:
        return a / b if b else 0.0

    return {
        "instruction_accuracy": ratio(totals["strict"][0], totals["strict"][1]),
        "prompt_accuracy": ratio(totals["strict"][2], n),
        "instruction_accuracy_loose": ratio(totals["loose"][0], totals["loose"][1]),
        "prompt_accuracy_loose": ratio(totals["loose"][2], n),
        "prompts": n,
        "instructions": totals["strict"][1],
        "per_prompt": per_prompt,
    }


def evaluate_ifeval_generation(model: Any, tokenizer: Any, prompts: Sequence[IfevalPrompt], *,
                               max_new_tokens: int = 1024, batch_size: int = 8,
                               limit: int | None = None) -> dict[str, Any]:
    """Greedy responses of the model to each prompt, scored with :func:`score_ifeval`."""
    _harness()  # fail before spending time on generation
    prompts = list(prompts)[:limit] if limit is not None else list(prompts)
    replies = generate_chat(model, tokenizer, [[{"role": "user", "content": p.prompt}] for p in prompts],
                            max_new_tokens=max_new_tokens, batch_size=batch_size)
    result = score_ifeval(prompts, [strip_thinking(r) for r in replies])
    result["responses"] = replies
    return result


def ifeval_metrics(result: Mapping[str, Any], prefix: str = "ifeval") -> dict[str, float]:
    # prompts / instructions: the n a report shows next to the accuracies
    keys = ("instruction_accuracy", "prompt_accuracy", "instruction_accuracy_loose", "prompt_accuracy_loose", "prompts", "instructions")
    return {f"{prefix}/{k}": float(result[k]) for k in keys}
