"""launch.py report on fake run directories: 3 completed runs, 1 diverged, 1 failed, 1 queued."""

from __future__ import annotations

import json
import math
import statistics
import struct

import pytest

from report_fixtures import FINAL_LOSS, build_runs, write_matrix
from trainyard.matrix import load_matrix
from trainyard.report import build_report, param_labels, run_report
from trainyard.report_tables import direction, fmt_number
from trainyard.run_dir import RunDir

BASE = "lr2e-5_r8"
BEST = "lr1e-4_r8"
DIVERGED = "lr1e-3_r8"


def md_row(md: str, first_cell: str) -> list[str]:
    """Cells of the first markdown table row whose first cell is ``first_cell``."""
    for line in md.splitlines():
        if line.startswith("| "):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if cells[0] == first_cell:
                return cells
    raise AssertionError(f"no row {first_cell!r}")


def section(md: str, title: str) -> str:
    start = md.index(f"## {title}")
    nxt = md.find("\n## ", start + 1)
    return md[start: nxt if nxt != -1 else None]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    matrix, root = build_runs(tmp)
    rep = build_report(matrix, root, tmp / "out")
    return rep, rep.markdown_path.read_text(), json.loads(rep.json_path.read_text())


def test_runs_table_params_state_metrics_and_best(report):
    _, md, _ = report
    runs = section(md, "Runs")
    header = [c.strip() for c in runs.splitlines()[4].strip("|").split(" | ")]
    assert header[:4] == ["run", "r", "lr", "state"]  # short labels of lora.r and train.lr
    assert "avg eval ppl (3 sets)" in header and "train CE loss (nats/token)" in header
    base = md_row(runs, BASE)
    assert base[1:4] == ["8", "2e-05", "completed"]
    best = md_row(runs, BEST)
    # avg eval loss over 3 sets: (1.8 + 2.4 + 1.2) / 3 = 1.8; perplexity mean of exp()
    ppl = (math.exp(1.8) + math.exp(2.4) + math.exp(1.2)) / 3
    assert best[header.index("avg eval CE loss (3 sets, nats/token)")] == "**1.8000** ★"
    assert best[header.index("avg eval ppl (3 sets)")] == f"**{ppl:.2f}** ★"
    assert best[header.index("tokens/s")] == "1,100"  # throughput is not ranked
    # diverged: state with the reason, inf metric as "diverged†", partial average not ranked
    div = md_row(runs, DIVERGED)
    assert div[3] == "diverged (non-finite loss at step 120)"
    assert div[header.index("train CE loss (nats/token)")] == "diverged†"
    assert div[header.index("avg eval CE loss (3 sets, nats/token)")] == "2.2000 (1 of 3)"
    assert "∞" not in md and "inf" not in runs.replace("infinite", "")
    failed = md_row(runs, "lr1e-4_r32")
    assert failed[3] == "failed (torch.OutOfMemoryError: CUDA out of memory)"
    assert failed[4:] == ["failed"] * (len(header) - 4)  # never blank
    queued = md_row(runs, "lr1e-3_r32")
    assert queued[3] == "queued" and set(queued[4:]) == {"queued"}
    assert "† diverged: the value is infinite" in runs


def test_eval_tables_rows_columns_average(report):
    _, md, data = report
    ppl = section(md, "Eval perplexity")
    header = [c.strip() for c in ppl.splitlines()[4].strip("|").split(" | ")]
    assert header == ["eval set", BASE, BEST, DIVERGED, "lr2e-5_r32", "lr1e-4_r32", "lr1e-3_r32"]
    wiki = md_row(ppl, "wiki")
    assert wiki[1] == f"{math.exp(2.5):.2f}" == "12.18"
    assert wiki[2] == "**11.02** ★"
    assert wiki[3] == "diverged†" and wiki[5] == "failed" and wiki[6] == "queued"
    code = md_row(ppl, "code")
    assert code[3] == f"{math.exp(2.2):.2f}"  # the diverged run's one finite set
    avg = md_row(ppl, "average (finite only)")
    assert avg[1] == f"{(math.exp(2.0) + math.exp(2.5) + math.exp(1.5)) / 3:.2f}"  # 8.02
    assert avg[3] == f"{math.exp(2.2):.2f} (1 of 3)"
    assert "mean over finite values only" in ppl
    # report.json: same table, raw values, best cell per run column
    t = data["tables"]["eval_perplexity"]
    assert t["columns"][0] == "eval_set"
    row = next(r for r in t["rows"] if r["eval_set"] == "heldout")
    assert row[BASE] == pytest.approx(math.exp(2.0))
    assert row[DIVERGED] == "inf"
    assert row["lr1e-3_r32"] is None
    assert t["best"][BEST] == ["heldout", "wiki", "code", "average"]
    loss = next(r for r in data["tables"]["eval_loss"]["rows"] if r["eval_set"] == "average")
    assert loss[BASE] == pytest.approx(2.0)
    assert loss[DIVERGED] == {"mean": pytest.approx(2.2), "finite_sets": 1, "sets": 3}


