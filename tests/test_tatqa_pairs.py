"""TAT-QA -> preference pairs: determinism, correctness of every rejection kind, prompt shape."""

from __future__ import annotations

import copy
import json
import random

import pytest

from trainyard.data.formats import get_format
from trainyard.data.formats.preference import convert as preference_convert
from trainyard.data.tatqa_pairs import (
    build_pairs,
    evaluate_derivation,
    format_value,
    is_correct,
    load_tatqa_pairs,
    make_pair,
    parse_number,
    read_contexts,
    rejection_candidates,
    render_answer,
)
from trainyard.errors import DataFormatError
from trainyard.evaluation.tatqa_prompt import INSTRUCTION, build_prompt, parse_output
from trainyard.fixtures import fixture_path

# Which rejection kinds each answer type may get (model_output: any).
ALLOWED = {
    "span": {"wrong_cell", "wrong_scale"},
    "multi-span": {"missing_span", "wrong_scale"},
    "arithmetic": {"wrong_scale", "sign_flip", "off_by_factor", "wrong_operand", "wrong_operator"},
    "count": {"count_off"},
}


@pytest.fixture(scope="module")
def contexts() -> list[dict]:
    return read_contexts(fixture_path("tatqa"))


def _q(contexts, text):
    for c in contexts:
        for q in c["questions"]:
            if q["question"].startswith(text):
                return c, q
    raise KeyError(text)


def test_fixture_is_the_official_layout(contexts):
    assert len(contexts) == 12
    questions = [q for c in contexts for q in c["questions"]]
    assert len(questions) == 48
    assert {q["answer_type"] for q in questions} == set(ALLOWED)
    assert {q["answer_from"] for q in questions} == {"table", "text", "table-text"}
    assert {q["scale"] for q in questions} == {"", "thousand", "million", "billion", "percent"}
    for c in contexts:
        assert all(isinstance(cell, str) for row in c["table"]["table"] for cell in row)
        assert [p["order"] for p in c["paragraphs"]] == list(range(1, len(c["paragraphs"]) + 1))
    for q in questions:
        if q["answer_type"] in ("span", "multi-span"):
            assert isinstance(q["answer"], list)
        if q["answer_type"] == "arithmetic":  # gold equals the derivation, rounded like TAT-QA
            assert round(evaluate_derivation(q["derivation"]), 2) == pytest.approx(parse_number(q["answer"]))


def test_pairs_are_deterministic_and_independent_of_context_order(contexts):
    first, stats = build_pairs(contexts)
    again, _ = build_pairs(copy.deepcopy(contexts))
    shuffled = copy.deepcopy(contexts)
    random.Random(7).shuffle(shuffled)
    for c in shuffled:
        random.Random(3).shuffle(c["questions"])
    reordered, _ = build_pairs(shuffled)
    assert first == again == reordered
    # and a question's pair does not depend on which other contexts are present
    alone, _ = build_pairs(contexts[5:6])
    by_uid = {p["question_uid"]: p for p in first}
    assert alone and all(p == by_uid[p["question_uid"]] for p in alone)
    assert stats.questions == 48 and stats.pairs == len(first) == 45


def test_rows_are_trl_conversational_preference(contexts):
    pairs, _ = build_pairs(contexts)
    for p in pairs:
        assert [m["role"] for m in p["prompt"]] == ["user"]
        assert [m["role"] for m in p["chosen"]] == ["assistant"] == [m["role"] for m in p["rejected"]]
        assert set(p) == {"prompt", "chosen", "rejected", "question_uid", "answer_type", "rejection_kind"}
        assert json.loads(json.dumps(p)) == p  # plain JSON: safe for datasets/Arrow


def test_every_rejected_is_wrong_and_differs_from_chosen(contexts):
    pairs, _ = build_pairs(contexts)
    golds = {q["uid"]: q for c in contexts for q in c["questions"]}
    for p in pairs:
        chosen, rejected = p["chosen"][0]["content"], p["rejected"][0]["content"]
        gold = golds[p["question_uid"]]
        assert rejected != chosen
        assert is_correct(chosen, gold)  # full marks from the TAT-QA evaluator's own scorer
        assert not is_correct(rejected, gold), p["rejection_kind"]


def test_each_kind_appears_on_the_right_answer_types(contexts):
    seen: dict[str, set[str]] = {}
    for c in contexts:
        for q in c["questions"]:
            for r in rejection_candidates(c, q):
                seen.setdefault(r.kind, set()).add(q["answer_type"])
                assert r.kind in ALLOWED[q["answer_type"]]
    assert set(seen) == set().union(*ALLOWED.values())
    assert seen["missing_span"] == {"multi-span"} and seen["count_off"] == {"count"}
    assert seen["sign_flip"] == {"arithmetic"} and seen["wrong_cell"] == {"span"}


