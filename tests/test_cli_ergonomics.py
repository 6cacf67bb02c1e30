"""CLI: --set overrides, --version, help texts, closed pipes, and no torch in the launcher."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trainyard.cli import build_parser, main
from trainyard.matrix import load_matrix

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = [sys.executable, str(ROOT / "launch.py")]
BASE = textwrap.dedent("""
    name: m
    base:
      recipe: sft
      model: {name: Qwen/Qwen3-0.6B}
      data: {source: fixture:strandset_rust, format: strandset_rust}
      lora: {r: 16, alpha: 32}
      train: {lr: 2.0e-5, batch_size: 2}
    grid:
      lora.r: [8, 16]
""")


def test_set_overrides_every_run_with_yaml_typed_values(write_yaml):
    m = load_matrix(write_yaml(BASE), sets=["train.lr=1e-4", "train.scheduler=cosine", "lora.target_modules=[q_proj, v_proj]", "eval.tatqa=null"])
    assert [r.name for r in m.runs] == ["r8", "r16"]  # overrides do not rename runs
    for r in m.runs:
        assert r.train.lr == 1e-4 and isinstance(r.train.lr, float) and r.train.scheduler == "cosine"
        assert r.lora.target_modules == ["q_proj", "v_proj"]


def test_set_errors_name_the_override(write_yaml, capsys):
    path = write_yaml(BASE)
    assert main(["validate", "--matrix", str(path), "--set", "train.lr=-1"]) == 2
    err = capsys.readouterr().err
    assert "(--set train.lr)" in err and "greater than 0" in err and "all 2 runs" in err


def test_version_and_help():
    from trainyard import __version__

    proc = subprocess.run([*LAUNCH, "--version"], capture_output=True, text=True, check=True)
    assert __version__ in proc.stdout
    proc = subprocess.run([*LAUNCH, "--help"], capture_output=True, text=True, check=True)
    assert "launch.py [submit] --matrix FILE" in proc.stdout and "docs/config.md" in proc.stdout
    for command in ("validate", "status", "logs", "cancel", "report"):
        assert command in proc.stdout


def test_every_option_has_help():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    for name, sub in {"launch.py": parser, **subparsers.choices}.items():
        for action in sub._actions:
            if action.dest in ("help", "command"):
                continue
            assert action.help, f"{name}: {action.option_strings or action.dest} has no help"


def test_status_json_survives_a_closed_pipe(tmp_path):
    script = (f"{' '.join(LAUNCH)} status --matrix jobs/rust_sft.yaml --json --runs-dir {tmp_path} | head -c 10;"
              f" {' '.join(LAUNCH)} validate --matrix jobs/rust_sft.yaml | head -n 1")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr


def test_no_launcher_command_imports_torch(tmp_path):
    """validate, submit --dry-run on every backend, status, logs, cancel, report, and a
    --smoke validate: after all of them, no torch / transformers / trl / peft / datasets."""
    code = textwrap.dedent(f"""
        import contextlib, io, json, sys
        from trainyard.backends import BACKENDS
        from trainyard.cli import main
        runs = {str(tmp_path)!r}
        commands = [["validate", "--matrix", "jobs/rust_sft.yaml"], ["validate", "--matrix", "jobs/tatqa_dpo.yaml", "--smoke"]]
        commands += [["--matrix", "jobs/rust_sft.yaml", "--dry-run", "--backend", b, "--runs-dir", runs] for b in BACKENDS]
        for c in ("status", "cancel", "report"):
            commands.append([c, "--matrix", "jobs/rust_sft.yaml", "--runs-dir", runs] + (["--out", runs + "/rep"] if c == "report" else []))
        commands.append(["logs", "--matrix", "jobs/rust_sft.yaml", "5k", "--runs-dir", runs])
        codes = []
        for c in commands:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                codes.append(main(c))
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "trl", "peft", "datasets"))
        print(json.dumps({{"codes": codes, "heavy": heavy[:10]}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["codes"][:-1] == [0] * (len(result["codes"]) - 1)  # logs of a run never started: 1


@pytest.mark.parametrize("value,expected", [("1e-4", 1e-4), ("1.0e4", 10000.0), ("true", True), ("[a, b]", ["a", "b"]), ("null", None)])
def test_set_values_are_yaml_typed(value, expected):
    from trainyard.yaml_load import load_value

    assert load_value(value) == expected