def test_consistency_table(report):
    _, md, data = report
    cons = section(md, "Consistency across eval sets")
    base = md_row(cons, BASE)
    # loss 2.0, 2.5, 1.5: range 1.0, population std sqrt(1/6) = 0.4082, spread 1.0 / 2.0 = 50%
    assert base[4:8] == ["1.0000", "0.4082", "50.0%", "none"]
    ppls = [math.exp(x) for x in (2.0, 2.5, 1.5)]
    assert base[1] == f"{max(ppls) - min(ppls):.2f}"
    div = md_row(cons, DIVERGED)
    assert div[1:7] == ["n/a"] * 6
    assert div[7] == "heldout (inf), wiki (inf)"
    assert "needs at least 2 finite eval sets, has 1" in div[8]
    j = next(r for r in data["runs"] if r["name"] == DIVERGED)["consistency"]["perplexity"]
    assert j["excluded"] == {"heldout": "inf", "wiki": "inf"} and j["std"] is None


def test_delta_vs_baseline(report):
    _, md, data = report
    delta = section(md, f"Δ vs baseline ({BASE})")
    row = md_row(delta, "eval/heldout/loss")
    assert row[1] == "2.0000"  # baseline value
    assert row[2] == "-0.2000 (-10.0%)"  # 1.8 vs 2.0
    assert row[3] == "diverged†"
    assert row[4] == "-0.1000 (-5.0%)"
    assert row[5] == "failed" and row[6] == "queued"
    code = md_row(delta, "eval/code/loss")
    assert code[3] == "+0.7000 (+46.7%) (diverged, not ranked)"  # 2.2 vs 1.5
    tps = md_row(delta, "train/tokens_per_second")
    assert tps[2] == "+100 (+10.0%)"
    t = data["tables"]["delta_vs_baseline"]
    cell = next(r for r in t["rows"] if r["metric"] == "eval/wiki/perplexity")["lr2e-5_r32"]
    assert cell["delta"] == pytest.approx(math.exp(2.6) - math.exp(2.5))
    assert cell["delta_pct"] == pytest.approx((math.exp(0.1) - 1) * 100)  # +10.5 %


def test_problem_runs_listed_with_reason(report):
    _, md, _ = report
    probs = section(md, "Failed, diverged and canceled runs")
    assert f"**{DIVERGED}**: diverged: non-finite loss at step 120" in probs
    assert "**lr1e-4_r32**: failed: torch.OutOfMemoryError: CUDA out of memory" in probs
    assert "not finished" in md  # partial matrix banner


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_charts_exist_and_are_real_images(report):
    rep, md, data = report
    names = sorted(p.name for p in rep.charts)
    assert names == ["eval_loss.png", "eval_perplexity.png", "heatmap_lr__r.png", "lr_schedule.png", "train_loss.png"]
    for p in rep.charts:
        w, h = _png_size(p)
        assert w >= 400 and h >= 250 and p.stat().st_size > 10_000
        assert f"]({p.name})" in md  # embedded in the markdown
    notes = data["charts"]["eval_perplexity"]["notes"]
    assert any(f"{DIVERGED} on heldout: diverged" in n for n in notes)
    assert any("lr1e-3_r32 (queued)" in n for n in notes)


def test_report_json_structure(report):
    _, _, data = report
    assert data["matrix"] == "demo" and data["baseline"] == BASE
    assert data["varying"] == {"lora.r": "r", "train.lr": "lr"}
    assert data["eval_sets"] == ["heldout", "wiki", "code"]
    assert data["states"] == {"completed": 3, "diverged": 1, "failed": 1, "queued": 1}
    assert {"runs", "pivot_lr__r", "eval_loss", "eval_perplexity", "consistency", "delta_vs_baseline", "progress"} <= set(data["tables"])
    assert "eval_progression_lr2e-5_r8" in data["tables"] and "tatqa" not in data["tables"]
    runs = {r["name"]: r for r in data["runs"]}
    assert runs[BASE]["params"] == {"lora.r": 8, "train.lr": 2e-5}
    assert runs[BASE]["metrics"]["eval/wiki/loss"] == FINAL_LOSS[BASE]["wiki"]
    assert runs[DIVERGED]["reason"] == "non-finite loss at step 120"
    assert runs["lr1e-3_r32"]["state"] == "queued"
    rt = data["tables"]["runs"]
    assert rt["columns"][:4] == ["run", "param:lora.r", "param:train.lr", "state"]
    assert rt["best"]["avg/perplexity"] == [BEST]


