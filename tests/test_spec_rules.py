"""Schema and YAML details the corpus does not show: what still loads, and lists kept in
sync with transformers."""

from __future__ import annotations

import pytest

from trainyard.matrix import load_matrix
from trainyard.smoke import smoke_spec
from trainyard.spec import ATTN_IMPLEMENTATIONS, OPTIMIZERS, RunSpec
from trainyard.yaml_load import YamlProblem, decode, load

BASE = """
name: m
base:
  recipe: sft
  model: {name: Qwen/Qwen3-0.6B}
  data: {source: fixture:strandset_rust, format: strandset_rust}
  train: {lr: 1e-5, epochs: 2}
"""


def test_optimizer_and_attention_lists_match_transformers():
    from transformers.training_args import OptimizerNames

    assert set(OPTIMIZERS) == {o.value for o in OptimizerNames}
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    assert set(ALL_ATTENTION_FUNCTIONS) - {"paged|eager"} <= set(ATTN_IMPLEMENTATIONS)


def test_exponents_without_a_dot_are_floats_and_small_anchors_work(write_yaml):
    doc = load("a: 1e-5\nb: 1.0e4\nc: '1e4'\nbase: &b {x: 1}\nother: {<<: *b, y: 2}\n").doc
    assert doc["a"] == 1e-5 and isinstance(doc["b"], float) and doc["c"] == "1e4"
    assert doc["other"] == {"x": 1, "y": 2}
    m = load_matrix(write_yaml(BASE.replace("train: {lr: 1e-5, epochs: 2}", "train: &t {lr: 1e-5}\n  eval: {strategy: epoch}")))
    assert m.runs[0].train.lr == 1e-5


def test_a_bom_is_fine_other_encodings_are_not():
    assert decode("\ufeffname: x\n".encode()) == "name: x\n"
    with pytest.raises(YamlProblem, match="byte offset 0"):
        decode("name: x\n".encode("utf-16"))


def test_stored_and_smoke_specs_load_back_even_where_authoring_rules_apply(write_yaml):
    """epochs + max_steps is refused in a matrix, but a smoke spec (max_steps set on top of
    the written epochs) and every spec.json round-trip."""
    m = load_matrix(write_yaml(BASE))
    smoke = smoke_spec(m.runs[0], "/tiny")
    assert smoke.train.max_steps == 4 and smoke.train.epochs == 2
    assert RunSpec.from_json(smoke.to_json()) == smoke
    assert RunSpec.from_json(m.runs[0].to_json()) == m.runs[0]


def test_tatqa_true_still_means_the_default_section():
    spec = RunSpec.model_validate({
        "name": "r", "matrix": "m", "recipe": "dpo", "model": {"name": "m"}, "dpo": {},
        "data": {"source": "fixture:tatqa", "format": "tatqa_preference"}, "eval": {"tatqa": True},
    })
    assert spec.eval.tatqa is not None and spec.eval.tatqa.max_new_tokens == 96 and spec.eval.tatqa.limit is None
    assert smoke_spec(spec, "/tiny").eval.tatqa.limit == 8


def test_the_grid_bound_is_configurable(write_yaml, monkeypatch):
    from trainyard.errors import SpecError

    path = write_yaml(BASE + "grid:\n  train.seed: [1, 2, 3]\n  data.seed: [1, 2]\n")
    with pytest.raises(SpecError, match=r"expands to 6 runs \(6 = 1 x 3 x 2\), over the limit of 5"):
        load_matrix(path, max_runs=5)
    monkeypatch.setenv("TRAINYARD_MAX_RUNS", "4")
    with pytest.raises(SpecError, match="limit of 4"):
        load_matrix(path)
    assert len(load_matrix(path, max_runs=6).runs) == 6
