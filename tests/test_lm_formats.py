"""Plain-text renderings of the financial eval sets, on their bundled fixtures."""

from __future__ import annotations

import json

import pytest

from trainyard.data.formats import SkipRow, get_format
from trainyard.fixtures import FIXTURES_DIR, fixture_for_source, fixture_path

# fixture -> (format, columns the real dataset has)
FIXTURES = {
    "wikitext": ("text", {"text"}),
    "fingpt_sentiment": ("instruction_text", {"instruction", "input", "output"}),
    "fiqa_qa": ("instruction_text", {"instruction", "input", "output"}),
    "finance_alpaca": ("instruction_text", {"instruction", "input", "output", "text"}),
    "twitter_financial_news": ("sentiment_text", {"text", "label"}),
    "financial_qa_10k": ("qa_context_text", {"question", "answer", "context", "ticker", "filing"}),
    "financial_reports": ("text", {"text"}),
    "financial_news": ("text", {"title", "text", "url"}),
}


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in fixture_path(name).read_text().splitlines()]


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_has_the_real_columns_and_converts(name):
    fmt_name, columns = FIXTURES[name]
    data = rows(name)
    assert 30 <= len(data) <= 300
    assert all(set(r) == columns for r in data)
    fmt = get_format(fmt_name)
    texts = [fmt.convert(r, "text") for r in data]
    kept = [t["text"] for t in texts if t is not None]
    assert len(kept) >= 30 and all(isinstance(t, str) and t.strip() for t in kept)


def test_wikitext_fixture_looks_like_wikitext_raw():
    texts = [r["text"] for r in rows("wikitext")]
    assert len(texts) >= 250
    assert sum(t == "" for t in texts) > len(texts) / 3
    assert any(t.startswith(" = ") and t.endswith(" = \n") and not t.startswith(" = = ") for t in texts)
    assert any(t.startswith(" = = ") for t in texts) and any(" @-@ " in t for t in texts)


def test_fixtures_stay_small():
    assert sum(p.stat().st_size for p in FIXTURES_DIR.glob("*.jsonl")) < 300_000


def test_renderings():
    inst = get_format("instruction_text").convert({"instruction": "Classify.", "input": "Rent", "output": "Fixed."}, "text")
    assert inst["text"] == "### Instruction:\nClassify.\n\n### Input:\nRent\n\n### Response:\nFixed."
    no_input = get_format("instruction_text").convert({"instruction": "Define EBITDA.", "input": "", "output": "x"}, "text")
    assert "### Input" not in no_input["text"]
    senti = get_format("sentiment_text")
    assert senti.convert({"text": "$ABC up 5%", "label": 1}, "text")["text"] == "$ABC up 5%\nSentiment: Bullish"
    assert senti.convert({"text": "news", "label": "positive"}, "text")["text"] == "news\nSentiment: positive"
    with pytest.raises(SkipRow, match="label 7"):
        senti.convert({"text": "x", "label": 7}, "text")
    qa = get_format("qa_context_text").convert({"question": "Q?", "answer": "A.", "context": "C."}, "text")
    assert qa["text"] == "Context: C.\nQuestion: Q?\nAnswer: A."


def test_smoke_stand_ins_for_the_study_sources():
    assert fixture_for_source("FinGPT/fingpt-fiqa_qa") == "fiqa_qa"
    assert fixture_for_source("virattt/financial-qa-10K") == "financial_qa_10k"
    assert fixture_for_source("data/financial_reports.jsonl") == "financial_reports"
    assert fixture_for_source("someone/unknown") is None
