"""Matrix expansion: counts, names, stability, duplicates; and every bad input."""

import textwrap

import pytest

from trainyard.errors import SpecError
from trainyard.matrix import expand, load_matrix

BASE = """
name: m
base:
  recipe: sft
  model: {name: Qwen/Qwen3-0.6B}
  data: {source: fixture:strandset_rust, format: strandset_rust}
  lora: {r: 16, alpha: 32}
  train: {lr: 2.0e-5, batch_size: 2}
"""


def doc(extra: str) -> str:
    return BASE + textwrap.dedent(extra)


def test_grid_is_a_cartesian_product_with_derived_names(write_yaml):
    m = load_matrix(write_yaml(doc("""
        grid:
          train.lr: [2.0e-5, 5.0e-6]
          lora.r: [16, 32]
    """)))
    assert len(m.runs) == 4
    assert m.run_names == ["lr2e-5_r16", "lr2e-5_r32", "lr5e-6_r16", "lr5e-6_r32"]
    run = m.run("lr5e-6_r32")
    assert run.train.lr == 5e-6 and run.lora.r == 32 and run.lora.alpha == 32
    assert m.varying == ["lora.r", "train.lr"]


def test_variants_cross_grid_and_keep_explicit_names(write_yaml):
    m = load_matrix(write_yaml(doc("""
        variants:
          - {name: small, data.limit: 100}
          - name: big
            data: {limit: 1000}
            lora: {r: 32, alpha: 64}
        grid:
          train.epochs: [1, 2]
    """)))
    assert m.run_names == ["small_ep1", "small_ep2", "big_ep1", "big_ep2"]
    big = m.run("big_ep2")
    assert (big.data.limit, big.lora.r, big.lora.alpha, big.train.epochs) == (1000, 32, 64, 2)
    # nested override merges into the section: base keys it does not name survive
    assert big.data.format == "strandset_rust"


def test_names_do_not_depend_on_key_order(write_yaml):
    a = load_matrix(write_yaml(doc("grid:\n  train.lr: [1.0e-4]\n  lora.r: [8]\n"), "a.yaml"))
    b = load_matrix(write_yaml(doc("grid:\n  lora.r: [8]\n  train.lr: [1.0e-4]\n"), "b.yaml"))
    assert a.run_names == b.run_names == ["lr1e-4_r8"]
    assert a.runs[0].fingerprint() == b.runs[0].fingerprint() or a.runs[0].matrix == b.runs[0].matrix


def test_expansion_is_pure_and_stable():
    d = {"base": {"a": {"x": 1}}, "grid": {"a.x": [1, 2]}, "variants": [{"name": "v", "b": 3}]}
    first = expand(d)
    assert expand(d) == first
    assert d == {"base": {"a": {"x": 1}}, "grid": {"a.x": [1, 2]}, "variants": [{"name": "v", "b": 3}]}
    assert [n for n, _, _ in first] == ["v_x1", "v_x2"]


def test_no_grid_no_variants_is_one_base_run(write_yaml):
    assert load_matrix(write_yaml(BASE)).run_names == ["base"]


def test_shipped_rust_matrix_matches_the_study():
    m = load_matrix("jobs/rust_sft.yaml")
    rows = {r.name: (r.data.limit, r.train.epochs, r.lora.r, r.lora.alpha, r.lora.dropout, r.train.max_length, r.train.scheduler, r.train.warmup_ratio, r.train.lr, r.train.batch_size, r.train.grad_accum) for r in m.runs}
    assert rows == {
        "5k": (5000, 1, 16, 32, 0.1, 2048, "cosine", 0.0, 2e-5, 2, 2),
        "20k-r32": (20000, 1, 32, 64, 0.1, 1024, "cosine", 0.0, 2e-5, 2, 2),
        "20k-2ep-restarts": (20000, 2, 32, 64, 0.1, 1024, "cosine_with_restarts", 0.1, 2e-5, 2, 2),
    }
    assert m.baseline == "5k"


# ------------------------------------------------------------------ bad input

def problems(write_yaml, text: str) -> str:
    with pytest.raises(SpecError) as info:
        load_matrix(write_yaml(text))
    return str(info.value)


def test_unknown_key_names_file_run_key_and_suggests(write_yaml):
    msg = problems(write_yaml, doc("variants:\n  - {name: v1, train.lerning_rate: 1}\n"))
    assert "m.yaml" in msg and "v1" in msg and "lerning_rate" in msg
    msg = problems(write_yaml, BASE.replace("batch_size: 2", "batch_sise: 2"))
    assert "unknown key" in msg and "did you mean 'batch_size'" in msg and "train.batch_sise" in msg
    assert "m.yaml:8 " in msg  # line of the offending key


def test_wrong_type(write_yaml):
    msg = problems(write_yaml, BASE.replace("batch_size: 2", "batch_size: two"))
    assert "train.batch_size" in msg and "'two'" in msg


def test_empty_grid_list(write_yaml):
    msg = problems(write_yaml, doc("grid:\n  train.lr: []\n"))
    assert "grid.train.lr" in msg and "empty grid list" in msg


def test_grid_key_not_in_schema(write_yaml):
    msg = problems(write_yaml, doc("grid:\n  train.learning_rate: [1.0e-5]\n"))
    assert "grid.train.learning_rate" in msg and "not in the schema" in msg


def test_duplicate_run_names(write_yaml):
    msg = problems(write_yaml, doc("variants:\n  - {name: a, train.lr: 1.0e-5}\n  - {name: a, train.lr: 2.0e-5}\n"))
    assert "duplicate run name" in msg and "'a'" in msg


