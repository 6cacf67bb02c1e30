"""IFEval scoring through lm-evaluation-harness's checkers, on fixed responses."""

from __future__ import annotations

import pytest

pytest.importorskip("lm_eval", reason="IFEval needs the 'eval' extra: pip install 'trainyard[eval]'")
pytest.importorskip("langdetect", reason="IFEval needs the 'eval' extra: pip install 'trainyard[eval]'")
pytest.importorskip("immutabledict", reason="IFEval needs the 'eval' extra: pip install 'trainyard[eval]'")

import nltk  # noqa: E402

from trainyard.evaluation import ifeval  # noqa: E402
from trainyard.evaluation.ifeval import (  # noqa: E402
    IfevalUnavailable,
    evaluate_ifeval_generation,
    ifeval_metrics,
    load_ifeval,
    punkt_available,
    score_ifeval,
)

REAL_PUNKT = punkt_available()  # checked before the stub below is put on the path
needs_punkt = pytest.mark.skipif(
    not REAL_PUNKT,
    reason="NLTK punkt_tab is not provisioned here (it downloads from GitHub, not PyPI): "
    "run `python -m trainyard.evaluation.provision` where there is network",
)


@pytest.fixture(scope="module", autouse=True)
def importable_harness(tmp_path_factory):
    """Without real punkt_tab, an EMPTY one lets lm-eval's IFEval module import (it would try to
    download on import); the checks tested without @needs_punkt never read it, and sentence
    counting fails loudly on the empty model (it lacks sent_starters.txt) instead of guessing."""
    if REAL_PUNKT:
        yield
        return
    root = tmp_path_factory.mktemp("nltk_data")
    english = root / "tokenizers" / "punkt_tab" / "english"
    english.mkdir(parents=True)
    for name in ("collocations.tab", "abbrev_types.txt", "ortho_context.tab"):
        (english / name).write_text("")
    nltk.data.path.insert(0, str(root))
    yield
    nltk.data.path.remove(str(root))


RESPONSES = [
    # 1001 lowercase English: follows
    "the leaves were falling slowly from the old trees and the cold wind carried them across the "
    "quiet field. we walked home as the sun went down behind the hills and the sky turned orange.",
    # 1002 exactly 3 bullets: only 2 -> violates
    "* Better sleep\n* More energy",
    # 1003 >= 40 words and wrapped in double quotes: follows both
    '"My ideal weekend starts with a slow breakfast on the balcony, followed by a long walk through '
    "the park with two old friends. In the afternoon I would read a good book, cook a fresh dinner "
    'with vegetables from the market, and finish the evening watching an old film at home."',
    # 1004 keywords present; ends with "Any questions?" not "Any other questions?" -> 1 of 2
    "Plants use sunlight and a green pigment called chlorophyll to turn water and air into food. Any questions?",
    # 1005 JSON after a lead-in line: strict JSON fails, loose (first line dropped) passes; no commas
    'Here is the JSON:\n{"description": "A steel bottle that keeps drinks cold for 24 hours"}',
    # 1006 fewer than 6 sentences and a P.S.: follows both (sentence counting needs punkt)
    "A small cat lived in a quiet house. One day it found a red ball. It played until night.\nP.S. Cats love toys.",
]


def test_fixture_in_ifeval_format():
    prompts = load_ifeval()
    assert [p.key for p in prompts] == [1001, 1002, 1003, 1004, 1005, 1006]
    assert all(len(p.kwargs) == len(p.instruction_id_list) for p in prompts)


def test_strict_and_loose_accuracy_on_fixed_responses():
    prompts = load_ifeval(limit=5)
    result = score_ifeval(prompts, RESPONSES[:5])
    # strict, per instruction: [T] [F] [T,T] [T,F] [F,T] -> 5/8; prompts all-true: 1001, 1003 -> 2/5
    assert [r["strict"] for r in result["per_prompt"]] == [[True], [False], [True, True], [True, False], [False, True]]
    assert result["instruction_accuracy"] == pytest.approx(5 / 8)
    assert result["prompt_accuracy"] == pytest.approx(2 / 5)
    # loose also accepts 1005 without its first line: [T,T] -> 6/8 and 3/5
    assert result["instruction_accuracy_loose"] == pytest.approx(6 / 8)
    assert result["prompt_accuracy_loose"] == pytest.approx(3 / 5)
    assert result["per_prompt"][3] == {"key": 1004, "strict": [True, False], "loose": [True, False]}
    assert ifeval_metrics(result) == pytest.approx({
        "ifeval/instruction_accuracy": 5 / 8, "ifeval/prompt_accuracy": 2 / 5,
        "ifeval/instruction_accuracy_loose": 6 / 8, "ifeval/prompt_accuracy_loose": 3 / 5,
        "ifeval/prompts": 5, "ifeval/instructions": 8})


@needs_punkt
def test_sentence_counting_instruction_with_real_punkt():
    result = score_ifeval(load_ifeval(), RESPONSES)
    # the 5 above (5/8 strict) plus 1006 [T, T]: 7/10 instructions, 3/6 prompts
    assert result["per_prompt"][5]["strict"] == [True, True]
    assert result["instruction_accuracy"] == pytest.approx(7 / 10)
    assert result["prompt_accuracy"] == pytest.approx(3 / 6)


def test_clear_errors(monkeypatch):
    prompts = load_ifeval(limit=1)
    with pytest.raises(ValueError, match="1 prompts but 2 responses"):
        score_ifeval(prompts, ["a", "b"])
    bad = [ifeval.IfevalPrompt(7, "p", ("change_case:shouting",), ({},))]
    with pytest.raises(ValueError, match=r"prompt 7: unknown instruction id\(s\) \['change_case:shouting'\]"):
        score_ifeval(bad, ["x"])
    monkeypatch.setattr(ifeval, "punkt_available", lambda: False)
    with pytest.raises(IfevalUnavailable, match="python -m trainyard.evaluation.provision"):
        score_ifeval(prompts, ["x"])


def test_generation_on_tiny_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainyard.fixtures.tiny_model import ensure_tiny_model

    path = ensure_tiny_model()
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    result = evaluate_ifeval_generation(model, tokenizer, load_ifeval(), max_new_tokens=8, batch_size=4, limit=3)
    assert result["prompts"] == 3 and result["instructions"] == 4 and len(result["responses"]) == 3
    assert 0.0 <= result["instruction_accuracy"] <= 1.0
