"""Data loading and Strandset-Rust formatting."""

import json

import pytest

from trainyard.data.formats import SkipRow, get_format
from trainyard.data.loading import load_examples
from trainyard.errors import DataFormatError
from trainyard.spec import DataSpec

ROW = {
    "crate_name": "tokio",
    "input_data": json.dumps({"title": "add", "description": "Adds two numbers.", "code_context": "fn add(a: i32, b: i32) -> i32"}),
    "output_data": json.dumps({"code": "fn add(a: i32, b: i32) -> i32 {\n    a + b\n}"}),
    "task_category": "code_generation",
    "test": "",
}


def test_strandset_row_becomes_prompt_and_completion():
    ex = get_format("strandset_rust").convert(ROW, "text")
    prompt = ex["prompt"][0]["content"]
    assert ex["prompt"][0]["role"] == "user" and ex["completion"][0]["role"] == "assistant"
    assert prompt.startswith("Write the Rust code described below.")
    assert "Crate: tokio" in prompt and "Description: Adds two numbers." in prompt
    assert "```rust\nfn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n```" in ex["completion"][0]["content"]


def test_strandset_lenient_and_malformed_json():
    fmt = get_format("strandset_rust")
    lenient = {**ROW, "input_data": '{"code": "fn f() {\n}"}'}  # raw newline inside a string
    assert "fn f()" in fmt.convert(lenient, "text")["prompt"][0]["content"]
    with pytest.raises(SkipRow, match="malformed JSON"):
        fmt.convert({**ROW, "output_data": '{"code": "fn'}, "text")


def test_fixture_loads_with_counted_skip_and_held_out_split():
    train, held, stats = load_examples(DataSpec(source="fixture:strandset_rust", format="strandset_rust", limit=40, eval_size=10))
    assert len(train) == 40 and len(held) == 10
    assert set(train.column_names) == {"prompt", "completion"}
    # the fixture has 202 rows, one of them truncated JSON: read all, skip exactly that one
    _, _, full = load_examples(DataSpec(source="fixture:strandset_rust", format="strandset_rust", eval_size=0))
    assert full.rows_read == 202 and full.examples == 201
    assert dict(full.skipped) == {"input_data is malformed JSON": 1}


def test_limit_larger_than_dataset_warns_and_uses_all(caplog):
    train, held, stats = load_examples(DataSpec(source="fixture:strandset_rust", format="strandset_rust", limit=5000, eval_size=0))
    assert len(train) == 201
    assert any("limit=5000" in w and "using all" in w for w in stats.warnings)


def test_missing_columns_are_named(tmp_path):
    f = tmp_path / "rows.jsonl"
    f.write_text(json.dumps({"crate_name": "x", "input": "{}"}) + "\n")
    with pytest.raises(DataFormatError) as info:
        load_examples(DataSpec(source=str(f), format="strandset_rust"))
    msg = str(info.value)
    assert str(f) in msg and "input_data" in msg and "output_data" in msg and "'input'" in msg


def test_missing_local_file(tmp_path):
    with pytest.raises(DataFormatError, match="no such file"):
        load_examples(DataSpec(source=str(tmp_path / "nope.jsonl"), format="text"))
