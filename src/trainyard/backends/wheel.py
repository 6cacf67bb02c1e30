"""Getting trainyard into an HF Job without a container registry.

When a run sets no `image:`, the job runs a public CUDA PyTorch image and installs this
project's wheel before `python -m trainyard.run`. The wheel is built at submit from the
checkout the launcher runs from, and uploaded once per source version to the artifacts
repo under `wheels/<source hash>/` (content-addressed: the hash of pyproject.toml,
README.md and src/, so an unchanged checkout re-uses the uploaded wheel and a changed one
can never run a stale one). The install pins the launcher's own versions of the training
libraries, so the job trains with what `--smoke` tested here, and constrains pip to the
image's CUDA torch.

Torch-free: reads versions with importlib.metadata, never imports the libraries.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import trainyard

# Public image with CUDA torch (Docker Hub); also the Dockerfile's base, so both paths
# train on the same torch build.
BASE_IMAGE = "pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime"
EXTRAS = "quant,eval"
# Pinned in the job to the versions installed here (what --smoke and the tests ran).
PINNED = ("transformers", "trl", "peft", "datasets", "accelerate", "huggingface_hub", "tokenizers", "trackio", "pydantic")
WHEEL_DIR = "wheels"
SOURCE_FILES = ("pyproject.toml", "README.md")
WHEEL_LOCAL = "/tmp/trainyard-wheel"


class WheelError(RuntimeError):
    pass


def project_root() -> Path:
    """The checkout trainyard is imported from (src layout: <root>/src/trainyard)."""
    root = Path(trainyard.__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / "src" / "trainyard").is_dir():
        raise WheelError(
            f"trainyard is not imported from a source checkout ({Path(trainyard.__file__).parent}), so there is no "
            "project to build a wheel from; run the launcher from a clone (pip install -e .), or set `image:` to an "
            "image that has trainyard installed"
        )
    return root


def _source_files(root: Path) -> list[Path]:
    files = [root / f for f in SOURCE_FILES if (root / f).is_file()]
    for p in sorted((root / "src").rglob("*")):
        rel = p.relative_to(root).parts
        if p.is_file() and "__pycache__" not in rel and not any(part.endswith(".egg-info") for part in rel) and p.suffix != ".pyc":
            files.append(p)
    return files


def source_hash(root: Path | None = None) -> str:
    """sha256 (first 16 hex) of the files that go into the wheel: its content address."""
    root = root or project_root()
    h = hashlib.sha256()
    for p in _source_files(root):
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def wheel_name(root: Path | None = None) -> str:
    """The file pip names the wheel of pyproject.toml's version (the checkout's, not an installed one)."""
    import re

    text = ((root or project_root()) / "pyproject.toml").read_text()
    m = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if not m:
        raise WheelError("pyproject.toml has no static `version = \"...\"`")
    return f"trainyard-{m.group(1)}-py3-none-any.whl"


def pins() -> list[str]:
    """`name==version` of the training libraries installed here (skipped when absent)."""
    out = []
    for name in PINNED:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return out


@dataclass(frozen=True)
class WheelRef:
    """Where the project's wheel lives in the artifacts repo, and how a job installs it."""

    repo: str  # the artifacts dataset repo
    digest: str  # source hash
    filename: str

    @property
    def path_in_repo(self) -> str:
        return f"{WHEEL_DIR}/{self.digest}/{self.filename}"

    def install_script(self) -> str:
        """The shell run in the job before the entrypoint (HF_TOKEN comes as the job's secret)."""
        wheel = f"{WHEEL_LOCAL}/{self.path_in_repo}"
        q = shlex.quote
        return " && ".join(
            [
                # the image's CUDA torch stays: pip may not swap it for another build
                "python -c \"import torch; print(f'torch=={torch.__version__}')\" > /tmp/torch-constraint.txt",
                f"pip install --no-cache-dir --quiet {q(next((p for p in pins() if p.startswith('huggingface_hub==')), 'huggingface_hub>=1,<3'))}",
                f"hf download {q(self.repo)} {q(self.path_in_repo)} --repo-type dataset --local-dir {WHEEL_LOCAL}",
                f"pip install --no-cache-dir -c /tmp/torch-constraint.txt {q(f'{wheel}[{EXTRAS}]')} {' '.join(q(p) for p in pins())}",
            ]
        )


def wheel_ref(repo: str, root: Path | None = None) -> WheelRef:
    return WheelRef(repo=repo, digest=source_hash(root), filename=wheel_name(root))


def build_wheel(out_dir: Path, root: Path | None = None) -> Path:
    """`pip wheel --no-deps` of a clean copy of the sources (the checkout gets no build/ or egg-info)."""
    root = root or project_root()
    with tempfile.TemporaryDirectory(prefix="trainyard-src-") as tmp:
        for p in _source_files(root):
            dest = Path(tmp) / p.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest)
        # --no-build-isolation: setuptools from this environment, so a submit needs no index
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out_dir), tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise WheelError(f"building the trainyard wheel failed ({' '.join(cmd[:6])} ...):\n{done.stderr[-2000:]}")
    wheels = sorted(out_dir.glob("trainyard-*.whl"))
    if not wheels:
        raise WheelError(f"pip wheel produced no trainyard wheel in {out_dir}")
    return wheels[-1]


def local_wheel(ref: WheelRef) -> Path:
    """The wheel of this source version, built once into the local cache (atomic rename)."""
    cache = Path(os.environ.get("TRAINYARD_CACHE", Path.home() / ".cache" / "trainyard")) / "wheels" / ref.digest
    wheel = cache / ref.filename
    if wheel.is_file():
        return wheel
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{ref.digest}-", dir=cache.parent) as tmp:
        built = build_wheel(Path(tmp) / "out")
        if built.name != ref.filename:
            raise WheelError(f"built {built.name}, expected {ref.filename}")
        staged = Path(tmp) / "done"
        staged.mkdir()
        os.replace(built, staged / ref.filename)
        try:
            os.replace(staged, cache)
        except OSError:  # another launcher built it meanwhile
            if not wheel.is_file():
                raise
    return wheel


def ensure_uploaded(ref: WheelRef, api) -> bool:
    """Upload the wheel unless this source version is already in the repo. True if uploaded."""
    if api.file_exists(ref.repo, ref.path_in_repo, repo_type="dataset"):
        return False
    api.create_repo(repo_id=ref.repo, repo_type="dataset", private=True, exist_ok=True)
    api.upload_file(
        path_or_fileobj=str(local_wheel(ref)), path_in_repo=ref.path_in_repo, repo_id=ref.repo, repo_type="dataset",
        commit_message=f"trainyard wheel {ref.digest}",
    )
    return True
