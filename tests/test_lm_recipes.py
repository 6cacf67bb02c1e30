"""Causal-LM recipes end to end on the tiny model (a few steps, CPU, offline), plus their
data step and bad-input errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from trainyard.contract import ExitCode
from trainyard.errors import DataFormatError
from trainyard.matrix import load_matrix
from trainyard.run_dir import RunDir
from trainyard.spec import EvalSetSpec

JOBS = Path(__file__).resolve().parents[1] / "jobs"


@pytest.fixture
def tiny(tiny_model: str) -> str:  # conftest's session-wide tiny model
    return tiny_model


def smoke_run(job: str, run: str, tiny: str, tmp_path: Path, **overrides):
    from trainyard.run import execute
    from trainyard.smoke import smoke_spec

    original = load_matrix(JOBS / job).run(run).model_copy(update=overrides)  # before the smoke swap
    spec = smoke_spec(original, tiny)
    spec.tracking.enabled = False
    spec.train.max_steps = 2
    rundir = RunDir(tmp_path / run)
    assert execute(spec, rundir) == ExitCode.COMPLETED, rundir.status()
    metrics = json.loads((rundir.path / "metrics.json").read_text())
    for key, value in metrics.items():
        assert isinstance(value, (int, float)) and math.isfinite(value), (key, value)
    assert (rundir.final / "config.json").is_file() or (rundir.final / "adapter_config.json").is_file()
    return metrics, rundir


@pytest.mark.slow  # ~25 s: nine eval sets, each evaluated during and after training
def test_clm_end_to_end_logs_every_eval_set(tiny, tmp_path):
    metrics, rundir = smoke_run("wikitext_scaling.yaml", "0.6b_lr2e-5", tiny, tmp_path)
    sets = ["financial_qa", "fingpt", "alpaca", "fiqa", "twitter", "financial_reports", "financial_news", "wikitext"]
    for name in sets:
        assert metrics[f"eval/{name}/perplexity"] == pytest.approx(math.exp(metrics[f"eval/{name}/loss"]))
        assert metrics[f"eval/{name}/tokens"] > 0
    logged = {k for entry in rundir.history() for k in entry}
    assert {f"eval_{name}_loss" for name in sets} <= logged  # during training, per set
    assert metrics["train/tokens_per_second"] > 0


@pytest.mark.slow  # trains a whole run
def test_clm_with_lora_saves_an_adapter(tiny, tmp_path):
    from trainyard.spec import EvalSpec, LoraSpec

    spec = load_matrix(JOBS / "wikitext_scaling.yaml").run("1.7b_lr5e-6")
    two_sets = EvalSpec(strategy="no", datasets=spec.eval.datasets[:2])  # keep the test fast
    metrics, rundir = smoke_run("wikitext_scaling.yaml", "1.7b_lr5e-6", tiny, tmp_path,
                                lora=LoraSpec(r=4, alpha=8), eval=two_sets)
    assert (rundir.final / "adapter_config.json").is_file()
    assert metrics["eval/financial_qa/loss"] > 0 and metrics["eval/fingpt/loss"] > 0
    assert metrics["model/trainable_parameters"] < metrics["model/parameters"]


@pytest.mark.slow  # trains a whole run
def test_pretrain_end_to_end_reports_size_and_speed(tiny, tmp_path):
    metrics, rundir = smoke_run("slm_wikitext103.yaml", "base", tiny, tmp_path)
    from trainyard.arch import count_config_parameters
    from trainyard.smoke import smoke_spec

    arch = smoke_spec(load_matrix(JOBS / "slm_wikitext103.yaml").run("base"), tiny).architecture
    assert metrics["model/parameters"] == count_config_parameters(arch)
    assert metrics["model/memory_mb"] == pytest.approx(count_config_parameters(arch) * 4 / 2**20, rel=0.01)
    for key in ("train/tokens_per_second", "train/runtime_s", "eval/wikitext103_val/loss", "eval/wikitext103_val/perplexity"):
        assert metrics[key] > 0
    assert (rundir.path / "tokenizer" / "tokenizer.json").is_file()  # reused on resume
    assert (rundir.final / "tokenizer.json").is_file()


@pytest.mark.slow  # trains a whole run
def test_mixed_loss_end_to_end_logs_ce_cos_and_accuracy(tiny, tmp_path):
    metrics, rundir = smoke_run("mixed_loss_wt2.yaml", "mixed_a0.5_k256", tiny, tmp_path)
    name = "wikitext2_val"
    for part in ("loss", "perplexity", "ce_loss", "cos_loss", "mixed_loss", "token_accuracy"):
        assert f"eval/{name}/{part}" in metrics
    # final loss / perplexity are CE only (the perplexity evaluator also scores the last,
    # partial block, so the two differ slightly); the objective is reported next to them
    assert metrics[f"eval/{name}/ce_loss"] == pytest.approx(metrics[f"eval/{name}/loss"], rel=1e-2)
    assert metrics[f"eval/{name}/mixed_loss"] == pytest.approx(
        0.5 * metrics[f"eval/{name}/ce_loss"] + 0.5 * metrics[f"eval/{name}/cos_loss"], rel=1e-6)
    history = rundir.history()
    evals = [e for e in history if f"eval_{name}_loss" in e]
    assert evals and {f"eval_{name}_{k}" for k in ("ce_loss", "cos_loss", "perplexity", "token_accuracy")} <= set(evals[-1])
    assert any("ce_loss" in e and "loss" in e for e in history)  # training logs carry the parts too


@pytest.mark.slow  # trains a whole run
def test_mixed_loss_alpha_zero_trains_on_plain_ce(tiny, tmp_path):
    """The baseline arm: the trainer's training loss is the plain CE it logs."""
    metrics, rundir = smoke_run("mixed_loss_wt2.yaml", "ce", tiny, tmp_path)
    first = next(e for e in rundir.history() if "loss" in e and "ce_loss" in e)
    assert first["loss"] == pytest.approx(first["ce_loss"], rel=1e-4)


