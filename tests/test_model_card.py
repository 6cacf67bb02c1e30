"""Model cards, parsed back with huggingface_hub (ModelCard.load / metadata_load)."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
from huggingface_hub import ModelCard, metadata_load

from trainyard.matrix import load_matrix
from trainyard.model_card import LOSS_CURVE, render_card, write_card
from trainyard.run_dir import RunDir
from trainyard.spec import RunSpec

ROOT = Path(__file__).resolve().parents[1]
METRICS = {
    "train/loss": 1.25,
    "train/tokens_per_second": 5000.0,
    "eval/heldout/loss": 1.088,
    "eval/heldout/perplexity": math.exp(1.088),
    "eval/wiki/loss": 2.5,
    "eval/wiki/perplexity": math.exp(2.5),
    "tatqa/exact_match": 0.41,
    "tatqa_before/exact_match": 0.2,  # the base model's score: not this model's result
    "model/trainable_parameters": 1234,
}
# What PEFT's save_pretrained writes into final/README.md (peft 0.17+ card metadata).
PEFT_CARD = """---
base_model: {base}
library_name: peft
pipeline_tag: text-generation
tags:
- base_model:adapter:{base}
- lora
- transformers
language:
- en
---

# Model Card for Model ID
"""


def spec_of(**over) -> RunSpec:
    d = {
        "name": "5k", "matrix": "rust_sft", "recipe": "sft", "matrix_file": "jobs/rust_sft.yaml",
        "model": {"name": "Qwen/Qwen3-0.6B"},
        "data": {"source": "Fortytwo-Network/Strandset-Rust-v1", "format": "strandset_rust", "limit": 5000},
        "lora": {"r": 16, "alpha": 32},
        "eval": {"datasets": [{"name": "wiki", "source": "Salesforce/wikitext", "config": "wikitext-2-raw-v1", "split": "test"}]},
        "train": {"lr": 2e-5},
    }
    d.update(over)
    return RunSpec.model_validate(d)


def rundir_with_peft_card(tmp_path, base: str) -> RunDir:
    rd = RunDir(tmp_path / "run")
    rd.create()
    rd.final.mkdir()
    (rd.final / "README.md").write_text(PEFT_CARD.format(base=base))
    rd.write_history([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5, "eval_heldout_loss": 1.6}, {"step": 3, "loss": 1.25}])
    return rd


def model_index_values(card_path: Path) -> dict[str, float]:
    """{metric name: value} of the card's model-index, read back by huggingface_hub."""
    card = ModelCard.load(card_path)
    return {r.metric_name: r.metric_value for r in card.data.eval_results or []}


def test_card_metadata_round_trips_through_huggingface_hub(tmp_path):
    rd = rundir_with_peft_card(tmp_path, "Qwen/Qwen3-0.6B")
    rd.write_metrics(METRICS)
    write_card(rd, spec_of(), rd.metrics(), "completed")
    card = ModelCard.load(rd.card_file)
    d = card.data
    assert d.pipeline_tag == "text-generation" and d.library_name == "peft" and d.base_model == "Qwen/Qwen3-0.6B"
    # every eval metric of metrics.json, equal, with the dataset it was measured on
    assert model_index_values(rd.card_file) == {
        "heldout loss": METRICS["eval/heldout/loss"], "heldout perplexity": METRICS["eval/heldout/perplexity"],
        "wiki loss": 2.5, "wiki perplexity": METRICS["eval/wiki/perplexity"], "tatqa exact_match": 0.41,
    }
    by_name = {r.metric_name: r for r in d.eval_results}
    wiki = by_name["wiki loss"]
    assert (wiki.dataset_type, wiki.dataset_config, wiki.dataset_split, wiki.metric_type) == ("Salesforce/wikitext", "wikitext-2-raw-v1", "test", "loss")
    assert by_name["heldout loss"].dataset_type == "Fortytwo-Network/Strandset-Rust-v1"
    assert all(r.task_type == "text-generation" for r in d.eval_results)
    # PEFT's metadata is merged, not overwritten
    meta = metadata_load(rd.card_file)
    assert meta["language"] == ["en"]
    assert {"base_model:adapter:Qwen/Qwen3-0.6B", "lora", "transformers", "trainyard", "sft", "trl", "peft"} <= set(meta["tags"])
    text = rd.card_file.read_text()
    assert "`python launch.py --matrix jobs/rust_sft.yaml --only 5k`" in text
    assert f"![training and eval loss]({LOSS_CURVE})" in text and (rd.path / LOSS_CURVE).stat().st_size > 1000
    assert "| learning rate | 2e-05 |" in text and "| LoRA r | 16 |" in text and "AutoPeftModelForCausalLM" in text
    assert "trackio show --project rust_sft" in text


def test_trackio_space_link(tmp_path):
    spec = spec_of(tracking={"space_id": "alice/trackio-rust_sft"})
    assert "[Trackio](https://huggingface.co/spaces/alice/trackio-rust_sft)" in render_card(spec, METRICS, "completed")