@pytest.mark.parametrize(
    "old,new,expect",
    [
        ("recipe: sft", "recipe: sfft", "unknown recipe 'sfft'"),
        ("lr: 2.0e-5", "lr: 2.0e-5, scheduler: cosine_restarts", "train.scheduler"),
        ("lr: 2.0e-5", "lr: -1.0e-5", "train.lr"),
        ("lr: 2.0e-5", "lr: 0", "train.lr"),
        ("batch_size: 2", "batch_size: 0", "train.batch_size"),
        ("format: strandset_rust", "format: strandset", "unknown format 'strandset'"),
    ],
)
def test_invalid_values(write_yaml, old, new, expect):
    msg = problems(write_yaml, BASE.replace(old, new))
    assert expect in msg
    assert "nothing was run or submitted" in msg


def test_yaml_syntax_error_has_line_number(write_yaml):
    msg = problems(write_yaml, BASE + "grid:\n  train.lr: [1, 2\n")
    assert "YAML syntax error" in msg and "m.yaml:" in msg


def test_all_problems_are_reported_at_once(write_yaml):
    msg = problems(write_yaml, doc("variants:\n  - {name: a, train.lr: -1}\n  - {name: b, train.batch_size: 0}\n"))
    assert "2 problems" in msg and "'a'" in msg and "'b'" in msg


def test_cli_validate_exit_codes_and_writes_nothing(write_yaml, tmp_path, capsys):
    from trainyard.cli import main

    bad = write_yaml(BASE.replace("recipe: sft", "recipe: nope"))
    assert main(["validate", "--matrix", str(bad)]) == 2
    assert main(["--matrix", str(bad), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert not (tmp_path / "runs").exists()
    assert "unknown recipe" in capsys.readouterr().err
    good = write_yaml(BASE, "good.yaml")
    assert main(["validate", "--matrix", str(good)]) == 0


def test_dry_run_prints_the_study_values(capsys):
    from trainyard.cli import main

    assert main(["--matrix", "jobs/rust_sft.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    for needle in ["5k", "20k-r32", "20k-2ep-restarts", "5,000", "20,000", "16/32", "32/64", "2048", "1024", "cosine_with_restarts", "0.1", "2e-05", "2 × 2"]:
        assert needle in out, needle
    assert "nothing submitted" in out


def test_status_reports_a_vanished_local_process_as_failed(tmp_path, capsys):
    import json
    import os
    import subprocess

    from trainyard.cli import main
    from trainyard.run_dir import RunDir

    dead = subprocess.Popen(["true"])
    dead.wait()
    rd = RunDir.for_run(tmp_path, "rust_sft", "5k")
    rd.set_status("running", pid=dead.pid, host=os.uname().nodename, step=3, max_steps=10)
    assert main(["status", "--matrix", "jobs/rust_sft.yaml", "--runs-dir", str(tmp_path), "--json"]) == 0
    rows = {r["run"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["5k"]["state"] == "failed" and "is gone" in rows["5k"]["reason"]
    assert rows["20k-r32"]["state"] == "not started"


def test_missing_local_files_warn_in_validate_and_block_a_local_launch(write_yaml, tmp_path, capsys):
    from trainyard.cli import main

    m = write_yaml(BASE.replace("source: fixture:strandset_rust", f"source: {tmp_path}/nope.jsonl"))
    assert main(["validate", "--matrix", str(m)]) == 0
    assert "local path" in capsys.readouterr().err
    assert main(["--matrix", str(m), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "nothing was run or submitted" in err and "key 'data.source'" in err and "nope.jsonl" in err
    assert not (tmp_path / "runs").exists()
    # --smoke swaps in the bundled fixture, so the pre-flight still runs
    assert main(["--matrix", str(m), "--smoke", "--dry-run"]) == 0


def test_a_changed_spec_is_refused_and_restart_sets_the_old_run_aside(tmp_path, capsys):
    from trainyard.cli import refuse_stale
    from trainyard.run_dir import RunDir

    m = load_matrix("jobs/rust_sft.yaml")
    done, stopped, same = m.run("5k"), m.run("20k-r32"), m.run("20k-2ep-restarts")
    for spec, state in ((done, "completed"), (stopped, "canceled"), (same, "completed")):
        rd = RunDir.for_run(tmp_path, spec.matrix, spec.name)
        rd.create()
        rd.spec_file.write_text(spec.to_json())
        rd.set_status(state)
    ck = RunDir.for_run(tmp_path, stopped.matrix, stopped.name).checkpoints / "checkpoint-2"
    ck.mkdir()  # a complete checkpoint: weights (an empty safetensors) + the state the Trainer writes last
    (ck / "adapter_model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    (ck / "trainer_state.json").write_text('{"global_step": 2}')

    def changed(spec, **train):
        return spec.model_copy(update={"train": spec.train.model_copy(update=train)})

    # only where/how it runs changed: not stale
    longer = same.model_copy(update={"resources": same.resources.model_copy(update={"timeout": "24h"})})
    new = [changed(done, lr=1e-4), changed(stopped, lr=1e-4), longer]
    assert refuse_stale(new, tmp_path, restart=False) is True
    err = capsys.readouterr().err
    assert "5k holds a completed run of a different spec" in err
    assert "20k-r32 holds checkpoints of a different spec" in err
    assert "20k-2ep-restarts" not in err
    assert refuse_stale(new, tmp_path, restart=True) is False
    moved = sorted(p.name for p in (tmp_path / "rust_sft").iterdir())
    assert moved[0] == "20k-2ep-restarts" and any(n.startswith("5k.replaced-") for n in moved)
    assert any(n.startswith("20k-r32.replaced-") for n in moved) and "5k" not in moved
    assert refuse_stale(new, tmp_path, restart=False) is False  # nothing stale any more