def test_tatqa_judge_ifeval_sections_only_when_present(tmp_path):
    matrix, root = build_runs(tmp_path)
    md0 = build_report(matrix, root, tmp_path / "a").markdown_path.read_text()
    assert "TAT-QA" not in md0 and "Judge" not in md0 and "IFEval" not in md0
    for name, (before, after, judge) in {BASE: (0.077, 0.148, 6.5), BEST: (0.077, 0.2, 7.25)}.items():
        rd = RunDir.for_run(root, "demo", name)
        m = rd.metrics()
        m.update({
            "tatqa_before/arithmetic/exact_match": before, "tatqa/arithmetic/exact_match": after,
            "tatqa_before/span/exact_match": 0.5, "tatqa/span/exact_match": 0.55,
            "tatqa_before/exact_match": 0.3, "tatqa/exact_match": 0.35, "tatqa/f1": 0.4,
            "judge/turn1": judge, "judge/turn2": judge - 1, "judge/overall": judge - 0.5,
            "ifeval/prompt_accuracy": 0.25, "ifeval/instruction_accuracy": 0.375,
        })
        rd.write_metrics(m)
    rep = build_report(matrix, root, tmp_path / "b")
    md = rep.markdown_path.read_text()
    tatqa = section(md, "TAT-QA: before → after training")
    assert md_row(tatqa, "arithmetic EM")[2] == "7.7% → 14.8% (+7.1 pp)"
    assert md_row(tatqa, "arithmetic EM")[3] == "**7.7% → 20.0% (+12.3 pp)** ★"
    assert md_row(tatqa, "overall F1")[2:4] == ["40.0% (tie)"] * 2  # after only (no before); exact tie: no ★
    assert md_row(tatqa, "span EM")[5] == "—"  # completed run without TAT-QA
    assert md_row(tatqa, "span EM")[6] == "failed"
    judge = section(md, "Judge scores")
    assert md_row(judge, "overall")[2:4] == ["6.00", "**6.75** ★"]  # higher is better
    ife = section(md, "Instruction following")
    assert md_row(ife, "instruction-level accuracy")[2] == "37.5% (tie)"
    runs = section(md, "Runs")
    assert "TAT-QA EM" in runs and "judge" in runs
    tj = json.loads(rep.json_path.read_text())["tables"]["tatqa"]
    cell = next(r for r in tj["rows"] if r["metric"] == "tatqa/arithmetic/exact_match")[BASE]
    assert cell == {"before": 0.077, "after": 0.148}
    # Δ vs baseline in percentage points for accuracies
    delta = section(md, f"Δ vs baseline ({BASE})")
    assert md_row(delta, "tatqa/exact_match")[1] == "35.0%"
    assert md_row(delta, "judge/overall")[2] == "+0.75 (+12.5%)"


def test_nothing_run_yet_and_smoke_dir(tmp_path, capsys):
    path = write_matrix(tmp_path)
    # no runs at all: every run "not started", no metric sections, no charts, still exit 0
    assert run_report(path, tmp_path / "runs", tmp_path / "out") == 0
    printed = capsys.readouterr()
    assert "wrote" in printed.out and "does not exist yet" in printed.err
    md = (tmp_path / "out" / "report.md").read_text()
    assert md_row(md, BASE)[3] == "not started"
    assert not list((tmp_path / "out").glob("*.png"))
    # --smoke reads runs/demo-smoke/ and writes reports/demo-smoke/ by default
    matrix = load_matrix(path)
    rd = RunDir.for_run(tmp_path / "runs", "demo-smoke", BASE)
    rd.create()
    rd.write_metrics({"train/loss": 3.5, "eval/heldout/loss": 3.0, "eval/heldout/perplexity": math.exp(3.0)})
    rd.write_history([{"step": 1, "loss": 4.0, "learning_rate": 1e-5}, {"step": 2, "loss": 3.5, "learning_rate": 5e-6},
                      {"step": 2, "eval_heldout_loss": 3.0}])
    rd.set_status("running", step=2, max_steps=4)
    assert matrix.name == "demo"
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert run_report(path, "runs", None, smoke=True) == 0
    finally:
        os.chdir(cwd)
    md = (tmp_path / "reports" / "demo-smoke" / "report.md").read_text()
    assert md_row(md, BASE)[3] == "running (step 2/4, 50%)"
    assert (tmp_path / "reports" / "demo-smoke" / "train_loss.png").exists()


