"""Which checkpoint-N folders are complete, and which one a run resumes from.

The Trainer saves a checkpoint in place (weights, optimizer, scheduler, RNG state) and writes
`trainer_state.json` last: a folder without it is a save that was cut short. A folder with
it can still be damaged (a file truncated by a full disk or a crash before the data reached
the disk), so each weights / state file is checked too: safetensors headers against the
file size, torch zip archives for their central directory. Nothing here loads a tensor or
imports torch: the launcher calls it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

CHECKPOINT_COMPLETE = "trainer_state.json"  # the Trainer writes it last into a checkpoint folder
_CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors", "adapter_model.bin", "pytorch_model.bin")
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since 1.6
# what only a resume needs: never part of final/
_TRAINING_STATE = re.compile(r"^(optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state(_\d+)?\.pth|trainer_state\.json)$")


def checkpoint_step(path: Path) -> int | None:
    m = _CHECKPOINT_DIR.match(Path(path).name)
    return int(m.group(1)) if m else None


def checkpoint_folders(checkpoints_dir: Path) -> list[Path]:
    """checkpoint-N folders, oldest (lowest N) first."""
    d = Path(checkpoints_dir)
    if not d.is_dir():
        return []
    found = [(step, p) for p in d.iterdir() if p.is_dir() and (step := checkpoint_step(p)) is not None]
    return [p for _, p in sorted(found)]


def checkpoint_problem(path: Path) -> str | None:
    """Why this checkpoint folder cannot be resumed from, or None when it is complete."""
    path = Path(path)
    state_file = path / CHECKPOINT_COMPLETE
    if not state_file.is_file():
        return f"no {CHECKPOINT_COMPLETE} (the save was cut short)"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError) as err:
        return f"{CHECKPOINT_COMPLETE} is unreadable ({err})"
    step = checkpoint_step(path)
    if not isinstance(state, dict) or (step is not None and state.get("global_step") != step):
        return f"{CHECKPOINT_COMPLETE} does not describe step {step}"
    files = sorted(p for p in path.iterdir() if p.is_file())
    names = {p.name for p in files}
    if not names & set(WEIGHT_FILES) and not any(n.endswith(".index.json") for n in names):
        return "no model or adapter weights"
    for p in files:
        problem = _file_problem(p, path)
        if problem:
            return f"{p.name} {problem}"
    return None


def _file_problem(p: Path, folder: Path) -> str | None:
    if p.suffix == ".safetensors":
        return safetensors_problem(p)
    if p.suffix in TORCH_SUFFIXES:
        with p.open("rb") as f:
            if f.read(4) != _ZIP_MAGIC:
                return None  # not a zip archive (legacy torch format): left to torch
        try:
            with zipfile.ZipFile(p):
                return None
        except (zipfile.BadZipFile, OSError):
            return "is truncated or corrupt (no zip central directory)"
    if p.name.endswith(".index.json"):
        try:
            shards = set(json.loads(p.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            return "is unreadable"
        missing = sorted(s for s in shards if not (folder / s).is_file())
        return f"names missing shards {missing}" if missing else None
    return None


def safetensors_problem(p: Path) -> str | None:
    """Header length, JSON header and tensor offsets must add up to the file size."""
    size = p.stat().st_size
    try:
        with p.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"is truncated ({size} bytes)"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                return f"is truncated (header of {n} bytes, file of {size})"
            header = json.loads(f.read(n))
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
        return f"has an unreadable header ({err})"
    if 8 + n + end != size:
        return f"is truncated ({size} of {8 + n + end} bytes)"
    return None


@dataclass
class ResumePoint:
    """The newest complete checkpoint (None: train from the start) and the newer ones skipped."""

    path: Path | None = None
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (folder, why), newest first

    def messages(self) -> list[str]:
        target = self.path.name if self.path else "the beginning"
        return [f"skipped incomplete checkpoint {p.name} ({why}); resuming from {target}" for p, why in self.skipped]


def resume_point(checkpoints_dir: Path) -> ResumePoint:
    point = ResumePoint()
    for folder in reversed(checkpoint_folders(checkpoints_dir)):
        problem = checkpoint_problem(folder)
        if problem is None:
            point.path = folder
            break
        point.skipped.append((folder, problem))
    return point


def last_complete_checkpoint(checkpoints_dir: Path) -> str | None:
    path = resume_point(checkpoints_dir).path
    return str(path) if path else None


def final_from_checkpoint(checkpoint: Path, final: Path) -> bool:
    """final/ made from the checkpoint the Trainer saved at the last step (the same weights):
    weight files hard-linked, so they are neither written a second time nor stored twice;
    the small files copied; the training state (optimizer, scheduler, RNG, trainer_state)
    left out. Built in a temporary folder and renamed into place. False, with nothing
    changed, where the checkpoint has no weight files of its own or links are not possible
    (another file system): the caller then saves the model itself."""
    checkpoint, final = Path(checkpoint), Path(final)
    if checkpoint_problem(checkpoint) is not None:
        return False
    files = [p for p in checkpoint.iterdir() if p.is_file() and not _TRAINING_STATE.match(p.name)]
    if not any(p.name in WEIGHT_FILES or p.suffix == ".safetensors" for p in files):
        return False  # e.g. an FSDP checkpoint (sharded folders): its final/ is gathered by the trainer
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        for p in files:
            if p.suffix in (".safetensors", ".bin"):  # written once by torch / safetensors, never in place
                os.link(p, tmp / p.name)
            else:
                shutil.copy2(p, tmp / p.name)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return True
