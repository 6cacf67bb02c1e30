"""Exact perplexity: windows, token weighting, padding, flags, the CLI, and agreement with
lm-evaluation-harness numbers recorded in tests/data/lm_eval_reference.json."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from trainyard.evaluation.perplexity import count_words, evaluate_texts, main, summarize
from trainyard.evaluation.texts import load_texts
from trainyard.evaluation.windows import block_windows, rolling_windows

DATA = Path(__file__).parent / "data"
DOCS = DATA / "ppl_docs.jsonl"
REFERENCE = DATA / "lm_eval_reference.json"

TEXTS = [
    "The bridge was completed in 1911.",
    "A kestrel hovers above open ground while hunting for voles, insects and lizards; "
    "populations declined across western Europe after 1970.",
    "Copper sulfate forms bright blue crystals.",
    "= History =\n\nThe town received its charter in 1348, when the lord of the manor was "
    "granted the right to hold a weekly market and an annual fair. Wool brought prosperity.",
    "Go.",
]


@pytest.fixture(scope="module")
def tiny(tiny_model):
    from transformers import AutoTokenizer

    return Path(tiny_model), AutoTokenizer.from_pretrained(tiny_model)


def load(path: Path, logit_scale: float = 1.0):
    """The tiny model in float32; logit_scale multiplies the final norm weight (so the logits)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        model.model.norm.weight.mul_(logit_scale)
    return model.eval()


@pytest.fixture(scope="module")
def model(tiny):
    return load(tiny[0])


@pytest.fixture(scope="module")
def sharp(tiny):
    # The built model is near-uniform; a 10x logit scale makes context and token choice matter.
    return load(tiny[0], 10.0)


def direct_nll(model, ids: list[int], prefix: int) -> tuple[float, int]:
    """ΣNLL and argmax hits of one short document in one forward pass (no windows, no batch)."""
    inputs = torch.tensor([[prefix, *ids[:-1]]])
    with torch.no_grad():
        logits = model(input_ids=inputs).logits[0]
    targets = torch.tensor(ids)
    nll = F.cross_entropy(logits, targets, reduction="sum").item()
    return nll, int((logits.argmax(-1) == targets).sum())


# --- windows ------------------------------------------------------------------------------


def scored_positions(windows, n_ids: int, prefix: int) -> list[int]:
    """Index (into the document) of every scored target, checking each window is a slice."""
    seq = [prefix, *range(1000, 1000 + n_ids)]
    out = []
    for w in windows:
        start = seq.index(w.tokens[0]) if w.tokens[0] != prefix else 0
        assert w.tokens == seq[start : start + len(w.tokens)]
        last = start + len(w.tokens) - 1  # seq index of the last target
        out += [j - 1 for j in range(last - w.n_scored + 1, last + 1)]
    return out


@pytest.mark.parametrize("max_length", [1, 2, 3, 5, 8])
def test_rolling_windows_score_every_token_exactly_once(max_length):
    for n in range(0, 30):
        ids = list(range(1000, 1000 + n))
        windows = rolling_windows(ids, prefix_id=7, max_length=max_length)
        assert scored_positions(windows, n, 7) == list(range(n))
        assert all(w.input_len <= max_length for w in windows)
        if n:
            assert windows[0].tokens[0] == 7  # the first token is predicted from the prefix


def test_rolling_windows_hand_worked_case():
    ids = list(range(10, 20))
    got = [(w.tokens, w.n_scored) for w in rolling_windows(ids, prefix_id=0, max_length=4)]
    assert got == [
        ([0, 10, 11, 12, 13], 4),  # prefix predicts 10; 10..12 predict 11..13
        ([13, 14, 15, 16, 17], 4),  # one token of context (13), then the next 4 targets
        ([15, 16, 17, 18, 19], 2),  # last, short chunk: as much context as fits in 4 inputs
    ]


