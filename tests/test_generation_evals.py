"""Judge / IFEval wired into a run: schema, smoke swap, metrics in metrics.json, secrets."""

import json

import pytest

from trainyard.errors import SpecError
from trainyard.matrix import load_matrix
from trainyard.smoke import smoke_spec

BASE = """
name: judged
base:
  recipe: sft
  model: {name: Qwen/Qwen3-0.6B}
  data: {source: fixture:strandset_rust, format: strandset_rust}
  lora: {r: 8, alpha: 16}
  eval:
    compare_before: true
    judge: {base_url: "https://api.openai.com/v1", model: gpt-4o, api_key_env: JUDGE_KEY}
"""


def test_judge_needs_exactly_one_kind(write_yaml):
    with pytest.raises(SpecError, match="either base_url \\+ model"):
        load_matrix(write_yaml(BASE.replace('base_url: "https://api.openai.com/v1", model: gpt-4o, api_key_env: JUDGE_KEY', "questions: q.jsonl")))
    with pytest.raises(SpecError, match="needs both base_url and model"):
        load_matrix(write_yaml(BASE.replace(", model: gpt-4o", "")))


def test_smoke_swaps_the_endpoint_for_recorded_replies(write_yaml):
    spec = smoke_spec(load_matrix(write_yaml(BASE)).runs[0], "/tiny")
    j = spec.eval.judge
    assert j.base_url is None and j.model is None and j.recorded.endswith("mt_bench_judge_replies.json")
    assert j.questions.endswith("mt_bench.jsonl") and j.limit == 2


def test_judge_key_travels_only_as_a_secret(write_yaml, monkeypatch):
    from trainyard.backends.base import extra_secret_names
    from trainyard.backends.kubernetes import render_job

    spec = load_matrix(write_yaml(BASE)).runs[0]
    assert extra_secret_names(spec) == ["JUDGE_KEY"]
    monkeypatch.setenv("JUDGE_KEY", "sk-very-secret")
    manifest = json.dumps(render_job(spec))
    assert "sk-very-secret" not in manifest
    assert '{"name": "JUDGE_KEY", "valueFrom": {"secretKeyRef": {"name": "trainyard-judge", "key": "JUDGE_KEY"}}}' in manifest


@pytest.mark.slow  # trains a whole run
def test_sft_run_records_judge_scores_before_and_after(tmp_path, write_yaml, tiny_model):
    from trainyard.backends.local import run_local
    from trainyard.run_dir import RunDir

    spec = smoke_spec(load_matrix(write_yaml(BASE)).runs[0], tiny_model)
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"max_steps": 1})})
    assert run_local([spec], tmp_path) == 0
    m = RunDir.for_run(tmp_path, spec.matrix, spec.name).metrics()
    # recorded replies for questions 1001 and 1002: turn1 7 and 8, turn2 6 and 5
    for prefix in ("judge_before", "judge"):
        assert m[f"{prefix}/turn1"] == pytest.approx(7.5)
        assert m[f"{prefix}/turn2"] == pytest.approx(5.5)
        assert m[f"{prefix}/overall"] == pytest.approx(6.5)
        assert m[f"{prefix}/missing"] == 0


def test_hf_jobs_payload_names_the_judge_secret_without_its_value(write_yaml, monkeypatch):
    from huggingface_hub import HfApi

    from trainyard.backends.hf_jobs import HfJobsBackend

    monkeypatch.setenv("JUDGE_KEY", "sk-very-secret")
    spec = load_matrix(write_yaml(BASE)).runs[0]
    payload = HfJobsBackend(api=HfApi(token="hf_x"), namespace="alice").render(spec)
    assert set(payload["secrets"]) == {"HF_TOKEN", "JUDGE_KEY"}
    assert "sk-very-secret" not in json.dumps(payload) and "hf_x" not in json.dumps(payload)
