"""Row formats: how a dataset row becomes a training example.

Each format names the columns it needs, what it produces (the dataset shape its trainer
expects) and the bundled fixture `--smoke` swaps in. A converter returns ``None`` or raises
:class:`SkipRow` to skip a row; skips are counted and reported, never a crash mid-run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Produces = Literal["prompt_completion", "messages", "text", "preference"]


class SkipRow(Exception):
    """A malformed row: skipped and counted under its reason."""


@dataclass(frozen=True)
class Format:
    name: str
    required: tuple[str, ...]
    produces: Produces
    convert: Callable[[dict[str, Any], str], dict[str, Any] | None]
    fixture: str
    description: str = ""
    # Nested raw formats (TAT-QA: contexts -> questions) cannot be read row by row: this hook,
    # loader(source, split) -> rows, replaces the generic Hub/file reading; `convert` then
    # applies to the rows it returns.
    loader: Callable[[str, str], list[dict[str, Any]]] | None = None

    def required_columns(self, text_field: str) -> tuple[str, ...]:
        return tuple(text_field if c == "{text_field}" else c for c in self.required)


FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> Format:
    from trainyard.errors import did_you_mean

    if name not in FORMATS:
        raise KeyError(f"unknown data format {name!r}{did_you_mean(name, set(FORMATS))}")
    return FORMATS[name]


# Registration happens on import of each module below (keep this list sorted).
from trainyard.data.formats import basic, preference, strandset  # noqa: E402,F401