def test_bad_matrix_is_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbase: {recipe: nope}\n")
    assert run_report(bad, tmp_path / "runs", tmp_path / "out") == 2
    assert "bad.yaml" in capsys.readouterr().err


def test_labels_and_formatting_helpers():
    assert param_labels(["train.lr", "lora.r", "data.limit", "model.name"]) == {
        "train.lr": "lr", "lora.r": "r", "data.limit": "data.limit", "model.name": "model.name"}
    assert param_labels(["train.seed", "data.seed"]) == {"train.seed": "train.seed", "data.seed": "data.seed"}
    assert param_labels(["train.max_length", "eval.max_length"]) == {"train.max_length": "train.max_length", "eval.max_length": "eval.max_length"}
    assert direction("eval/wiki/perplexity") == "min" and direction("eval/x/bits_per_byte") == "min"
    assert direction("tatqa/span/f1") == "max" and direction("judge/turn1") == "max"
    assert direction("train/runtime_s") is None
    assert fmt_number("tatqa/exact_match", 0.148) == "14.8%"
    assert fmt_number("eval/x/perplexity", 123456.7) == "123,457"
    assert fmt_number("eval/x/perplexity", 3.2e9) == "3.2e+09"


def test_cli_report_subcommand(tmp_path, capsys):
    from trainyard.cli import main

    matrix, root = build_runs(tmp_path)
    rc = main(["report", "--matrix", str(matrix.path), "--runs-dir", str(root), "--out", str(tmp_path / "cli"), "--only", "*_r8"])
    assert rc == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'cli' / 'report.md'}" in out and "train_loss.png" in out
    md = (tmp_path / "cli" / "report.md").read_text()
    assert "| lr1e-4_r8 |" in md and "lr2e-5_r32" not in md  # --only selects runs


def test_baseline_not_finished_gives_a_note_not_a_table(tmp_path):
    matrix, root = build_runs(tmp_path)
    RunDir.for_run(root, "demo", BASE).set_status("diverged", reason="non-finite loss at step 7")
    rep = build_report(matrix, root, tmp_path / "out")
    md = rep.markdown_path.read_text()
    assert "## Δ vs baseline" not in md
    assert f"the baseline run `{BASE}` is diverged (non-finite loss at step 7)" in md
    assert "delta_vs_baseline" not in rep.data["tables"] and rep.data["notes"]


# ----------------------------------------------------------------------------- seed groups and grid


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    from report_fixtures import build_seed_runs

    tmp = tmp_path_factory.mktemp("seeds")
    matrix, root = build_seed_runs(tmp)
    rep = build_report(matrix, root, tmp / "out")
    return rep, rep.markdown_path.read_text(), json.loads(rep.json_path.read_text())


def test_seed_groups_mean_std_n(seeds):
    from report_fixtures import SEED_LOSS

    _, md, data = seeds
    groups = section(md, "Seed groups")
    header = [c.strip() for c in groups.splitlines()[4].strip("|").split(" | ")]
    assert header[:4] == ["seed group", "r", "lr", "state"]  # the seed is aggregated, not a column
    col = header.index("heldout CE loss (nats/token)")
    assert md_row(groups, "r=8, lr=2e-05")[col] == "2.0100 ± 0.0141 (n=2)"
    assert md_row(groups, "r=16, lr=0.0001")[col] == "**1.7300 ± 0.0424 (n=2)** ★"
    assert md_row(groups, "r=16, lr=0.0001")[3] == "2 completed"
    cell = next(r for r in data["tables"]["runs"]["rows"] if r["run"] == "r=16, lr=0.0001")["eval/heldout/loss"]
    assert cell["n"] == 2 and cell["mean"] == pytest.approx(1.73)
    assert cell["std"] == pytest.approx(statistics.stdev(SEED_LOSS[(1e-4, 16)]))
    assert data["seed_keys"] == ["train.seed"]
    assert [g["runs"] for g in data["groups"]][0] == ["lr2e-5_r8_s1", "lr2e-5_r8_s2"]
    # the individual runs are in the appendix, with the seed as a column
    appendix = md[md.index("## Appendix: individual runs"):]
    assert md_row(appendix, "lr1e-4_r16_s1")[1:4] == ["16", "0.0001", "1"]
    assert md_row(appendix, "lr1e-4_r16_s2")[header.index("heldout CE loss (nats/token)") + 1] == "1.7600"


