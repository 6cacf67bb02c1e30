"""--smoke: the same matrix on a tiny local model and bundled fixtures, offline, in seconds.

Every run keeps its recipe, its varying values (lr, LoRA rank, scheduler, ...) and its
name; what would need a GPU, the network or hours is swapped out. The matrix runs under
the name `<matrix>-smoke` (runs/<matrix>-smoke/, Trackio project <matrix>-smoke) so smoke
results never mix with real ones.
"""

from __future__ import annotations

from collections.abc import Callable

from trainyard.spec import RunSpec

SMOKE_MAX_STEPS = 4
SMOKE_MAX_LENGTH = 256
SMOKE_EXAMPLES = 48
SMOKE_EVAL_EXAMPLES = 16
SMOKE_TATQA_QUESTIONS = 8
SMOKE_TATQA_MAX_NEW_TOKENS = 24

# Recipes that need more than the generic swap register a hook here (e.g. from-scratch
# pretraining shrinks its architecture).
RECIPE_HOOKS: dict[str, Callable[[dict], None]] = {}


def _dpo_smoke(d: dict) -> None:
    """The prompt budget must stay below the capped max_length (the answer needs room)."""
    dpo = d.get("dpo") or {}
    if dpo.get("max_prompt_length"):
        dpo["max_prompt_length"] = min(dpo["max_prompt_length"], d["train"]["max_length"] // 2)


RECIPE_HOOKS["dpo"] = _dpo_smoke


def _tiny_architecture(d: dict) -> None:
    from trainyard.arch import SMOKE_SHAPE

    d["architecture"].update(SMOKE_SHAPE)
    d["lm"]["tokenizer_vocab_size"] = None  # the BPE follows the tiny vocab


RECIPE_HOOKS["pretrain"] = _tiny_architecture


def smoke_name(matrix: str) -> str:
    return f"{matrix}-smoke"


def _smoke_generation_evals(e: dict) -> None:
    """Judge and IFEval on the bundled fixtures; the judge replays recorded replies (no endpoint)."""
    from trainyard.fixtures import FIXTURES_DIR

    if e.get("judge"):
        e["judge"].update(
            questions=str(FIXTURES_DIR / "eval" / "mt_bench.jsonl"), split="train", limit=2, max_new_tokens=16,
            base_url=None, model=None, recorded=str(FIXTURES_DIR / "eval" / "mt_bench_judge_replies.json"),
        )
    if e.get("tatqa") is not None:
        e["tatqa"].update(limit=SMOKE_TATQA_QUESTIONS, max_new_tokens=SMOKE_TATQA_MAX_NEW_TOKENS)
    if e.get("ifeval"):
        e["ifeval"].update(prompts=str(FIXTURES_DIR / "eval" / "ifeval.jsonl"), split="train", limit=2, max_new_tokens=16)


def smoke_spec(spec: RunSpec, tiny_model_dir: str) -> RunSpec:
    from trainyard.data.formats import get_format
    from trainyard.fixtures import fixture_for_source

    d = spec.model_dump(mode="json")
    d["smoke"] = True
    d["matrix"] = smoke_name(spec.matrix)
    d["model"] = {"name": tiny_model_dir}
    d["quantization"] = None
    data = d["data"]
    data["source"] = f"fixture:{fixture_for_source(data['source']) or get_format(data['format']).fixture}"
    data["config"] = None
    data["split"] = "train"
    data["eval_split"] = None
    data["limit"] = min(data.get("limit") or SMOKE_EXAMPLES, SMOKE_EXAMPLES)
    data["eval_size"] = SMOKE_EVAL_EXAMPLES
    data["eval_limit"] = SMOKE_EVAL_EXAMPLES
    for ev in d["eval"]["datasets"]:
        fixture = fixture_for_source(ev["source"]) or get_format(ev["format"]).fixture
        ev.update(source=f"fixture:{fixture}", config=None, split="train", limit=SMOKE_EVAL_EXAMPLES)
    _smoke_generation_evals(d["eval"])
    if d["eval"]["strategy"] == "steps":
        d["eval"]["steps"] = max(1, SMOKE_MAX_STEPS // 2)
    t = d["train"]
    t.update(
        max_steps=SMOKE_MAX_STEPS,
        max_length=min(t["max_length"], SMOKE_MAX_LENGTH),
        batch_size=min(t["batch_size"], 2),
        eval_batch_size=4,
        grad_accum=min(t["grad_accum"], 2),
        precision="auto",
        gradient_checkpointing=False,
        logging_steps=1,
        save_steps=max(1, SMOKE_MAX_STEPS // 2),  # a checkpoint before the end: resume is exercised
        warmup_steps=min(t["warmup_steps"], 1),
    )
    d["tracking"].update(space_id=None, server_url=None, project=None)
    d["hub"]["push_to"] = "run_dir"  # a smoke push lands in the run dir, never on the Hub
    hook = RECIPE_HOOKS.get(spec.recipe)
    if hook is not None:
        hook(d)
    return RunSpec.model_validate(d)