def test_rejection_values(contexts):
    def kinds(text):
        c, q = _q(contexts, text)
        return {r.kind: parse_output(r.text) for r in rejection_candidates(c, q)}

    r = kinds("What was the total of cash and cash equivalents")  # 1,204+2,318 = 3522 million
    assert r["sign_flip"] == ("-3522", "million")
    assert r["off_by_factor"] == ("352200", "million")
    assert r["wrong_scale"] == ("3522", "thousand")
    assert r["wrong_operand"] == ("3304", "million")  # 986 (2018) instead of 1,204 (2019)
    r = kinds("What was the change in the effective tax rate")  # 21.0-24.5 = -3.5 percent
    assert r["off_by_factor"] == ("-0.035", "percent")  # percent: /100
    assert r["wrong_operand"] == ("-14", "percent")  # 35.0 (2017) instead of 24.5
    r = kinds("How much of the $500 million")  # no table operand: 500-312 -> 500+312
    assert r["wrong_operator"] == ("812", "million")
    r = kinds("How many years of lease payments")  # 3 -> 2, one item dropped
    assert r["count_off"][0] == "2"
    r = kinds("How many regions had a decrease")  # 1 -> 2
    assert r["count_off"][0] == "2"
    r = kinds("What are the components of total current assets")
    assert len(r["missing_span"][0]) == 2
    r = kinds("What was the revenue from Cloud services in 2019")
    assert r["wrong_cell"] == ("41,875", "thousand")  # the 2018 cell of the same row


def test_count_off_drops_a_counted_item(contexts):
    c, q = _q(contexts, "How many years of lease payments")
    (r,) = rejection_candidates(c, q)
    assert r.text.startswith("Answer: 2\nScale: none\nDerivation: ")
    assert len(r.text.split("Derivation: ")[1].split("; ")) == 2


def test_prompt_has_markdown_table_paragraphs_and_question_last(contexts):
    c, q = _q(contexts, "What was the change in Research and development")
    prompt = build_prompt(c, q)
    assert "| Research and development | $412.5 | $368.1 |" in prompt
    assert "|  | Year Ended December 31, |  |\n| --- | --- | --- |" in prompt
    assert "higher headcount in our engineering organization" in prompt
    # question then the answer-format instruction close the prompt (left truncation keeps both)
    assert prompt.endswith(f"Question: {q['question']}\n\n{INSTRUCTION}")
    assert prompt.index("Table:") < prompt.index("Paragraphs:") < prompt.index("Question:")


def test_chosen_format_and_parse_roundtrip(contexts):
    c, q = _q(contexts, "What was the percentage change in total revenue")
    pair = make_pair(c, q)
    assert pair["chosen"][0]["content"] == "Answer: 13.65\nScale: percent\nDerivation: (80,623-70,938)/70,938*100"
    c, q = _q(contexts, "Which countries drove")
    assert make_pair(c, q)["chosen"][0]["content"] == "Answer: Japan | Australia\nScale: none"
    assert is_correct("answer: australia |japan\nscale: none", q)
    c, q = _q(contexts, "What was the total of cash")
    assert is_correct("Answer: 3,522.00\nScale: million", q)
    assert not is_correct("Answer: 3522\nScale: thousand", q)
    # spans stay verbatim (the metric reads '(5.0)%' as -5.0, '-5' percent as -0.05); numbers plain
    assert format_value(["(5.0)%", "Japan"]) == "(5.0)% | Japan" and format_value(84.375) == "84.375"
    assert format_value(-480000.0) == "-480000"


def test_unperturbable_questions_are_skipped_and_counted(contexts):
    pairs, stats = build_pairs(contexts)
    assert stats.skipped == {"no wrong answer to construct": 3}  # free-text spans without a scale
    c, q = _q(contexts, "What legislation reduced")
    assert rejection_candidates(c, q) == []
    assert q["uid"] not in {p["question_uid"] for p in pairs}
    broken = {"table": {"table": []}, "paragraphs": [], "questions": [
        {"uid": "x1", "question": "?", "answer": [], "answer_type": "span", "scale": ""},
        {"uid": "x2", "question": "?", "answer": ["a"], "answer_type": "boolean", "scale": ""},
        {"uid": "x3", "question": "?", "answer_type": "span"},
        {"uid": "x4", "question": "?", "answer": "not a list", "answer_type": "span", "scale": ""},
    ]}
    pairs, stats = build_pairs([broken])
    assert pairs == [] and stats.questions == 4
    assert stats.skipped == {"empty answer": 1, "unknown answer_type 'boolean'": 1, "missing answer": 1, "malformed span answer": 1}