def test_pivot_table_and_heatmap_over_the_two_keys(seeds):
    rep, md, data = seeds
    pivot = section(md, "heldout eval CE loss (nats/token): r × lr")
    assert "| r \\ lr | 2e-05 | 0.0001 |" in pivot
    assert md_row(pivot, "8")[1:] == ["2.0100 ± 0.0141 (n=2)", "1.8200 ± 0.0283 (n=2)"]
    assert md_row(pivot, "16")[1:] == ["2.0200 ± 0.0424 (n=2)", "**1.7300 ± 0.0424 (n=2)** ★"]
    t = data["tables"]["pivot_r__lr"]
    assert [r["row"] for r in t["rows"]] == [8, 16]
    assert t["rows"][1]["c1"]["values"] == [1.70, 1.76] and t["best"] == {"c1": ["16"]}
    assert data["factors"] == [{"label": "r", "keys": ["lora.r"]}, {"label": "lr", "keys": ["train.lr"]}]
    heat = next(p for p in rep.charts if p.name == "heatmap_r__lr.png")
    w, h = _png_size(heat)
    assert w >= 400 and h >= 250 and f"]({heat.name})" in md


def test_delta_says_within_one_std(seeds):
    _, md, data = seeds
    delta = section(md, "Δ vs baseline (r=8, lr=2e-05)")
    row = md_row(delta, "eval/heldout/loss")
    assert row[1] == "2.0100 ± 0.0141 (n=2)"
    # +0.01 vs the larger std 0.0424: noise; -0.28 vs 0.0424: real
    assert row[2] == "+0.0100 (+0.5%), within 1 std"
    assert row[4] == "-0.2800 (-13.9%), > 1 std"
    cell = next(r for r in data["tables"]["delta_vs_baseline"]["rows"] if r["metric"] == "eval/heldout/loss")["r=16, lr=2e-05"]
    assert cell["within_std"] is True and cell["std"] == pytest.approx(statistics.stdev([1.99, 2.05]))
    findings = section(md, "Findings")
    assert "best **r=16, lr=0.0001** at 1.7300 ± 0.0424 (n=2), -0.2800 (-13.9%), > 1 std vs the baseline r=8, lr=2e-05" in findings


def test_progress_table_numbers(seeds):
    _, md, data = seeds
    prog = section(md, "Per-run progress")
    # evals at 25/50/75/100, the lowest at 75; gap = final eval - last train loss = 0.3;
    # 100 steps in 90 s of training = 4,000 steps / hour; 2 epochs; 120 s wall
    assert md_row(prog, "lr2e-5_r8_s1")[1:] == ["100 / 100", "75 / 100", "+0.3000", "2.00", "2.0 min", "90.0 s", "4,000", "51,200"]
    summary = next(r for r in data["runs"] if r["name"] == "lr1e-4_r16_s1")["progress_summary"]
    assert summary["best_step"] == 75 and summary["best_loss"] == pytest.approx(1.65)
    assert summary["gap"] == pytest.approx(0.3) and summary["steps_per_hour"] == pytest.approx(4000)
    # eval progression (collapsed): improvement of perplexity vs the first eval
    assert "<details><summary>lr2e-5_r8_s1 (4 evaluations)</summary>" in md
    t = data["tables"]["eval_progression_lr2e-5_r8_s1"]
    assert [r["step"] for r in t["rows"]] == [25, 50, 75, 100]
    assert t["text"][2]["improvement"] == f"{(math.exp(-0.3) - 1) * 100:+.1f}%" == "-25.9%"
    assert t["rows"][3]["heldout/loss"] == pytest.approx(2.0)


# ----------------------------------------------------------------------------- DPO study


@pytest.fixture(scope="module")
def dpo(tmp_path_factory):
    from report_fixtures import build_dpo_runs

    tmp = tmp_path_factory.mktemp("dpo")
    matrix, root = build_dpo_runs(tmp)
    rep = build_report(matrix, root, tmp / "out")
    return rep, rep.markdown_path.read_text(), json.loads(rep.json_path.read_text())


def test_dpo_tatqa_with_n_and_ties(dpo):
    _, md, data = dpo
    tatqa = section(md, "TAT-QA: before → after training")
    assert md_row(tatqa, "overall EM")[1:5] == ["85", "10.0% → 20.0% (+10.0 pp)", "10.0% → 25.0% (+15.0 pp) (tie)",
                                                "10.0% → 25.0% (+15.0 pp) (tie)"]
    assert md_row(tatqa, "arithmetic EM")[1] == "40" and md_row(tatqa, "count EM")[1] == "5"
    assert md_row(tatqa, "multi-span F1")[1] == "10"
    assert "** ★" not in tatqa  # the best TAT-QA value is an exact tie
    assert md_row(tatqa, "overall EM")[5] == "10.0% → diverged"
    t = data["tables"]["tatqa"]
    assert t["ties"]["beta0.05"][0] == "tatqa/exact_match" and not t["best"]
    findings = section(md, "Findings")
    assert "TAT-QA exact match: tie between **beta0.05**, **beta0.02** at 25.0% (no single best)." in findings


