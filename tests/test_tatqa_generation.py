"""TAT-QA prompt, reply parser and generation-based evaluation (tiny local model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainyard.evaluation import tatqa_generation
from trainyard.evaluation.tatqa_generation import evaluate_tatqa_generation, tatqa_metrics
from trainyard.evaluation.tatqa_prompt import build_prompt, format_answer, parse_output

GOLD = json.loads((Path(__file__).parent / "data" / "tatqa_gold.json").read_text())


def test_build_prompt_has_table_paragraphs_in_order_question_and_format():
    text = build_prompt(GOLD[1], GOLD[1]["questions"][0])
    assert "| Gross margin | 12.5% | 11.0% |" in text
    # paragraphs sorted by their `order`, not by file position
    assert text.index("gross margin was 12.5%") < text.index("lower freight costs")
    assert "Question: What was the gross margin in 2019?" in text
    assert "\nScale: <one of: none, thousand, million, billion, percent>\n" in text
    # optional third line: DPO 'chosen' answers carry the gold derivation (not scored)
    assert text.rstrip().endswith("Derivation: <the calculation or the counted items, if any>")


@pytest.mark.parametrize(
    ("reply", "parsed"),
    [
        ("Answer: 1145\nScale: thousand", ("1145", "thousand")),
        ("**Answer:** $1,145\n**Scale:** Thousands.", ("$1,145", "thousand")),
        ("<think>hmm</think>\nanswer: 12.5%\nscale: %", ("12.5%", "percent")),
        ("Answer: Wells Fargo | Citibank\nScale: none", (["Wells Fargo", "Citibank"], "")),
        ("Answer: 3 Scale: none", ("3", "")),
        ("Final answer: (134)", ("(134)", "")),  # no scale line: no scale
        ("The answer is 5.", None),
        ("Answer:\nScale: million", None),
    ],
)
def test_parse_output(reply, parsed):
    assert parse_output(reply) == parsed


def test_format_answer_round_trips():
    assert parse_output(format_answer(["Wells Fargo", "Citibank"], "")) == (["Wells Fargo", "Citibank"], "")
    assert parse_output(format_answer(1.05, "million")) == ("1.05", "million")


def test_replies_are_parsed_and_scored(monkeypatch):
    replies = {
        "q1": "Answer: (134)\nScale: thousand",  # EM
        "q2": "Answer: 1145\nScale: million",  # wrong scale
        "q4": "Answer: 3\nScale: none",  # EM
        "q8": "Answer: Citibank | Wells Fargo\nScale: none",  # EM
        "q9": "I think it is about one million.",  # parse failure
    }
    seen = []

    def fake_generate(model, tokenizer, conversations, **kwargs):
        seen.extend(conversations)
        uids = [q["uid"] for c in GOLD for q in c["questions"]]
        return [replies.get(uid, "") for uid in uids[: len(conversations)]]

    monkeypatch.setattr(tatqa_generation, "generate_chat", fake_generate)
    result = evaluate_tatqa_generation(None, None, GOLD)
    assert len(seen) == 11 and seen[0][0]["role"] == "user"
    assert result["count"] == 11
    assert result["parse_failures"] == 7  # q9 + the 6 empty replies
    assert result["missing"] == 7
    assert result["exact_match"] == pytest.approx(3 / 11)
    assert result["by_answer_type"]["count"]["exact_match"] == pytest.approx(1 / 2)
    assert result["predictions"]["q8"] == [["Citibank", "Wells Fargo"], ""]

    limited = evaluate_tatqa_generation(None, None, GOLD, limit=5)
    assert limited["count"] == 5 and set(limited["by_answer_from"]) == {"table", "text"}

    flat = tatqa_metrics(result)
    assert flat["tatqa/exact_match"] == pytest.approx(3 / 11)
    assert flat["tatqa/parse_failures"] == 7.0
    assert flat["tatqa/arithmetic/exact_match"] == 0.0
    assert flat["tatqa/count/questions"] == 2.0
    assert flat["tatqa/table-text/questions"] == 3.0
    assert all(isinstance(v, float) for v in flat.values())


@pytest.fixture(scope="module")
def noisy_tiny_model():
    """The tiny model with its weights redrawn wide, so greedy replies differ between prompts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainyard.fixtures.tiny_model import ensure_tiny_model

    path = ensure_tiny_model()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    return model, AutoTokenizer.from_pretrained(path)


def test_generation_end_to_end_on_tiny_model(noisy_tiny_model):
    model, tokenizer = noisy_tiny_model
    side = tokenizer.padding_side
    batched = evaluate_tatqa_generation(model, tokenizer, GOLD, max_new_tokens=12, batch_size=4)
    single = evaluate_tatqa_generation(model, tokenizer, GOLD, max_new_tokens=12, batch_size=1)
    assert batched["count"] == 11
    assert set(batched["by_answer_type"]) == {"span", "multi-span", "arithmetic", "count"}
    # garbage replies: none has an "Answer:" line, every one is counted as a parse failure
    assert batched["parse_failures"] == 11 == batched["missing"]
    assert batched["exact_match"] == 0.0
    replies = list(batched["replies"].values())
    assert len(set(replies)) > 3, "replies should differ between prompts for this check to mean anything"
    # left padding: a batch of mixed lengths decodes exactly as one prompt at a time
    assert batched["replies"] == single["replies"]
    assert tokenizer.padding_side == side  # restored for the caller
