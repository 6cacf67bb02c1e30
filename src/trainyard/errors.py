"""User-facing errors: each names the file, the run and the key, and says how to fix it."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field


@dataclass
class Problem:
    file: str
    message: str
    run: str | None = None
    key: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        parts = [where]
        if self.run:
            parts.append(f"run {self.run!r}")
        if self.key:
            parts.append(f"key {self.key!r}")
        return f"{' | '.join(parts)}: {self.message}"


@dataclass
class SpecError(Exception):
    """One or more problems found while loading / expanding / validating a matrix."""

    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} found; nothing was run or submitted:"
        return "\n".join([head] + [f"  - {p}" for p in self.problems])


class DataFormatError(ValueError):
    """A dataset lacks what its format needs (found when the data is first loaded)."""


def did_you_mean(word: str, candidates: list[str] | set[str]) -> str:
    close = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class BackendError(RuntimeError):
    """A backend cannot take a run (bad flavor, no token, API refusal); the message says the fix."""