def test_dpo_judge_ifeval_before_after(dpo):
    _, md, _ = dpo
    judge = section(md, "Judge scores")
    assert md_row(judge, "overall")[1:5] == ["80", "5.50 → 6.00 (+0.50)", "5.50 → 6.50 (+1.00)", "**5.50 → 7.00 (+1.50)** ★"]
    ife = section(md, "Instruction following")
    assert md_row(ife, "prompt-level accuracy")[1:5] == ["541", "40.0% → 50.0% (+10.0 pp)", "**40.0% → 60.0% (+20.0 pp)** ★",
                                                         "40.0% → 55.0% (+15.0 pp)"]
    assert md_row(ife, "instruction-level accuracy")[1] == "834"
    findings = section(md, "Findings")
    assert "judge score (1–10): best **beta0.02** at 7.00, +1.00 (+16.7%) vs the baseline beta0.1 (6.00)." in findings


def test_dpo_rewards_start_end_and_chart(dpo):
    rep, md, data = dpo
    rewards = section(md, "DPO rewards: start → end")
    assert md_row(rewards, "beta0.05")[1:4] == ["0.0% → 87.5% (steps 10 → 40)", "0.0000 → 0.3000 (steps 10 → 40)",
                                                "60.0% → 80.0% (steps 20 → 40)"]
    assert "policy equals the reference" in rewards  # the 0 % first log is explained, not reported as a start
    assert md_row(rewards, "beta0.5")[1] == "0.0% → 90.0% (steps 10 → 30)"
    prog = data["tables"]["eval_progression_beta0.1"]
    assert [r["reward_acc"] for r in prog["rows"]] == [0.55, 0.70]
    chart = next(p for p in rep.charts if p.name == "dpo_rewards.png")
    assert _png_size(chart)[0] >= 800 and "](dpo_rewards.png)" in md
    # one varied key (β): the primary metric against it, a line chart
    assert "metric_vs_parameter.png" in {p.name for p in rep.charts}
    assert data["charts"]["metric_vs_parameter"]["title"] == "TAT-QA exact match against each varied parameter"


def test_dpo_diverged_never_ranked_and_loss_unit(dpo):
    _, md, data = dpo
    runs = section(md, "Runs")
    header = [c.strip() for c in runs.splitlines()[4].strip("|").split(" | ")]
    loss_col = "heldout DPO loss (sigmoid, per preference pair)"
    assert loss_col in header and "nats" not in runs.split("\n\n")[2]
    div = md_row(runs, "beta0.5")
    # the diverged run has the lowest DPO loss and the highest reward accuracy, yet no ★
    assert div[header.index(loss_col)] == "0.0100"
    assert div[header.index("heldout reward accuracy")] == "99.0%"
    assert md_row(runs, "beta0.05")[header.index("heldout reward accuracy")] == "**80.0%** ★"
    assert "beta0.5" not in json.dumps(data["tables"]["runs"]["best"])
    # β differs: the DPO loss is shown but not ranked
    assert "DPO loss is not ranked" in runs and "★" not in md_row(runs, "beta0.1")[header.index(loss_col)]
    findings = section(md, "Findings")
    assert "**beta0.5** diverged: non-finite grad_norm (nan) at step 30 — not ranked." in findings
    assert "eval loss" not in findings


# ----------------------------------------------------------------------------- mixed loss


def test_mixed_loss_ranks_ce_and_shows_the_objective_apart(tmp_path):
    from report_fixtures import build_mixed_runs

    matrix, root = build_mixed_runs(tmp_path)
    rep = build_report(matrix, root, tmp_path / "out")
    md = rep.markdown_path.read_text()
    runs = section(md, "Runs")
    header = [c.strip() for c in runs.splitlines()[4].strip("|").split(" | ")]
    # CE: ce 2.9 < a0.5 3.0, though a0.5's objective (1.6) is lower: CE is what is ranked
    assert md_row(runs, "ce")[header.index("heldout CE loss (nats/token)")] == "**2.9000** ★"
    assert md_row(runs, "ce")[header.index("train CE (nats/token)")] == "**2.9500** ★"
    assert md_row(runs, "a0.5")[header.index("train objective")] == "1.7000"  # shown, never ★
    parts = section(md, "Mixed-loss objective, by part (not ranked)")
    assert md_row(parts, "heldout: objective (1−α)·CE + α·cos")[1:] == ["2.9000", "1.6000"]
    assert "** ★" not in parts
    # the eval-loss curve is CE (eval_ce_loss), not the objective logged as eval_loss
    notes = rep.data["charts"]["train_loss"]["notes"]
    assert any("CE part" in n for n in notes)
    prog = rep.data["tables"]["eval_progression_ce"]
    assert [r["heldout/loss"] for r in prog["rows"]] == [pytest.approx(3.3), pytest.approx(2.9)]


