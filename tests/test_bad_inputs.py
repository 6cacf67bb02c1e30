"""The bad-input corpus (tests/bad_inputs/*.yaml): every case is refused by the real CLI
with exit 2, its expected message, no traceback and nothing written.

Each case file starts with header comments:

    # expect: <substring of the message>
    # args: ["--backend", "k8s"]        (optional, JSON list of extra CLI arguments)
    # command: submit                   (optional; default validate)
    # needs: no-cuda                    (optional; skipped on a machine with a GPU)

and may read files under tests/bad_inputs/data/ and models/ by relative path: each case runs
in a fresh copy of the corpus directory, which must be unchanged afterwards.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
ROOT = CORPUS.parents[1]
CASES = sorted(CORPUS.glob("*.yaml"))


def header(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_bytes().decode("latin-1").splitlines():
        if not line.startswith("# ") or ":" not in line:
            break
        key, _, value = line[2:].partition(":")
        out[key.strip()] = value.strip()
    return out


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    work = tmp_path / "corpus"
    shutil.copytree(CORPUS, work)
    monkeypatch.chdir(work)
    return work


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40
    assert all("expect" in header(c) for c in CASES), [c.name for c in CASES if "expect" not in header(c)]


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_bad_input_is_refused(case: Path, workdir: Path, capsys):
    from trainyard.cli import main
    from trainyard.preflight import local_cuda

    meta = header(case)
    if meta.get("needs") == "no-cuda" and local_cuda():
        pytest.skip("this machine has a GPU: the device check passes")
    command = meta.get("command", "validate")
    args = json.loads(meta.get("args", "[]"))
    before = snapshot(workdir)
    code = main([command, "--matrix", case.name, "--runs-dir", str(workdir / "runs"), *args])
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert code == 2, output
    assert meta["expect"] in output, output
    assert "Traceback" not in output
    assert snapshot(workdir) == before, "the case wrote files"


def test_the_real_cli_refuses_in_a_subprocess(workdir: Path):
    """Through `python launch.py` (the anchor bomb, deep nesting, a grid of 10^6 runs): exit
    2, the message, no traceback, nothing written."""
    before = snapshot(workdir)
    for name in ("yaml_anchor_bomb", "yaml_deep_nesting", "yaml_grid_too_large", "data_jsonl_broken_line"):
        case = workdir / f"{name}.yaml"
        proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--matrix", case.name, "--runs-dir", "runs"],
                              capture_output=True, text=True, timeout=120, cwd=workdir)
        assert proc.returncode == 2, proc.stderr
        assert header(case)["expect"] in proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout
    assert snapshot(workdir) == before
