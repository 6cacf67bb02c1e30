"""Generation-based scores a chat recipe runs around training: judge and IFEval.

Configured by `eval.judge` / `eval.ifeval`; metrics `judge/...`, `ifeval/...` after training
and, with `eval.compare_before`, `judge_before/...`, `ifeval_before/...` on the base model.
"""

from __future__ import annotations

from trainyard.context import RunContext
from trainyard.spec import RunSpec

GENERATION_PREFIXES = ("eval/", "judge", "ifeval")


def generation_evals(model, tokenizer, spec: RunSpec, ctx: RunContext, *, before: bool = False) -> dict[str, float]:
    e = spec.eval
    if before and not e.compare_before:
        return {}
    suffix = "_before" if before else ""
    batch_size = spec.train.eval_batch_size or 8
    metrics: dict[str, float] = {}
    if e.judge is not None:
        from trainyard.evaluation.judge import (
            evaluate_mt_bench,
            judge_from_config,
            judge_metrics,
            load_questions,
        )

        j = e.judge
        judge = judge_from_config({"type": "recorded", "path": j.recorded} if j.recorded else {"type": "openai", "base_url": j.base_url, "model": j.model, "api_key_env": j.api_key_env})
        questions = load_questions(j.questions, split=j.split, limit=j.limit)
        result = evaluate_mt_bench(model, tokenizer, questions, judge, max_new_tokens=j.max_new_tokens, batch_size=batch_size)
        metrics.update(judge_metrics(result, prefix=f"judge{suffix}"))
        ctx.log.info("judge%s: overall %.3f (turn1 %.3f, turn2 %.3f), %d unparseable ratings", suffix, result["overall"], result["turn1"], result["turn2"], result["missing"])
    if e.ifeval is not None:
        from trainyard.evaluation.ifeval import (
            evaluate_ifeval_generation,
            ifeval_metrics,
            load_ifeval,
        )

        i = e.ifeval
        prompts = load_ifeval(i.prompts, split=i.split, limit=i.limit)
        result = evaluate_ifeval_generation(model, tokenizer, prompts, max_new_tokens=i.max_new_tokens, batch_size=batch_size)
        metrics.update(ifeval_metrics(result, prefix=f"ifeval{suffix}"))
        ctx.log.info("ifeval%s: prompt accuracy %.3f, instruction accuracy %.3f", suffix, result["prompt_accuracy"], result["instruction_accuracy"])
    return metrics  # a NaN judge mean (no parseable rating) stays visible: "nan" in metrics.json
