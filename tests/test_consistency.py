import math

import pytest

from trainyard.evaluation.consistency import as_number, eval_set_values, run_consistency, spread


def test_spread_hand_computed():
    # 10, 12, 14: range 4, mean 12, population variance (4 + 0 + 4) / 3 = 8/3
    s = spread({"a": 10.0, "b": 12.0, "c": 14.0}, "perplexity")
    assert s.min == 10.0 and s.max == 14.0
    assert s.range == 4.0
    assert s.mean == 12.0
    assert s.std == pytest.approx(math.sqrt(8 / 3))  # 1.6330, population, not sample (2.0)
    assert s.relative_spread_pct == pytest.approx(100 * 4 / 12)  # 33.33 %
    assert s.excluded == {} and s.reason is None


def test_two_members_std_is_half_the_range():
    s = spread({"x": 2.0, "y": 2.5}, "loss")
    assert s.range == pytest.approx(0.5)
    assert s.std == pytest.approx(0.25)
    assert s.relative_spread_pct == pytest.approx(0.5 / 2.25 * 100)  # 22.22 %


def test_non_finite_members_excluded_and_named():
    s = spread({"a": 10.0, "b": "inf", "c": 14.0, "d": "nan", "e": None}, "perplexity")
    assert s.members == {"a": 10.0, "c": 14.0}
    assert s.excluded == {"b": "inf", "d": "nan"}  # named; e (not measured) is not a member
    assert s.range == 4.0 and s.mean == 12.0 and s.std == 2.0
    assert s.relative_spread_pct == pytest.approx(100 * 4 / 12)


def test_fewer_than_two_finite_gives_none_with_reason():
    s = spread({"a": 3.0, "b": float("inf")}, "perplexity")
    assert s.range is None and s.std is None and s.relative_spread_pct is None and s.mean is None
    assert "at least 2 finite" in s.reason and "b" in s.reason
    empty = spread({}, "loss")
    assert empty.std is None and "has 0" in empty.reason


def test_zero_mean_relative_spread_undefined():
    s = spread({"a": -1.0, "b": 1.0}, "loss")
    assert s.range == 2.0 and s.std == 1.0
    assert s.relative_spread_pct is None and "mean is 0" in s.reason


def test_as_number():
    assert as_number(1) == 1.0
    assert as_number("inf") == math.inf
    assert as_number("-inf") == -math.inf
    assert math.isnan(as_number("nan"))
    assert as_number(None) is None and as_number("x") is None and as_number(True) is None


def test_run_consistency_from_flat_metrics():
    metrics = {
        "train/loss": 1.0,
        "eval/wiki/loss": 2.0,
        "eval/wiki/perplexity": math.exp(2.0),
        "eval/code/loss": 3.0,
        "eval/code/perplexity": math.exp(3.0),
        "eval/news/loss": "inf",
        "eval/news/perplexity": "inf",
        "tatqa/span/exact_match": 0.5,  # not an eval set
    }
    assert eval_set_values(metrics, "loss") == {"wiki": 2.0, "code": 3.0, "news": "inf"}
    c = run_consistency(metrics)
    assert set(c) == {"perplexity", "loss"}
    assert c["loss"].range == 1.0 and c["loss"].std == 0.5
    assert c["loss"].relative_spread_pct == pytest.approx(40.0)  # 1 / 2.5
    assert c["perplexity"].range == pytest.approx(math.exp(3) - math.exp(2))  # 12.6965
    assert c["perplexity"].excluded == {"news": "inf"}
    assert c["perplexity"].to_json()["excluded"] == {"news": "inf"}