def test_rolling_windows_equal_lm_eval_windows():
    lm_eval_utils = pytest.importorskip("lm_eval.utils")
    rng = random.Random(0)
    for _ in range(200):
        ids = [rng.randrange(5, 1000) for _ in range(rng.randrange(0, 60))]
        max_length = rng.randrange(1, 20)
        theirs = [
            (ctx + cont, len(cont))
            for ctx, cont in map(
                lm_eval_utils.make_disjoint_window,
                lm_eval_utils.get_rolling_token_windows(ids, 3, max_length, context_len=1),
            )
        ]
        ours = [(w.tokens, w.n_scored) for w in rolling_windows(ids, 3, max_length)]
        assert ours == theirs


def test_block_windows_group_texts_with_eos():
    windows = block_windows([[1, 2, 3], [4, 5], [6]], eos_id=0, max_length=4)
    # stream 1 2 3 0 4 5 0 6 0: the trailing single token has nothing to predict, so no window
    assert [w.tokens for w in windows] == [[1, 2, 3, 0], [4, 5, 0, 6]]
    assert [w.n_scored for w in windows] == [3, 3]
    assert [w.tokens for w in block_windows([[1, 2, 3, 4, 5]], 0, 4)] == [[1, 2, 3, 4], [5, 0]]


# --- numbers ------------------------------------------------------------------------------


def test_summed_nll_equals_direct_per_document_loss(tiny, sharp):
    _, tok = tiny
    result = evaluate_texts(sharp, tok, TEXTS, max_length=1024, batch_size=3)
    ids = tok(TEXTS, add_special_tokens=False)["input_ids"]
    direct = [direct_nll(sharp, x, tok.eos_token_id) for x in ids]
    total = math.fsum(nll for nll, _ in direct)
    tokens = sum(map(len, ids))
    assert result.tokens == tokens
    assert result.text_nll == pytest.approx([nll for nll, _ in direct], rel=1e-5)
    assert result.nll_sum == pytest.approx(total, rel=1e-6)
    assert result.loss == pytest.approx(total / tokens, rel=1e-6)
    assert result.perplexity == pytest.approx(math.exp(total / tokens), rel=1e-5)
    n_bytes = sum(len(t.encode("utf-8")) for t in TEXTS)
    words = sum(len(t.split()) for t in TEXTS)  # these texts have no edge whitespace
    assert (result.bytes, result.words) == (n_bytes, words)
    assert result.bits_per_byte == pytest.approx(total / n_bytes / math.log(2), rel=1e-6)
    assert result.word_perplexity == pytest.approx(math.exp(total / words), rel=1e-4)
    assert result.token_accuracy == sum(hits for _, hits in direct) / tokens
    assert result.flag is None


def test_loss_is_token_weighted_not_a_mean_of_batch_means(tiny, sharp):
    _, tok = tiny
    texts = [TEXTS[4], TEXTS[3]]  # 2 tokens vs ~40: a batch mean gives the short text half the weight
    per_text = [evaluate_texts(sharp, tok, [t], max_length=1024) for t in texts]
    both = evaluate_texts(sharp, tok, texts, max_length=1024)
    weighted = sum(r.nll_sum for r in per_text) / sum(r.tokens for r in per_text)
    batch_mean = sum(r.loss for r in per_text) / len(per_text)
    assert both.loss == pytest.approx(weighted, rel=1e-6)  # float32 logits: batch shape noise only
    assert abs(batch_mean - weighted) / weighted > 0.02  # the two really differ here


@pytest.mark.parametrize("mode", ["rolling", "block"])
def test_padding_does_not_change_the_result(tiny, sharp, mode):
    _, tok = tiny
    texts = load_texts(DOCS)[:8] + TEXTS
    one = evaluate_texts(sharp, tok, texts, mode=mode, max_length=48, batch_size=1)
    for batch_size in (4, 16):
        many = evaluate_texts(sharp, tok, texts, mode=mode, max_length=48, batch_size=batch_size)
        assert many.nll_sum == pytest.approx(one.nll_sum, rel=1e-6)
        assert (many.tokens, many.token_accuracy) == (one.tokens, one.token_accuracy)
        if mode == "rolling":
            assert many.text_nll == pytest.approx(one.text_nll, rel=1e-5)


