"""Matrix YAML -> base x variants x grid -> [RunSpec] with stable, readable run names.

A matrix file looks like::

    name: rust_sft
    baseline: 5k                 # optional: the run others are compared with
    base: {recipe: sft, model: {name: Qwen/Qwen3-0.6B}, ...}
    variants:                    # optional: named override dicts (dotted or nested keys)
      - {name: 5k, data.limit: 5000}
    grid:                        # optional: cartesian product, crossed with the variants
      train.lr: [2e-5, 5e-6]

Expansion (:func:`expand`) is a pure function; validation turns every problem of every run
into a :class:`~trainyard.errors.Problem` naming file, run, key and (where known) line, so
nothing is submitted until the whole matrix is clean.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from trainyard.errors import Problem, SpecError, did_you_mean
from trainyard.spec import RunSpec, field_paths

TOP_LEVEL_KEYS = {"name", "description", "baseline", "base", "grid", "variants", "budget_usd"}
# Short labels for keys that often vary, so names read like the studies' own: lr2e-5_r32.
KEY_LABELS = {
    "lr": "lr",
    "r": "r",
    "alpha": "a",
    "dropout": "do",
    "epochs": "ep",
    "max_steps": "steps",
    "limit": "n",
    "max_length": "len",
    "batch_size": "bs",
    "grad_accum": "ga",
    "warmup_ratio": "wu",
    "scheduler": "",
    "beta": "beta",
    "temperature": "t",
    "top_k": "k",
    "seed": "seed",
}


@dataclass
class Matrix:
    name: str
    path: Path
    runs: list[RunSpec]
    baseline: str | None = None
    description: str | None = None
    varying: list[str] = field(default_factory=list)
    budget_usd: float | None = None  # remote backends: cap on the whole matrix's worst-case cost

    def run(self, name: str) -> RunSpec:
        for r in self.runs:
            if r.name == name:
                return r
        raise KeyError(f"{self.path}: no run named {name!r}{did_you_mean(name, self.run_names)}")

    @property
    def run_names(self) -> list[str]:
        return [r.name for r in self.runs]


# ----------------------------------------------------------------------------- expansion


def expand(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Pure expansion: returns [(run_name, merged_config, overrides_applied)] in a stable order.

    Order: variants in file order, each crossed with the grid in sorted-key order. Names do
    not depend on the order keys were written in.
    """
    base = doc.get("base") or {}
    grid = doc.get("grid") or {}
    variants = doc.get("variants") or [{}]
    grid_keys = sorted(grid, key=_name_order)
    combos = list(itertools.product(*(grid[k] for k in grid_keys))) if grid_keys else [()]

    out = []
    for variant in variants:
        variant = dict(variant)
        explicit = variant.pop("name", None)
        for combo in combos:
            overrides = {**variant, **dict(zip(grid_keys, combo, strict=True))}
            merged = copy.deepcopy(base)
            for key, value in variant.items():
                _set_dotted(merged, key, copy.deepcopy(value))
            for key, value in zip(grid_keys, combo, strict=True):
                _set_dotted(merged, key, copy.deepcopy(value))
            grid_part = "_".join(_label(k, v) for k, v in zip(grid_keys, combo, strict=True))
            if explicit is not None:
                name = f"{explicit}_{grid_part}" if grid_part else str(explicit)
            elif variant or grid_part:
                var_part = "_".join(_label(k, variant[k]) for k in sorted(variant, key=_name_order))
                name = "_".join(p for p in (var_part, grid_part) if p)
            else:
                name = "base"
            out.append((name, merged, overrides))
    return out


def _name_order(key: str) -> tuple[str, str]:
    """Name parts sort by their label (lr before r), then by key: independent of file order."""
    leaf = key.split(".")[-1]
    return (KEY_LABELS.get(leaf, leaf), key)


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    """Set a.b.c = value, merging dict values into existing sections rather than replacing."""
    keys = dotted.split(".")
    node = target
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    last = keys[-1]
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        for k, v in value.items():
            _set_dotted(node[last], k, v)
    else:
        node[last] = value