def test_to_blocks_cuts_fixed_windows_with_eos_between_texts(tiny):
    from transformers import AutoTokenizer

    from trainyard.data.lm import to_blocks

    tok = AutoTokenizer.from_pretrained(tiny)
    texts = ["The river flows north.", "Revenue rose 12% in the quarter."] * 20
    n = sum(len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)
    ds = to_blocks(texts, tok, block_size=16)
    assert len(ds) == n // 16 and all(len(b) == 16 for b in ds["input_ids"])
    assert tok.eos_token_id in ds["input_ids"][0] + ds["input_ids"][1]
    overlapping = to_blocks(texts, tok, block_size=16, stride=8)
    assert len(overlapping) == (n - 16) // 8 + 1
    assert overlapping["input_ids"][1][:8] == ds["input_ids"][0][8:]
    short = to_blocks(["tiny"], tok, block_size=16)  # smaller than a block: one short block
    assert len(short) == 1 and len(short["input_ids"][0]) < 16


def test_eval_set_without_its_text_field_names_file_field_and_columns(tmp_path):
    from trainyard.data.lm import load_eval_texts

    path = tmp_path / "reports.jsonl"
    path.write_text('{"sentence": "Revenue rose.", "year": 2020}\n')
    with pytest.raises(DataFormatError) as err:
        load_eval_texts(EvalSetSpec(name="financial_reports", source=str(path), format="text"))
    msg = str(err.value)
    assert "eval.datasets[financial_reports]" in msg and str(path) in msg
    assert "['text']" in msg and "['sentence', 'year']" in msg and "text_field" in msg