def test_block_mode_equals_the_trainers_loss_per_block(tiny, sharp):
    _, tok = tiny
    result = evaluate_texts(sharp, tok, TEXTS, mode="block", max_length=32, batch_size=4)
    ids = tok(TEXTS, add_special_tokens=False)["input_ids"]
    stream = [t for x in ids for t in (*x, tok.eos_token_id)]
    total, tokens = 0.0, 0
    for i in range(0, len(stream), 32):
        block = torch.tensor([stream[i : i + 32]])
        if block.shape[1] < 2:
            continue
        with torch.no_grad():  # labels = input ids, as causal-LM training computes its loss
            loss = sharp(input_ids=block, labels=block).loss.item()
        total += loss * (block.shape[1] - 1)
        tokens += block.shape[1] - 1
    assert result.tokens == tokens
    assert result.nll_sum == pytest.approx(total, rel=1e-5)


def test_model_is_evaluated_in_eval_mode_and_handed_back_as_it_was(tiny):
    path, tok = tiny
    m = load(path)
    m.train()
    evaluate_texts(m, tok, TEXTS[:2])
    assert m.training


# --- flags --------------------------------------------------------------------------------


def test_huge_loss_gives_inf_perplexity_with_overflow_flag(tiny):
    path, tok = tiny
    result = evaluate_texts(load(path, 1e4), tok, TEXTS)
    assert math.isfinite(result.loss) and result.loss > 709
    assert result.perplexity == math.inf and result.word_perplexity == math.inf
    assert result.flag.startswith("overflow: loss ")
    assert math.isfinite(result.bits_per_byte)
    metrics = result.to_metrics("wiki")
    assert metrics["eval/wiki/perplexity"] == math.inf
    assert metrics["eval/wiki/flag"] == result.flag


def test_nan_weights_are_flagged_as_diverged_not_averaged(tiny):
    path, tok = tiny
    broken = load(path)
    with torch.no_grad():
        broken.model.norm.weight[0] = float("nan")
    result = evaluate_texts(broken, tok, TEXTS)
    assert math.isnan(result.loss) and math.isnan(result.perplexity)
    assert result.flag == f"diverged: non-finite loss on {result.tokens} of {result.tokens} tokens"


def test_word_perplexity_overflow_is_named():
    r = summarize(nll_sum=3000.0, tokens=100, correct=0, nonfinite_tokens=0, n_bytes=400, n_words=2)
    assert r.perplexity == pytest.approx(math.exp(30.0))
    assert r.word_perplexity == math.inf
    assert r.flag == "overflow: loss per word 1500 > 709, word perplexity exceeds the float range"


def test_to_metrics_uses_contract_names_and_adds_flag_only_when_set():
    r = summarize(nll_sum=20.0, tokens=10, correct=4, nonfinite_tokens=0, n_bytes=30, n_words=5)
    assert r.to_metrics("heldout") == {
        "eval/heldout/loss": 2.0,
        "eval/heldout/perplexity": pytest.approx(math.exp(2.0)),
        "eval/heldout/bits_per_byte": pytest.approx(20.0 / 30 / math.log(2)),
        "eval/heldout/word_perplexity": pytest.approx(math.exp(4.0)),
        "eval/heldout/tokens": 10,
        "eval/heldout/token_accuracy": 0.4,
    }
    with pytest.raises(ValueError, match="no '/'"):
        r.to_metrics("a/b")


def test_word_count_follows_the_harness():
    assert count_words("a  b\nc") == 3
    assert count_words(" a b ") == 4  # re.split keeps the empty edges, as lm-eval counts them