# ----------------------------------------------------------------------------- stale runs, ties, long Δ, schedule


def test_edited_yaml_marks_the_run_stale_with_its_trained_values(tmp_path):
    matrix, root = build_runs(tmp_path)
    # after training, the YAML is edited: the best run's lr and its LoRA alpha change; a longer
    # timeout (execution only) on another run does not make that run stale
    text = matrix.path.read_text()
    text = text.replace("{name: lr1e-4_r8, train.lr: 1.0e-4, lora.r: 8}", "{name: lr1e-4_r8, train.lr: 5.0e-4, lora.r: 8, lora.alpha: 64}")
    text = text.replace("{name: lr2e-5_r32, train.lr: 2.0e-5, lora.r: 32}", "{name: lr2e-5_r32, train.lr: 2.0e-5, lora.r: 32, resources.timeout: 9h}")
    matrix.path.write_text(text)
    edited = load_matrix(matrix.path)
    rep = build_report(edited, root, tmp_path / "out")
    md, data = rep.markdown_path.read_text(), rep.data
    runs = section(md, "Runs")
    header = [c.strip() for c in runs.splitlines()[4].strip("|").split(" | ")]
    row = md_row(runs, BEST)
    # the trained values, not the YAML's
    assert row[header.index("lr")] == "0.0001" and row[header.index("alpha")] == "32"
    assert row[header.index("state")] == "completed (stale: lora.alpha: 32 → 64; train.lr: 0.0001 → 0.0005)"
    avg = header.index("avg eval CE loss (3 sets, nats/token)")
    assert row[avg] == "1.8000"  # best value, but stale: never ★
    assert md_row(runs, "lr2e-5_r32")[avg] == "**1.9667** ★"  # the best of the comparable runs
    assert md_row(runs, "lr2e-5_r32")[header.index("state")] == "completed"  # timeout only: not stale
    stale = section(md, "Stale runs")
    assert f"**{BEST}**: `lora.alpha`: 32 → 64; `train.lr`: 0.0001 → 0.0005" in stale
    entry = next(r for r in data["runs"] if r["name"] == BEST)
    assert entry["stale"] and not entry["rankable"] and entry["params"]["train.lr"] == 1e-4
    assert entry["changes"] == [{"key": "lora.alpha", "trained": 32, "yaml": 64}, {"key": "train.lr", "trained": 1e-4, "yaml": 5e-4}]
    assert f"**{BEST}** is stale: lora.alpha: 32 → 64" in section(md, "Findings")
    # the stale run is not part of the pivot's ranking either
    assert "★" not in md_row(section(md, "avg eval CE loss (3 sets, nats/token): lr × r"), "0.0001")[1]


def test_unreadable_spec_json_is_stale_not_ranked(tmp_path):
    matrix, root = build_runs(tmp_path)
    RunDir.for_run(root, "demo", BEST).spec_file.write_text('{"recipe": "sft", "not_a_key": 1}')
    rep = build_report(matrix, root, tmp_path / "out")
    entry = next(r for r in rep.data["runs"] if r["name"] == BEST)
    assert entry["stale"] and "spec.json does not validate" in entry["spec_problem"]
    assert rep.data["tables"]["runs"]["best"]["avg/loss"] == ["lr2e-5_r32"]


def test_exact_ties_get_no_star(tmp_path):
    matrix, root = build_runs(tmp_path)
    same = RunDir.for_run(root, "demo", BEST).metrics()
    for name in (BASE, "lr2e-5_r32"):
        RunDir.for_run(root, "demo", name).write_metrics(same)
    rep = build_report(matrix, root, tmp_path / "out")
    md = rep.markdown_path.read_text()
    runs = section(md, "Runs")
    assert "** ★" not in runs
    header = [c.strip() for c in runs.splitlines()[4].strip("|").split(" | ")]
    for name in (BASE, BEST, "lr2e-5_r32"):
        assert md_row(runs, name)[header.index("avg eval CE loss (3 sets, nats/token)")] == "1.8000 (tie)"
    assert rep.data["tables"]["runs"]["ties"]["avg/loss"] == [BASE, BEST, "lr2e-5_r32"]
    assert "all 3 ranked runs tie at 1.8000" in section(md, "Findings")
    assert "(tie) = two or more runs share the best value exactly" in runs