def test_chat_formats_are_rejected_for_lm_recipes():
    """The schema refuses them (recipes/descriptors.py), before any job starts."""
    from pydantic import ValidationError

    from trainyard.spec import RunSpec

    base = {"name": "r", "matrix": "m", "recipe": "clm", "model": {"name": "m"}, "data": {"source": "fixture:wikitext", "format": "text"}}
    with pytest.raises(ValidationError, match="gives prompt_completion rows; recipe clm evaluates text: use one of .*instruction_text"):
        RunSpec.model_validate({**base, "eval": {"datasets": [{"name": "alpaca", "source": "fixture:finance_alpaca", "format": "alpaca"}]}})
    with pytest.raises(ValidationError, match="recipe clm takes text"):
        RunSpec.model_validate({**base, "data": {"source": "fixture:finance_alpaca", "format": "alpaca"}})


def test_lora_on_a_from_scratch_model_fails_validation(tmp_path):
    from trainyard.errors import SpecError

    doc = (JOBS / "slm_wikitext103.yaml").read_text() + "variants:\n  - {name: lora, lora: {r: 8}}\n"
    path = tmp_path / "bad.yaml"
    path.write_text(doc)
    with pytest.raises(SpecError, match="from-scratch model .* has none"):
        load_matrix(path)


def test_study_values_resolve():
    scaling = load_matrix(JOBS / "wikitext_scaling.yaml")
    assert [(r.model.name, r.train.lr) for r in scaling.runs] == [
        ("Qwen/Qwen3-0.6B", 2e-5), ("Qwen/Qwen3-1.7B", 2e-5), ("Qwen/Qwen3-4B", 2e-5),
        ("Qwen/Qwen3-1.7B", 5e-6), ("Qwen/Qwen3-4B", 3e-6)]
    assert [d.name for d in scaling.runs[0].eval.datasets] == [
        "financial_qa", "fingpt", "alpaca", "fiqa", "twitter", "financial_reports", "financial_news", "wikitext"]
    slm = load_matrix(JOBS / "slm_wikitext103.yaml").runs[0]
    from trainyard.arch import count_config_parameters

    assert count_config_parameters(slm.architecture) == 25_269_120
    assert (slm.data.limit, slm.lm.min_chars, slm.lm.stride, slm.train.max_length) == (15000, 50, 256, 256)
    assert (slm.train.batch_size, slm.train.grad_accum, slm.train.lr, slm.train.scheduler, slm.train.max_steps) == (16, 2, 5e-4, "cosine", 2000)
    mixed = load_matrix(JOBS / "mixed_loss_wt2.yaml")
    arms = {r.name: (r.mixed_loss.alpha, r.mixed_loss.temperature, r.mixed_loss.top_k) for r in mixed.runs}
    assert arms["ce"][0] == 0.0 and arms["mixed_a0.5_k256"] == (0.5, 1.0, 256)
    assert {v for k, v in arms.items() if k not in ("ce", "mixed_a0.5_k256")} == {
        (a, t, 256) for a in (0.25, 0.5, 0.75) for t in (0.7, 1.5)}
    assert all(r.model.name == "distilbert/distilgpt2" and r.train.max_length == 256 for r in mixed.runs)


def test_min_chars_filters_before_the_limit_and_keeps_eval_limit(monkeypatch):
    """`limit` counts texts kept after lm.min_chars; an eval_split keeps its eval_limit."""
    import trainyard.data.lm as lm
    from trainyard.spec import RunSpec

    seen = []

    def fake_load(data, where="data"):
        from datasets import Dataset

        from trainyard.data.loading import DataStats

        seen.append(data)
        texts = ["short", "x" * 60, "y" * 70, "tiny", "z" * 80]
        held = Dataset.from_dict({"text": ["w" * 55, "no"]})
        return Dataset.from_dict({"text": texts}), held, DataStats(source=data.source)

    monkeypatch.setattr(lm, "load_examples", fake_load)
    spec = RunSpec.model_validate({
        "name": "r", "matrix": "m", "recipe": "clm", "model": {"name": "x"},
        "data": {"source": "s", "format": "text", "limit": 2, "eval_split": "validation", "eval_limit": 7},
        "lm": {"min_chars": 50},
    })
    out = lm.load_train_texts(spec)
    assert out.train == ["x" * 60, "y" * 70] and out.held_out == ["w" * 55]
    assert seen[0].limit is None and seen[0].eval_limit == 7