# --- command line -------------------------------------------------------------------------


def test_cli_prints_json_with_the_contract_keys(tiny, model, capsys):
    path, tok = tiny
    rc = main(["--model", str(path), "--data", str(DOCS), "--max-length", "64", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert {"loss", "perplexity", "bits_per_byte", "word_perplexity", "tokens"} <= set(out)
    expected = evaluate_texts(model, tok, load_texts(DOCS), max_length=64)
    assert out["tokens"] == expected.tokens
    assert out["bits_per_byte"] == pytest.approx(expected.bits_per_byte, rel=1e-6)
    assert (out["mode"], out["max_length"], out["texts"], out["flag"]) == ("rolling", 64, 20, None)


def test_cli_reads_txt_lines_and_prints_a_summary(tiny, tmp_path, capsys):
    data = tmp_path / "wiki.txt"
    data.write_text(" = Heading = \n\n" + TEXTS[0] + "\n\n" + TEXTS[2] + "\n", encoding="utf-8")
    assert main(["--model", str(tiny[0]), "--data", str(data), "--mode", "block", "--max-length", "16"]) == 0
    out = capsys.readouterr().out
    assert "3 texts" in out and "bits per byte" in out and "perplexity" in out


def test_cli_names_missing_file_and_missing_field(tiny, tmp_path, capsys):
    assert main(["--model", str(tiny[0]), "--data", str(tmp_path / "nope.jsonl")]) == 2
    assert f"{tmp_path / 'nope.jsonl'}: no such file" in capsys.readouterr().err
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"content": "x", "id": 1}) + "\n")
    assert main(["--model", str(tiny[0]), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert "no field 'text'" in err and "'content', 'id'" in err and "--text-field" in err


def test_module_runs_as_a_command(tiny):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "trainyard.evaluation.perplexity", "--model", str(tiny[0]),
         "--data", str(DOCS), "--max-length", "128", "--json"],
        capture_output=True, text=True, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tokens"] > 0


# --- agreement with lm-evaluation-harness -------------------------------------------------


def fingerprint(model, tok, texts) -> dict[str, str]:
    """As tools/make_lm_eval_reference.py computes it: the reference holds only for these."""
    weights = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    return {
        "weights_sha256": weights.hexdigest(),
        "token_ids_sha256": hashlib.sha256(json.dumps(ids).encode()).hexdigest(),
    }


@pytest.mark.parametrize("name", ["tiny", "tiny_sharp"])
def test_bits_per_byte_and_word_perplexity_match_lm_eval(tiny, name):
    reference = json.loads(REFERENCE.read_text())
    ref = reference["models"][name]
    path, tok = tiny
    texts = load_texts(DOCS)
    m = load(path, ref["logit_scale"])
    drift = {k: v for k, v in fingerprint(m, tok, texts).items() if v != ref[k]}
    assert not drift, (
        f"the tiny model or tokenizer differs from the one {REFERENCE.name} was recorded with "
        f"({', '.join(drift)}); regenerate it: python tools/make_lm_eval_reference.py"
    )

    result = evaluate_texts(m, tok, texts, mode="rolling", max_length=reference["max_length"], batch_size=8)

    # The contract: within 0.5% of the harness.
    assert result.bits_per_byte == pytest.approx(ref["bits_per_byte"], rel=5e-3)
    assert result.word_perplexity == pytest.approx(ref["word_perplexity"], rel=5e-3)
    # What we actually get: the same windows and float32 math, so only summation order differs.
    assert result.bits_per_byte == pytest.approx(ref["bits_per_byte"], rel=1e-6)
    assert result.text_nll == pytest.approx([-d["loglikelihood"] for d in ref["docs"]], rel=1e-5)
    assert result.bytes == sum(d["bytes"] for d in ref["docs"])
    assert result.words == sum(d["words"] for d in ref["docs"])
