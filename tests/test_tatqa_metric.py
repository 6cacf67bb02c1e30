"""TAT-QA scorer: hand-checked cases of the official semantics (NExTplusplus/TAT-QA tatqa_metric.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainyard.evaluation.tatqa import TatqaFileError, evaluate_files, load_gold, main
from trainyard.evaluation.tatqa_metric import (
    evaluate,
    is_number,
    normalize_answer,
    score_question,
    to_number,
)

GOLD = Path(__file__).parent / "data" / "tatqa_gold.json"


@pytest.fixture(scope="module")
def questions() -> dict[str, dict]:
    return {q["uid"]: q for c in load_gold(GOLD) for q in c["questions"]}


def em_f1(question, answer, scale):
    s = score_question(question, answer, scale)
    return s.exact_match, s.f1


@pytest.mark.parametrize(
    ("text", "value"),
    [("$1,145", 1145), ("(134)", -134), ("12.5%", 0.125), ("5 million", 5_000_000),
     ("1.2", 1.2), ("(1,234)", 1234),  # officially the comma stops "(…)" from reading as negative
     (".5", None)],  # officially a leading "." reads as no number
)
def test_number_parsing(text, value):
    assert is_number(text)
    assert to_number(text) == value


def test_normalization():
    assert normalize_answer("The Lower-Freight costs, and a policy!") == "lowerfreight costs and policy"
    assert normalize_answer("1,145.0000") == "1145.0"
    assert not is_number("3 items") and is_number("3 million")


def test_scale_mismatch_thousand_vs_million(questions):
    q2 = questions["q2"]  # arithmetic, 1145 thousand
    assert em_f1(q2, 1145, "thousand") == (1.0, 1.0)
    assert em_f1(q2, "$1,145", "thousand") == (1.0, 1.0)
    assert em_f1(q2, 1145, "million") == (0.0, 0.0)  # 1145000000 vs 1145000
    # the value matters, not how it is split: 1145000 with no scale equals 1145 thousand
    assert em_f1(q2, 1145000, "") == (1.0, 1.0)


def test_percent(questions):
    q5 = questions["q5"]  # span "12.5%", scale percent -> 0.1250
    assert em_f1(q5, "12.5%", "percent") == (1.0, 1.0)
    assert em_f1(q5, 12.5, "percent") == (1.0, 1.0)
    assert em_f1(q5, "12.5%", "") == (1.0, 1.0)  # the "%" carries the scale itself
    assert em_f1(q5, 0.125, "") == (1.0, 1.0)  # bare-number fallback: 0.1250
    assert em_f1(q5, 12.5, "") == (0.0, 0.0)  # 12.5 is not 0.125
    q7 = questions["q7"]  # arithmetic 13.64 percent
    assert em_f1(q7, 0.1364, "") == (1.0, 1.0)  # "0.1400" fails, fallback "0.1364" matches
    assert em_f1(q7, 0.1364, "percent") == (0.0, 0.0)


def test_negative_in_parentheses(questions):
    q1 = questions["q1"]  # span "(134)" thousand -> -134000
    assert em_f1(q1, "(134)", "thousand") == (1.0, 1.0)
    assert em_f1(q1, -134, "thousand") == (1.0, 1.0)
    assert em_f1(q1, 134, "thousand") == (0.0, 0.0)


def test_multi_span_partial_credit_order_insensitive(questions):
    q8 = questions["q8"]  # ["Wells Fargo", "Citibank"] -> bag {citibank, wells, fargo}
    assert em_f1(q8, ["Citibank", "Wells Fargo"], "") == (1.0, 1.0)
    # P = 2/2, R = 2/3 -> F1 = 0.8
    assert em_f1(q8, ["Wells Fargo"], "") == (0.0, 0.8)
    # P = 3/4, R = 1 -> F1 = 6/7 = 0.857 -> 0.86
    assert em_f1(q8, ["Citibank", "Wells Fargo", "JPMorgan"], "") == (0.0, 0.86)
    q3 = questions["q3"]  # ["2019", "2018"] -> "2018.0 2019.0"; one of two: F1 2/3 -> 0.67
    assert em_f1(q3, ["2019"], "") == (0.0, 0.67)
    assert em_f1(q3, [2018, 2019], "") == (1.0, 1.0)


def test_count_and_arithmetic_f1_is_em(questions):
    q4 = questions["q4"]  # count "3"
    assert em_f1(q4, 3, "") == (1.0, 1.0)
    assert em_f1(q4, "3", "") == (1.0, 1.0)
    assert em_f1(q4, "three", "") == (0.0, 0.0)
    q9 = questions["q9"]  # arithmetic 1.05 million; numbers are rounded to 2 places first
    assert em_f1(q9, 1.048, "million") == (1.0, 1.0)
    assert em_f1(q9, 1.044, "million") == (0.0, 0.0)
    assert em_f1(q9, "1,050,000", "") == (1.0, 1.0)


def test_missing_and_falsy_predictions(questions):
    s = score_question(questions["q4"], None, None)
    assert (s.exact_match, s.f1, s.missing, s.scale_correct) == (0.0, 0.0, True, False)
    # officially an empty answer scores 0 and earns no scale credit either
    s = score_question(questions["q4"], "", "")
    assert (s.exact_match, s.scale_correct, s.missing) == (0.0, False, False)


# One prediction per gold question; expected per question (EM, F1, scale right):
#   q1 span       table      "-134" thousand            1  1     yes
#   q2 arithmetic table      1145 million               0  0     no
#   q3 multi-span table      ["2019"] ""                0  0.67  yes
#   q4 count      table      "3" ""                     1  1     yes
#   q5 span       text       "12.5%" ""                 1  1     no
#   q6 span       text       "lower freight costs" ""   0  0.6   yes  (P 3/3, R 3/7)
#   q7 arithmetic table-text 0.1364 ""                  1  1     no
#   q8 multi-span text       3 banks ""                 0  0.86  yes
#   q9 arithmetic table      (missing)                  0  0     no
#   q10 count     table-text 2 ""                       0  0     yes
#   q11 multi-span table-text ["4.5","1.2"] million     1  1     yes
# EM 5/11, F1 7.13/11, scale 7/11.
VARIED = {
    "q1": ["-134", "thousand"],
    "q2": [1145, "million"],
    "q3": [["2019"], ""],
    "q4": ["3", ""],
    "q5": ["12.5%", ""],
    "q6": ["lower freight costs", ""],
    "q7": [0.1364, ""],
    "q8": [["Citibank", "Wells Fargo", "JPMorgan"], ""],
    "q10": [2, ""],
    "q11": [["4.5", "1.2"], "million"],
}


def test_varied_prediction_set_aggregates():
    result = evaluate(load_gold(GOLD), VARIED)
    assert result["count"] == 11 and result["missing"] == 1
    assert result["exact_match"] == pytest.approx(5 / 11)
    assert result["f1"] == pytest.approx(7.13 / 11)
    assert result["scale_accuracy"] == pytest.approx(7 / 11)
    by_type = result["by_answer_type"]
    assert list(by_type) == ["span", "multi-span", "arithmetic", "count"]
    assert by_type["span"] == pytest.approx({"exact_match": 2 / 3, "f1": 2.6 / 3, "count": 3})
    assert by_type["multi-span"] == pytest.approx({"exact_match": 1 / 3, "f1": 2.53 / 3, "count": 3})
    assert by_type["arithmetic"] == pytest.approx({"exact_match": 1 / 3, "f1": 1 / 3, "count": 3})
    assert by_type["count"] == pytest.approx({"exact_match": 1 / 2, "f1": 1 / 2, "count": 2})
    by_from = result["by_answer_from"]
    assert by_from["table"] == pytest.approx({"exact_match": 2 / 5, "f1": 2.67 / 5, "count": 5})
    assert by_from["text"] == pytest.approx({"exact_match": 1 / 3, "f1": 2.46 / 3, "count": 3})
    assert by_from["table-text"] == pytest.approx({"exact_match": 2 / 3, "f1": 2 / 3, "count": 3})


def test_cli_prints_json(tmp_path, capsys):
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({**VARIED, "not-a-question": ["x", ""]}))
    assert main(["--gold", str(GOLD), "--pred", str(pred)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["exact_match"] == pytest.approx(5 / 11)
    assert out["unknown_predictions"] == 1
    assert set(out) >= {"exact_match", "f1", "scale_accuracy", "count", "missing", "by_answer_type", "by_answer_from"}


@pytest.mark.parametrize(
    ("gold", "pred", "message"),
    [
        ("[{\"questions\": [{\"uid\": \"a\", \"answer_type\": \"span\", \"scale\": \"\"}]}]", "{}", "missing key(s) ['answer']"),
        ("[{\"questions\": [{\"uid\": \"a\", \"answer\": \"x\", \"answer_type\": \"span\", \"scale\": \"\"}]}]", "{}", "must be a list"),
        ("[{\"questions\": [{\"uid\": \"a\", \"answer\": [\"x\"], \"answer_type\": \"date\", \"scale\": \"\"}]}]", "{}", "answer_type 'date'"),
        ("{\"questions\": []}", "{}", "expected a list of contexts"),
        ("[]", "{\"a\": \"x\"}", "must be [answer, scale]"),
        ("[]", "[1, 2", "not valid JSON"),
    ],
)
def test_bad_files_are_named(tmp_path, capsys, gold, pred, message):
    (tmp_path / "gold.json").write_text(gold)
    (tmp_path / "pred.json").write_text(pred)
    with pytest.raises(TatqaFileError, match=None) as info:
        evaluate_files(tmp_path / "gold.json", tmp_path / "pred.json")
    assert message in str(info.value) and "tmp" in str(info.value)
    assert main(["--gold", str(tmp_path / "gold.json"), "--pred", str(tmp_path / "pred.json")]) == 2
    assert message in capsys.readouterr().err