def _label(key: str, value: Any) -> str:
    leaf = key.split(".")[-1]
    label = KEY_LABELS.get(leaf, leaf)
    if isinstance(value, dict):
        return "".join(_label(k, value[k]) for k in sorted(value))
    if isinstance(value, bool):
        return label if value else f"no-{label}"
    if value is None:
        return f"{label}-none"
    return _sanitize(f"{label}{_fmt(value)}")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            mant, exp = f"{value:e}".split("e")
            mant = mant.rstrip("0").rstrip(".")
            return f"{mant}e{int(exp)}"
        return f"{value:g}"
    if isinstance(value, str) and "/" in value:
        return value.rstrip("/").split("/")[-1]
    if isinstance(value, list):
        return "-".join(_fmt(v) for v in value)
    return str(value)


def _sanitize(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "-", text).strip("-") or "x"


# ----------------------------------------------------------------------------- loading


def load_matrix(path: str | Path) -> Matrix:
    """Read, expand and validate a matrix file. Raises SpecError listing every problem."""
    path = Path(path)
    fname = str(path)
    if not path.is_file():
        raise SpecError([Problem(fname, "file not found; pass the path of a matrix YAML, e.g. jobs/rust_sft.yaml")])
    text = path.read_text()
    try:
        doc = yaml.safe_load(text)
        lines = _key_lines(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        msg = getattr(exc, "problem", None) or str(exc)
        raise SpecError([Problem(fname, f"YAML syntax error: {msg}", line=line)]) from None
    if not isinstance(doc, dict):
        raise SpecError([Problem(fname, "a matrix file must be a mapping with name/base/grid/variants")])

    problems = _check_shape(doc, fname, lines)
    if problems:
        raise SpecError(problems)

    name = str(doc["name"])
    runs: list[RunSpec] = []
    seen: dict[str, int] = {}
    for index, (run_name, merged, overrides) in enumerate(expand(doc)):
        if run_name in seen:
            problems.append(
                Problem(
                    fname,
                    f"duplicate run name (runs #{seen[run_name] + 1} and #{index + 1}); give the "
                    "variants distinct `name:` values",
                    run=run_name,
                    key="variants",
                    line=lines.get(("variants",)),
                )
            )
            continue
        seen[run_name] = index
        merged = {**merged, "name": run_name, "matrix": name, "matrix_file": _relative(path)}
        try:
            runs.append(RunSpec.model_validate(merged))
        except ValidationError as exc:
            problems.extend(_problems_from(exc, fname, run_name, overrides, lines))
    baseline = doc.get("baseline")
    if baseline is not None and baseline not in seen:
        problems.append(
            Problem(fname, f"baseline {baseline!r} is not a run of this matrix{did_you_mean(str(baseline), set(seen))}; runs: {sorted(seen)}",
                    key="baseline", line=lines.get(("baseline",)))
        )
    if problems:
        raise SpecError(problems)
    return Matrix(
        name=name,
        path=path,
        runs=runs,
        baseline=baseline,
        description=doc.get("description"),
        varying=varying_keys(runs),
        budget_usd=_budget(doc.get("budget_usd"), fname, lines),
    )


def _relative(path: Path) -> str:
    """The matrix file as a user would type it from here (the model card's Reproduce line)."""
    import os

    try:
        return Path(os.path.relpath(path)).as_posix()
    except ValueError:  # another drive (Windows)
        return str(path)


def _budget(value: Any, fname: str, lines: dict[tuple, int]) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise SpecError([Problem(fname, f"budget_usd must be a positive number of US dollars (got {value!r})", key="budget_usd", line=lines.get(("budget_usd",)))])
    return float(value)


def _check_shape(doc: dict[str, Any], fname: str, lines: dict[tuple, int]) -> list[Problem]:
    problems = []
    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            problems.append(Problem(fname, f"unknown top-level key{did_you_mean(str(key), TOP_LEVEL_KEYS)}; allowed: {sorted(TOP_LEVEL_KEYS)}", key=str(key), line=lines.get((key,))))
    if "name" not in doc:
        problems.append(Problem(fname, "missing `name:` (used for runs/<name>/ and the Trackio project)", key="name"))
    elif not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(doc["name"])):
        problems.append(Problem(fname, "name may only use letters, digits, '_', '.', '-'", key="name", line=lines.get(("name",))))
    if not isinstance(doc.get("base", {}), dict):
        problems.append(Problem(fname, "`base:` must be a mapping of RunSpec sections", key="base", line=lines.get(("base",))))
    known = field_paths()
    grid = doc.get("grid") or {}
    if not isinstance(grid, dict):
        problems.append(Problem(fname, "`grid:` must map dotted keys to lists, e.g. train.lr: [2e-5, 5e-6]", key="grid", line=lines.get(("grid",))))
        grid = {}
    for key, values in grid.items():
        line = lines.get(("grid", key))
        if key not in known or key in ("name", "matrix"):
            problems.append(Problem(fname, f"grid key is not in the schema{did_you_mean(str(key), set(known))}", key=f"grid.{key}", line=line))
        elif not isinstance(values, list):
            problems.append(Problem(fname, f"grid values must be a list, got {type(values).__name__}; write [{values}]", key=f"grid.{key}", line=line))
        elif not values:
            problems.append(Problem(fname, "empty grid list: it would expand to zero runs; give at least one value or remove the key", key=f"grid.{key}", line=line))
    variants = doc.get("variants") or []
    if not isinstance(variants, list):
        problems.append(Problem(fname, "`variants:` must be a list of override mappings", key="variants", line=lines.get(("variants",))))
        return problems
    for i, variant in enumerate(variants):
        if not isinstance(variant, dict):
            problems.append(Problem(fname, "each variant must be a mapping (name: ..., dotted.key: value)", key=f"variants[{i}]", line=lines.get(("variants",))))
            continue
        for key in variant:
            if key == "name":
                continue
            root = str(key).split(".")[0]
            if str(key) not in known and root not in known:
                problems.append(Problem(fname, f"variant key is not in the schema{did_you_mean(str(key), set(known))}", run=variant.get("name"), key=str(key), line=lines.get(("variants", i, key))))
    return problems