def test_long_delta_table_is_summarized(tmp_path):
    matrix, root = build_runs(tmp_path)
    extra = [f"set{i}" for i in range(6)]  # 9 eval sets x 3 measures: a 30-row Δ table
    for name, shift in ((BASE, 0.0), (BEST, -0.1), ("lr2e-5_r32", 0.05)):
        rd = RunDir.for_run(root, "demo", name)
        m = rd.metrics()
        for i, s in enumerate(extra):
            loss = 2.0 + 0.1 * i + shift * (i + 1)
            m.update({f"eval/{s}/loss": loss, f"eval/{s}/perplexity": math.exp(loss), f"eval/{s}/bits_per_byte": loss / 2})
        rd.write_metrics(m)
    rep = build_report(matrix, root, tmp_path / "out")
    md = rep.markdown_path.read_text()
    summary = section(md, f"Δ vs baseline ({BASE}), summary")
    full = rep.data["tables"]["delta_vs_baseline"]
    assert len(full["rows"]) > 12 and "<details><summary>Full Δ vs baseline table" in md
    cell = next(r for r in rep.data["tables"]["delta_summary"]["rows"] if r["metric"] == "loss")[BEST]
    pcts = {r["metric"].split("/")[1]: r[BEST]["delta_pct"] for r in full["rows"] if r["metric"].startswith("eval/") and r["metric"].endswith("/loss")}
    assert len(pcts) == 9 and cell["sets"] == 9
    assert cell["mean_delta_pct"] == pytest.approx(sum(pcts.values()) / 9)
    assert cell["best_set"] == min(pcts, key=pcts.get) == "set5" and cell["worst_set"] == max(pcts, key=pcts.get) == "wiki"
    assert md_row(summary, "eval loss (9 sets)")[2].startswith(f"{cell['mean_delta_pct']:+.1f}%; best set5 -24.0%, worst wiki -4.0%")


def test_lr_schedule_keeps_the_zero_warmup_on_a_symlog_axis(tmp_path):
    matrix, root = build_runs(tmp_path)
    for name, peak in ((BASE, 1e-6), (BEST, 1e-3)):
        rd = RunDir.for_run(root, "demo", name)
        rd.write_history([{"step": s, "loss": 2.0, "learning_rate": peak * min(1.0, (s - 1) / 2)} for s in range(1, 6)])
    rep = build_report(matrix, root, tmp_path / "out")
    notes = rep.data["charts"]["lr_schedule"]["notes"]
    assert any("warm-up from 0 stays visible" in n for n in notes)


def test_smoke_specs_compare_without_machine_paths(tmp_path):
    from report_fixtures import build_dpo_runs
    from trainyard.report_inputs import spec_changes
    from trainyard.smoke import smoke_spec

    matrix, _ = build_dpo_runs(tmp_path)
    here = smoke_spec(matrix.run("beta0.1"), "/this/machine/tiny-model")
    d = here.model_dump(mode="json")
    d["model"]["name"] = "/other/machine/tiny-model"
    d["eval"]["ifeval"]["prompts"] = "/other/checkout/src/trainyard/fixtures/eval/ifeval.jsonl"
    elsewhere = type(here).model_validate(d)
    assert spec_changes(elsewhere, here) == []  # the same smoke run, trained in another checkout
    d["dpo"]["beta"] = 0.3
    assert spec_changes(type(here).model_validate(d), here) == [("dpo.beta", 0.3, 0.1)]


def test_seed_key_varying_with_no_repeats_stays_a_column(tmp_path):
    matrix, root = build_runs(tmp_path)
    text = matrix.path.read_text().replace("{name: lr2e-5_r32, train.lr: 2.0e-5, lora.r: 32}", "{name: lr2e-5_r32, train.lr: 2.0e-5, lora.r: 32, train.seed: 7}")
    matrix.path.write_text(text)
    edited = load_matrix(matrix.path)
    spec = RunDir.for_run(root, "demo", "lr2e-5_r32").spec_file
    spec.write_text(edited.run("lr2e-5_r32").to_json())  # trained with seed 7
    md = build_report(edited, root, tmp_path / "out").markdown_path.read_text()
    runs = section(md, "Runs")
    header = [c.strip() for c in runs.splitlines()[4].strip("|").split(" | ")]
    assert header[:5] == ["run", "r", "lr", "train.seed", "state"]
    assert md_row(runs, "lr2e-5_r32")[3] == "7" and md_row(runs, BASE)[3] == "42"