def test_recorded_model_output_is_used_only_when_wrong(contexts):
    c, q = _q(contexts, "What legislation reduced")  # otherwise skipped
    wrong = "Answer: the Inflation Reduction Act\nScale: none"
    pair = make_pair(c, q, model_output=wrong)
    assert pair["rejection_kind"] == "model_output" and pair["rejected"][0]["content"] == wrong
    # official prediction format [answer, scale]; a correct output falls back to a synthetic one
    c, q = _q(contexts, "What was the total of cash")
    pairs, stats = build_pairs([c], {q["uid"]: [3522, "million"]})
    row = next(p for p in pairs if p["question_uid"] == q["uid"])
    assert row["rejection_kind"] != "model_output" and stats.model_outputs_correct == 1
    pairs, _ = build_pairs([c], {q["uid"]: [3522, "thousand"]})
    row = next(p for p in pairs if p["question_uid"] == q["uid"])
    assert row["rejected"][0]["content"] == "Answer: 3522\nScale: thousand"


def test_helpers():
    assert parse_number("$(0.08)") == -0.08 and parse_number("(5.0)%") == -5.0
    assert parse_number("1,475.0") == 1475.0 and parse_number("—") is None and parse_number("Q1") is None
    assert evaluate_derivation("(1,475.0-800.0)/800.0*100") == pytest.approx(84.375)
    assert evaluate_derivation("__import__('os')") is None and evaluate_derivation("1/0") is None
    assert render_answer("1", "") == "Answer: 1\nScale: none"


def test_load_from_file_fixture_and_dir(tmp_path, contexts):
    pairs = load_tatqa_pairs("fixture:tatqa", "train")
    assert len(pairs) == 45
    (tmp_path / "tatqa_dataset_dev.json").write_text(json.dumps(contexts[:2]))
    assert len(load_tatqa_pairs(str(tmp_path), "dev")) == len(load_tatqa_pairs(str(tmp_path / "tatqa_dataset_dev.json"), "x"))
    with pytest.raises(DataFormatError, match="tatqa_dataset_train.json"):
        load_tatqa_pairs(str(tmp_path), "train")
    bad = tmp_path / "pairs.json"
    bad.write_text(json.dumps([{"prompt": "p", "chosen": "c", "rejected": "r"}]))
    with pytest.raises(DataFormatError, match=r"lacks \['table', 'paragraphs', 'questions'\].*format: preference"):
        load_tatqa_pairs(str(bad), "train")


def test_hub_source_downloads_the_split_file(monkeypatch, tmp_path, contexts):
    import huggingface_hub

    calls = []
    local = tmp_path / "dl.json"
    local.write_text(json.dumps(contexts[:1]))

    def fake_download(**kwargs):
        calls.append(kwargs)
        return str(local)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    assert len(load_tatqa_pairs("next-tat/TAT-QA", "dev")) > 0
    load_tatqa_pairs("next-tat/TAT-QA", "train", filename="my_train.json", revision="abc")
    assert calls == [
        {"repo_id": "next-tat/TAT-QA", "filename": "tatqa_dataset_dev.json", "repo_type": "dataset", "revision": None},
        {"repo_id": "next-tat/TAT-QA", "filename": "my_train.json", "repo_type": "dataset", "revision": "abc"},
    ]


def test_formats_registered():
    fmt = get_format("tatqa_preference")
    assert fmt.produces == "preference" and fmt.loader is not None
    rows = fmt.loader("fixture:tatqa", "train")
    converted = [fmt.convert(r, "text") for r in rows]
    assert all(c["chosen"] != c["rejected"] for c in converted)
    plain = get_format("preference")
    row = json.loads(fixture_path(plain.fixture).read_text().splitlines()[0])
    out = plain.convert(row, "text")
    assert out["prompt"][0]["role"] == "user" and out["chosen"][0]["role"] == "assistant"


def test_preference_convert_implicit_prompt():
    row = {
        "prompt": "hi",
        "chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "good"}],
        "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "bad"}],
    }
    out = preference_convert(row, "text")
    assert out == {
        "prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "good"}],
        "rejected": [{"role": "assistant", "content": "bad"}],
    }
