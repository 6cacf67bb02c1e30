"""MT-Bench-style judge: question loading, rating parsing, recorded and HTTP judges."""

from __future__ import annotations

import json
import logging
import math
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from trainyard.evaluation.judge import (
    JudgeError,
    OpenAIJudge,
    RecordedJudge,
    evaluate_mt_bench,
    grade_answers,
    judge_from_config,
    judge_messages,
    judge_metrics,
    load_questions,
    parse_rating,
)


def test_fixture_questions_in_mt_bench_format():
    questions = load_questions()
    assert len(questions) == 6
    assert all(len(q.turns) == 2 for q in questions)
    assert {q.category for q in questions} >= {"writing", "math", "reasoning", "coding"}
    math_q = next(q for q in questions if q.category == "math")
    assert math_q.reference is not None and len(math_q.reference) == 2


def test_questions_in_hub_prompt_format_and_bad_rows(tmp_path):
    path = tmp_path / "q.json"
    path.write_text(json.dumps([{"prompt_id": 7, "category": "stem", "prompt": ["a?", "b?"], "reference": []}]))
    (q,) = load_questions(path)
    assert (q.question_id, q.turns, q.reference) == ("7", ("a?", "b?"), None)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": 1, "turns": ["only one"]}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: question 1 must have exactly 2"):
        load_questions(bad)


@pytest.mark.parametrize(
    ("reply", "rating"),
    [("Good answer. Rating: [[8]]", 8.0), ("[[ 7.5 ]]", 7.5), ('Use "[[rating]]". Rating: [[3]]', 3.0),
     ("I'd say 9/10", None), ("Rating: [[0]]", None), ("Rating: [[11]]", None), ("", None)],
)
def test_parse_rating(reply, rating):
    assert parse_rating(reply) == rating


def test_judge_prompts_show_reference_and_whole_dialogue_for_turn_two():
    q = next(q for q in load_questions() if q.category == "math")
    first = judge_messages(q, ["$4.00", "25"], 1)[1]["content"]
    assert "[[rating]]" in first and q.turns[0] in first and "$4.00" in first
    assert q.reference[0] in first and q.turns[1] not in first
    second = judge_messages(q, ["$4.00", "25"], 2)[1]["content"]
    assert q.turns[0] in second and q.turns[1] in second and "SECOND" in second and q.reference[1] in second


def test_recorded_judge_scores_with_missing_ratings():
    questions = load_questions(limit=3)
    replies = {
        f"{questions[0].question_id}/turn1": "Clear. Rating: [[8]]",
        f"{questions[0].question_id}/turn2": "Rating: [[6]]",
        f"{questions[1].question_id}/turn1": "Rating: [[9]]",
        f"{questions[1].question_id}/turn2": "I cannot decide.",  # missing, not 0
        f"{questions[2].question_id}/turn1": "Rating: [[4]]",
        f"{questions[2].question_id}/turn2": "Rating: [[2]]",
    }
    judge = RecordedJudge(replies)
    result = grade_answers(questions, [["a1", "a2"]] * 3, judge)
    # turn 1: (8 + 9 + 4) / 3 = 7; turn 2: (6 + 2) / 2 = 4; overall: 29 / 5 = 5.8
    assert result["turn1"] == pytest.approx(7.0)
    assert result["turn2"] == pytest.approx(4.0)
    assert result["overall"] == pytest.approx(5.8)
    assert result["missing"] == 1 and result["count"] == 3
    assert judge_metrics(result) == pytest.approx(
        {"judge/turn1": 7.0, "judge/turn2": 4.0, "judge/overall": 5.8, "judge/missing": 1.0, "judge/questions": 3.0})
    assert [key for key, _ in judge.calls] == list(replies)
    with pytest.raises(JudgeError, match="no recorded judge reply for '1004/turn1'"):
        grade_answers(load_questions()[3:4], [["x", "y"]], judge)


def test_no_valid_rating_gives_nan_not_zero():
    (q,) = load_questions(limit=1)
    result = grade_answers([q], [["a", "b"]], RecordedJudge({f"{q.question_id}/turn1": "?", f"{q.question_id}/turn2": "?"}))
    assert math.isnan(result["overall"]) and result["missing"] == 2


class _FakeOpenAI(BaseHTTPRequestHandler):
    requests: list[dict] = []
    fail_first: list[int] = []

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if type(self).fail_first:
            self.send_response(type(self).fail_first.pop())
            self.end_headers()
            return
        reply = {"choices": [{"message": {"role": "assistant", "content": "Fine. Rating: [[7]]"}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def fake_server():
    _FakeOpenAI.requests, _FakeOpenAI.fail_first = [], []
    server = HTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_openai_judge_request_and_key_never_logged(fake_server, monkeypatch, caplog, capsys):
    secret = "sk-test-SECRET-123"
    monkeypatch.setenv("MY_JUDGE_KEY", secret)
    caplog.set_level(logging.DEBUG)
    judge = judge_from_config({"type": "openai", "base_url": fake_server + "/", "model": "judge-model",
                               "api_key_env": "MY_JUDGE_KEY"})
    questions = load_questions(limit=2)
    result = grade_answers(questions, [["x", "y"]] * 2, judge)
    assert result["overall"] == 7.0 and result["missing"] == 0
    assert len(_FakeOpenAI.requests) == 4
    first = _FakeOpenAI.requests[0]
    assert first["path"] == "/v1/chat/completions"
    assert first["auth"] == f"Bearer {secret}"
    assert first["body"]["model"] == "judge-model"
    assert first["body"]["messages"] == judge_messages(questions[0], ["x", "y"], 1)
    assert first["body"]["temperature"] == 0.0
    captured = capsys.readouterr()
    assert "chat/completions" in caplog.text  # the requests are logged ...
    assert secret not in caplog.text + captured.out + captured.err  # ... the key is not


def test_openai_judge_retries_then_fails_clearly(fake_server, monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "k")
    monkeypatch.setattr("trainyard.evaluation.judge.time.sleep", lambda s: None)
    _FakeOpenAI.fail_first = [503]
    judge = OpenAIJudge(fake_server, "m", api_key_env="MY_JUDGE_KEY", max_retries=1)
    assert "[[7]]" in judge.grade([{"role": "user", "content": "hi"}], "q/turn1")
    _FakeOpenAI.fail_first = [401]
    with pytest.raises(JudgeError, match="refused the request for q/turn1: HTTP 401"):
        judge.grade([{"role": "user", "content": "hi"}], "q/turn1")
    monkeypatch.delenv("MY_JUDGE_KEY")
    with pytest.raises(JudgeError, match="set the environment variable MY_JUDGE_KEY"):
        judge.grade([{"role": "user", "content": "hi"}], "q/turn1")


def test_mt_bench_end_to_end_on_tiny_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainyard.fixtures.tiny_model import ensure_tiny_model

    path = ensure_tiny_model()
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    questions = load_questions(limit=2)
    judge = RecordedJudge({f"{q.question_id}/turn{t}": f"Rating: [[{t + 2}]]" for q in questions for t in (1, 2)})
    result = evaluate_mt_bench(model, tokenizer, questions, judge, max_new_tokens=8, batch_size=2)
    assert (result["turn1"], result["turn2"], result["overall"]) == (3.0, 4.0, 3.5)
    assert len(result["answers"]) == 2
    # the turn-2 judge prompt shows the model's own turn-1 answer and the second question
    key, messages = judge.calls[1]
    assert key.endswith("/turn2") and questions[0].turns[1] in messages[1]["content"]
