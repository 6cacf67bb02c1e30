"""Recipe dpo: end to end on the tiny model (smoke path), schema rules, bad inputs, truncation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from trainyard.contract import PADDING_FRACTION, ExitCode
from trainyard.data.prompt_truncation import prompt_token_count, truncate_prompt, truncate_prompts
from trainyard.data.tatqa_pairs import load_tatqa_pairs
from trainyard.errors import SpecError
from trainyard.evaluation.tatqa_prompt import INSTRUCTION
from trainyard.fixtures.tiny_model import ensure_tiny_model
from trainyard.matrix import load_matrix
from trainyard.metrics import canonical
from trainyard.run_dir import RunDir
from trainyard.smoke import smoke_spec
from trainyard.spec import RunSpec

JOBS = Path(__file__).resolve().parents[1] / "jobs" / "tatqa_dpo.yaml"


@pytest.fixture(scope="module")
def tiny() -> str:
    return str(ensure_tiny_model())


@pytest.fixture(scope="module")
def tokenizer(tiny):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny)


def _spec(**overrides) -> RunSpec:
    base = {
        "name": "t",
        "matrix": "m",
        "recipe": "dpo",
        "model": {"name": "Qwen/Qwen3-1.7B"},
        "data": {"source": "fixture:tatqa", "format": "tatqa_preference"},
        "lora": {"r": 4, "alpha": 8},
        "dpo": {"beta": 0.1, "max_prompt_length": 384},
        "train": {"max_length": 768},
    }
    for key, value in overrides.items():
        node = base
        *path, last = key.split(".")
        for k in path:
            node = node.setdefault(k, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return RunSpec.model_validate(base)


# ----------------------------------------------------------------------------- the study


def test_study_matrix_has_the_study_values():
    m = load_matrix(JOBS)
    assert m.name == "tatqa_dpo" and m.baseline == "beta0.02"
    assert m.run_names == ["beta0.05", "beta0.03", "beta0.02", "r32", "lr2.5e-6", "lr1e-5", "2ep"]
    base = m.run("beta0.02")
    assert base.model.name == "Qwen/Qwen3-1.7B" and base.data.limit == 13176
    assert (base.lora.r, base.lora.alpha, base.lora.dropout) == (16, 32, 0.05)
    q = base.quantization
    assert (q.bits, q.quant_type, q.compute_dtype) == (4, "nf4", "bf16")
    t = base.train
    assert (t.batch_size, t.grad_accum, t.lr, t.epochs, t.max_length) == (1, 32, 5e-6, 1, 768)
    assert (base.dpo.beta, base.dpo.max_prompt_length) == (0.02, 384)
    assert [m.run(n).dpo.beta for n in ("beta0.05", "beta0.03")] == [0.05, 0.03]
    assert (m.run("r32").lora.r, m.run("r32").lora.alpha) == (32, 64)
    assert [m.run(n).train.lr for n in ("lr2.5e-6", "lr1e-5")] == [2.5e-6, 1e-5]
    assert m.run("2ep").train.epochs == 2


def test_smoke_drops_quantization_and_fits_the_prompt_budget(tiny):
    s = smoke_spec(load_matrix(JOBS).run("beta0.02"), tiny)
    assert s.quantization is None and s.data.source == "fixture:tatqa"
    assert s.dpo.max_prompt_length < s.train.max_length


@pytest.mark.slow  # trains a whole run
def test_end_to_end_smoke_run_logs_finite_dpo_metrics(tmp_path, tiny, monkeypatch):
    """Two optimizer steps on the tiny model; reward metrics reach metrics.json and Trackio."""
    from trainyard.run import execute

    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    spec = smoke_spec(load_matrix(JOBS).run("beta0.02"), tiny)
    spec = spec.model_copy(update={
        "train": spec.train.model_copy(update={"max_steps": 2}),
        "data": spec.data.model_copy(update={"eval_size": 4, "eval_limit": 4}),
        # the study's IFEval needs NLTK punkt_tab (provisioned in the image; tests/test_ifeval.py covers it)
        "eval": spec.eval.model_copy(update={"ifeval": None}),
    })
    rundir = RunDir(tmp_path / "run")
    assert execute(spec, rundir) == ExitCode.COMPLETED, rundir.status()
    metrics = json.loads((rundir.path / "metrics.json").read_text())
    for key in ("train/loss", "train/mean_loss", "train/rewards/accuracies", "train/rewards/margins", "train/rewards/chosen",
                "eval/heldout/loss", "eval/heldout/rewards/accuracies", "eval/heldout/rewards/margins"):
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    assert 0.0 <= metrics["eval/heldout/rewards/accuracies"] <= 1.0
    assert 0.0 <= metrics[PADDING_FRACTION] < 1.0  # of the length-grouped chosen/rejected rows
    # TAT-QA generation eval before and after training (8 fixture questions in --smoke)
    for prefix in ("tatqa_before", "tatqa"):
        assert metrics[f"{prefix}/questions"] == 8.0
        assert 0.0 <= metrics[f"{prefix}/exact_match"] <= 1.0 and 0.0 <= metrics[f"{prefix}/f1"] <= 1.0
    assert metrics["data/train/prompt/truncated"] > 0  # the fixture prompts exceed the smoke budget
    # At step 1 the policy is the reference (LoRA B = 0, reference = adapter disabled):
    # every reward is 0 and the DPO loss is exactly ln 2.
    first = next(e for e in rundir.history() if "loss" in e)
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert first["rewards/chosen"] == 0.0 and first["rewards/rejected"] == 0.0
    assert (rundir.final / "adapter_config.json").is_file()
    import sqlite3

    db = sqlite3.connect(tmp_path / "trackio" / f"{spec.matrix}.db")
    logged = set().union(*(json.loads(row[0]) for row in db.execute("select metrics from metrics")))
    assert {"train/rewards/accuracies", "train/rewards/margins", "eval/heldout/rewards/accuracies"} <= logged


# ----------------------------------------------------------------------------- bad inputs


def test_preference_data_without_chosen_rejected_names_the_columns(tmp_path, tiny):
    from trainyard.run import execute

    data = tmp_path / "sft.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) for i in range(8)))
    spec = _spec(**{"model.name": tiny, "data.source": str(data), "data.format": "preference", "lora": None,
                    "dpo.max_prompt_length": None, "tracking.enabled": False})
    rundir = RunDir(tmp_path / "run")
    assert execute(spec, rundir) == ExitCode.BAD_INPUT
    error = rundir.status()["reason"]
    assert "needs column(s) ['chosen', 'rejected']" in error and "['completion', 'prompt']" in error


def test_quantization_without_cuda_fails_before_loading_data(tmp_path, monkeypatch):
    import torch

    import trainyard.recipes.dpo as dpo
    from trainyard.run import execute

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setattr(dpo, "load_examples", lambda *a, **k: pytest.fail("data loaded before the CUDA check"))
    spec = _spec(quantization={"bits": 4}, **{"tracking.enabled": False})
    rundir = RunDir(tmp_path / "run")
    assert execute(spec, rundir) == ExitCode.BAD_INPUT  # a config error: exit 2, never retried
    error = rundir.status()["reason"]
    assert "needs a CUDA GPU" in error and "--smoke" in error
    assert not (rundir.path / "history.json").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dpo": None}, "recipe dpo needs a `dpo:` section"),
        ({"recipe": "sft", "data.format": "alpaca"}, "dpo: only recipe dpo uses it"),
        ({"data.format": "alpaca"}, "recipe dpo takes preference: use one of ['preference', 'tatqa_preference']"),
        ({"dpo.max_prompt_length": 768}, "dpo.max_prompt_length (768) must be below train.max_length (768)"),
        ({"dpo.label_smoothing": 0.1}, "label_smoothing applies to loss_type"),
        ({"dpo.loss_type": "exo_pair"}, "exo_pair needs label_smoothing > 0"),
        ({"dpo.beta": 0}, "greater than 0"),
        ({"eval.tatqa": True, "data.format": "preference"}, "needs data.format: tatqa_preference"),
    ],
)
def test_schema_rules(overrides, message):
    with pytest.raises(ValidationError, match=None) as err:
        _spec(**overrides)
    assert message in str(err.value)


def test_dpo_section_on_sft_names_file_run_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nbase:\n  recipe: sft\n  model: {name: m}\n  data: {source: s, format: alpaca}\n"
        "  dpo: {beta: 0.1}\n"
    )
    with pytest.raises(SpecError) as err:
        load_matrix(bad)
    assert "bad.yaml" in str(err.value) and "run 'base'" in str(err.value)
    assert "dpo: only recipe dpo uses it" in str(err.value)


def test_spec_accepts_the_defaults():
    s = _spec(dpo={})
    assert (s.dpo.beta, s.dpo.loss_type, s.dpo.max_prompt_length) == (0.1, "sigmoid", None)
    assert _spec(**{"dpo.loss_type": "robust", "dpo.label_smoothing": 0.1}).dpo.label_smoothing == 0.1


# ----------------------------------------------------------------------------- pieces


def test_metric_names_for_dpo_logs():
    assert canonical("rewards/accuracies", ["heldout"], "heldout") == "train/rewards/accuracies"
    assert canonical("logps/chosen", ["heldout"], "heldout") == "train/logps/chosen"
    assert canonical("eval_rewards/margins", ["heldout"], "heldout") == "eval/heldout/rewards/margins"
    assert canonical("eval_heldout_rewards/margins", ["heldout"], "heldout") == "eval/heldout/rewards/margins"
    assert canonical("tatqa/f1", [], "heldout") == "tatqa/f1"


def test_truncate_prompt_keeps_the_end_and_the_chat_template(tokenizer):
    pair = load_tatqa_pairs("fixture:tatqa")[0]
    prompt = pair["prompt"]
    full = prompt_token_count(prompt, tokenizer)
    assert truncate_prompt(prompt, tokenizer, full) == (prompt, 0)
    budget = full // 2
    cut, removed = truncate_prompt(prompt, tokenizer, budget)
    kept = prompt_token_count(cut, tokenizer)
    assert kept <= budget and removed == full - kept and budget - kept <= 2
    assert cut[0]["role"] == "user" and cut[0]["content"].endswith(INSTRUCTION)
    assert prompt[0]["content"].endswith(cut[0]["content"])  # a suffix: cut on the left only
    rendered = tokenizer.apply_chat_template(cut, tokenize=False, add_generation_prompt=True)
    assert rendered.startswith("<|im_start|>user\n") and rendered.endswith("<|im_start|>assistant\n")


def test_truncate_prompts_counts_and_drops(tokenizer):
    pairs = load_tatqa_pairs("fixture:tatqa")[:5]
    system = [{"role": "system", "content": "You are a careful analyst. " * 20}]
    rows = pairs[:4] + [{**pairs[4], "prompt": system + pairs[4]["prompt"]}]
    budget = prompt_token_count(system + [{"role": "user", "content": ""}], tokenizer) - 1
    out, stats = truncate_prompts(rows, tokenizer, budget)
    assert (stats.examples, stats.truncated, stats.dropped) == (5, 4, 1)  # the system prompt alone is over
    assert len(out) == 4 and all(prompt_token_count(r["prompt"], tokenizer) <= budget for r in out)
    assert stats.tokens_removed == sum(prompt_token_count(r["prompt"], tokenizer) for r in pairs[:4]) - sum(
        prompt_token_count(r["prompt"], tokenizer) for r in out
    )
    assert stats.as_metrics()["data/prompt/truncated_fraction"] == 0.8
    assert all(o["chosen"] == p["chosen"] for o, p in zip(out, pairs, strict=False))
