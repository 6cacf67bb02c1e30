"""Hardened YAML reading for matrix files and `--set` values.

PyYAML's safe loader is safe against code execution, not against mistakes and hostile
shapes. This loader adds, in one pass over the document:

* bytes must be UTF-8 (the error gives the byte offset and line);
* nesting deeper than MAX_DEPTH is refused (PyYAML's composer recurses: 20,000 levels
  would raise RecursionError);
* aliases may not expand to more than MAX_NODES values in total (a "billion laughs"
  anchor bomb is refused in milliseconds), and the key-line walker never re-enters a node
  it has seen, so an alias is walked once;
* a key written twice in one mapping is an error naming both lines (PyYAML keeps the last);
* `1.0e4` / `1e-5` are floats (YAML 1.1 reads them as strings, so `[1.0e4, 10000]` used to
  give two identical runs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

MAX_BYTES = 2**20  # shipped matrices are a few KB
MAX_DEPTH = 64
MAX_NODES = 200_000  # values after alias expansion
MAX_WRITTEN_NODES = 50_000  # values written in the file (bounds the parse time)

# YAML 1.2 style floats PyYAML 1.1 misses: an exponent without a dot, or without a sign.
_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class YamlProblem(Exception):
    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.line = line


class _Loader(yaml.SafeLoader):
    """SafeLoader + depth/size bounds + duplicate keys + YAML 1.2 floats."""

    yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        self._depth += 1
        self._nodes += 1
        try:
            if self._nodes > MAX_WRITTEN_NODES:
                mark = self.peek_event().start_mark
                raise YamlProblem(f"more than {MAX_WRITTEN_NODES:,} values in one file; a matrix needs a few hundred (use a grid)", mark.line + 1)
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise YamlProblem(f"nesting deeper than {MAX_DEPTH} levels; a matrix file needs a handful", mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):  # noqa: ANN001
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise YamlProblem("a mapping key must be a plain value, not a list or mapping", key_node.start_mark.line + 1) from None
            line = key_node.start_mark.line + 1
            if key in seen:
                raise YamlProblem(f"duplicate key {key!r} (lines {seen[key]} and {line}); YAML would silently keep the last one. Remove one", line)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


@dataclass
class Loaded:
    doc: Any
    lines: dict[tuple, int]  # key path -> 1-based line, e.g. ('base', 'train', 'lr') -> 12


def decode(data: bytes) -> str:
    if len(data) > MAX_BYTES:
        raise YamlProblem(f"file is {len(data):,} bytes; a matrix file is at most {MAX_BYTES:,}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise YamlProblem(
            f"not UTF-8: byte 0x{data[exc.start]:02x} at byte offset {exc.start} (line {line}); save the file as UTF-8",
            line,
        ) from None
    if "\x00" in text:
        raise YamlProblem(f"NUL character at offset {text.index(chr(0))}: this is not a text file")
    return text


def load(text: str) -> Loaded:
    """Parse one YAML document with the bounds above. Raises YamlProblem."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return Loaded(None, {})
        _check_size(root)
        lines = _key_lines(root)
        doc = loader.construct_document(root)
    except YamlProblem:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        msg = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        raise YamlProblem(f"YAML syntax error: {msg}" + (f" ({context})" if context else ""), mark.line + 1 if mark else None) from None
    except RecursionError:
        raise YamlProblem(f"nesting deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()
    return Loaded(doc, lines)


def load_value(text: str) -> Any:
    """A `--set key=VALUE` value, typed as YAML would type it (1e-4 float, true bool, [a, b] list)."""
    return load(text).doc


def _check_size(root: yaml.Node) -> None:
    """Values after alias expansion, counted with memoization (shared nodes cost once to
    count), so an anchor bomb is measured without being expanded."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise YamlProblem("an alias refers to the mapping or list that contains it (a recursive structure)", node.start_mark.line + 1)
        active.add(key)
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(v) for v in node.value)
        else:
            total = 1
        active.discard(key)
        sizes[key] = total
        if total > MAX_NODES:
            raise YamlProblem(
                f"aliases (*name) expand to more than {MAX_NODES:,} values: refused (an anchor bomb?). "
                "Use anchors only for small shared sections",
                node.start_mark.line + 1,
            )
        return total

    size(root)


def _key_lines(root: yaml.Node) -> dict[tuple, int]:
    """Key paths -> lines. A node reached again through an alias is not walked again."""
    out: dict[tuple, int] = {}
    seen: set[int] = set()

    def walk(node: yaml.Node, path: tuple) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode):
                    out.setdefault((*path, k.value), k.start_mark.line + 1)
                    walk(v, (*path, k.value))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    walk(root, ())
    return out