def test_no_base_model_for_local_smoke_or_from_scratch_models(tmp_path, tiny_model):
    rd = rundir_with_peft_card(tmp_path, tiny_model)  # PEFT records the local path
    write_card(rd, spec_of(model={"name": tiny_model}, smoke=True), METRICS, "completed")
    meta = metadata_load(rd.card_file)
    assert "base_model" not in meta and not any(t.startswith("base_model:") for t in meta["tags"]) and "smoke-test" in meta["tags"]
    scratch = spec_of(recipe="pretrain", model={"name": "slm-25m"}, lora=None, eval={}, data={"source": "Salesforce/wikitext", "format": "text"},
                      architecture={"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128, "vocab_size": 1000})
    text = render_card(scratch, METRICS, "completed")
    card = ModelCard(text)
    assert card.data.base_model is None and card.data.library_name == "transformers"
    assert "trained from scratch" in text and "llama h64 L2" in text


def test_a_diverged_or_failed_run_says_so_and_keeps_inf_out_of_the_model_index(tmp_path):
    metrics = {"train/loss": float("nan"), "eval/heldout/loss": float("inf"), "eval/wiki/loss": 3.0}
    text = render_card(spec_of(), metrics, "diverged", reason="non-finite training loss (nan) at step 120")
    assert "**Outcome: diverged.**" in text and "non-finite training loss (nan) at step 120" in text
    path = tmp_path / "README.md"
    path.write_text(text)
    assert model_index_values(path) == {"wiki loss": 3.0}
    assert "**Outcome: failed.**" in render_card(spec_of(), {}, "failed", reason="KeyError: 'x'")


def test_license_is_inherited_from_the_cached_base_model_card(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    snap = cache / "models--acme--base-1B" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "README.md").write_text("---\nlicense: apache-2.0\n---\n# base\n")
    (cache / "models--acme--base-1B" / "refs").mkdir()
    (cache / "models--acme--base-1B" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    assert ModelCard(render_card(spec_of(model={"name": "acme/base-1B"}), METRICS, "completed")).data.license == "apache-2.0"
    assert ModelCard(render_card(spec_of(model={"name": "acme/other"}), METRICS, "completed")).data.license is None


def test_reproduce_names_the_real_matrix_file(tmp_path, monkeypatch):
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "mine.yaml").write_text((ROOT / "jobs" / "rust_sft.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    spec = load_matrix("studies/mine.yaml").runs[0]
    assert spec.matrix_file == "studies/mine.yaml"
    assert "--matrix studies/mine.yaml --only 5k" in render_card(spec, METRICS, "completed")
    assert spec.training_fingerprint() == spec.model_copy(update={"matrix_file": "elsewhere.yaml"}).training_fingerprint()


@pytest.mark.slow
def test_smoke_run_card_loads_with_eval_results_equal_to_metrics(tmp_path):
    runs, trackio = tmp_path / "runs", tmp_path / "trackio"
    env = {"TRACKIO_DIR": str(trackio), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "launch.py", "--matrix", "jobs/rust_sft.yaml", "--smoke", "--only", "5k", "--runs-dir", str(runs)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rd = RunDir(runs / "rust_sft-smoke" / "5k")
    metrics = json.loads(rd.metrics_file.read_text())
    card = ModelCard.load(rd.card_file)
    evals = {k: v for k, v in metrics.items() if k.startswith("eval/")}
    assert evals and {r.metric_name: r.metric_value for r in card.data.eval_results} == {
        k.removeprefix("eval/").replace("/", " "): v for k, v in evals.items()
    }
    assert card.data.pipeline_tag == "text-generation" and card.data.library_name == "peft"
    line = next(ln for ln in rd.card_file.read_text().splitlines() if ln.startswith("`python launch.py --matrix"))
    assert (ROOT / line.split("--matrix ")[1].split()[0]).is_file() and "--only 5k" in line and "--smoke" in line
    db = sqlite3.connect(trackio / "rust_sft-smoke.db")  # the run is grouped under its matrix
    [(config,)] = db.execute("select config from configs where run_name = '5k'").fetchall()
    assert json.loads(config)["_Group"] == "rust_sft-smoke"


def test_a_failed_run_gets_a_card_that_says_so(tmp_path, tiny_model):
    import logging

    from trainyard.contract import ExitCode
    from trainyard.run import execute

    data = tmp_path / "bad.jsonl"
    data.write_text('{"nothing": "useful"}\n' * 4)
    spec = spec_of(model={"name": tiny_model}, data={"source": str(data), "format": "prompt_completion"}, eval={}, smoke=True,
                   train={"max_steps": 1})
    rd = RunDir(tmp_path / "run")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        state = execute(spec, rd)
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
    assert state == ExitCode.BAD_INPUT and rd.state == "failed"
    text = rd.card_file.read_text()
    assert "**Outcome: failed.**" in text and "bad data" in text
    assert ModelCard.load(rd.card_file).data.pipeline_tag == "text-generation"