def _problems_from(exc: ValidationError, fname: str, run: str, overrides: dict[str, Any], lines: dict[tuple, int]) -> list[Problem]:
    known = field_paths()
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
        key = ".".join(loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            parent = ".".join(loc[:-1])
            siblings = {p.split(".")[-1] for p in known if p.rsplit(".", 1)[0] == parent and "." in p} if parent else {p for p in known if "." not in p}
            msg = f"unknown key{did_you_mean(loc[-1], siblings)}; allowed here: {sorted(siblings)}"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif "input" in err and err["type"] not in ("value_error", "assertion_error"):
            msg = f"{msg} (got {err['input']!r})"
        msg = msg.replace("Value error, ", "")
        problems.append(Problem(fname, msg, run=run, key=key or None, line=_line_for(key, overrides, lines)))
    return problems


def _line_for(key: str, overrides: dict[str, Any], lines: dict[tuple, int]) -> int | None:
    """Best guess of the YAML line that set `key`: an override if one set it, else base."""
    if key in overrides:
        for path, line in lines.items():
            if path and path[-1] == key and path[0] in ("grid", "variants"):
                return line
    parts = tuple(key.split(".")) if key else ()
    while parts:
        if ("base", *parts) in lines:
            return lines[("base", *parts)]
        parts = parts[:-1]
    return None


def _key_lines(text: str) -> dict[tuple, int]:
    """Map key paths (('base','train','lr'), ('variants', 0, 'data.limit')) to 1-based lines."""
    out: dict[tuple, int] = {}

    def walk(node: yaml.Node, path: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value
                out[(*path, key)] = k.start_mark.line + 1
                walk(v, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, ())
    return out


# ----------------------------------------------------------------------------- analysis


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def varying_keys(runs: list[RunSpec]) -> list[str]:
    """Dotted keys whose value differs between runs (the columns of a results table)."""
    if len(runs) < 2:
        return []
    flats = [flatten(r.model_dump(mode="json", exclude={"name"})) for r in runs]
    keys = sorted(set().union(*flats))
    return [k for k in keys if len({_hashable(f.get(k)) for f in flats}) > 1]


def _hashable(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return repr(v)
