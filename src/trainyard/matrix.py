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
import functools
import itertools
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trainyard import yaml_load
from trainyard.errors import Problem, SpecError, did_you_mean, suggest_key
from trainyard.spec import AUTHORED, SECRET_PATTERN, RunSpec, field_paths

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
    lines: dict[tuple, int] = field(default_factory=dict, repr=False)  # YAML key path -> line
    warnings: list[Problem] = field(default_factory=list)  # shown by validate / submit, not fatal

    def line_of(self, key: str) -> int | None:
        """The line that sets dotted `key` in base (or, failing that, in a variant / the grid)."""
        return _line_for(key, {}, self.lines) or _line_for(key, {key: None}, self.lines)

    def run(self, name: str) -> RunSpec:
        for r in self.runs:
            if r.name == name:
                return r
        raise KeyError(f"{self.path}: no run named {name!r}{did_you_mean(name, self.run_names)}")

    @property
    def run_names(self) -> list[str]:
        return [r.name for r in self.runs]


# ----------------------------------------------------------------------------- expansion


def expand(doc: dict[str, Any], sets: dict[str, Any] | None = None) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Pure expansion: returns [(run_name, merged_config, overrides_applied)] in a stable order.

    Order: variants in file order, each crossed with the grid in sorted-key order. Names do
    not depend on the order keys were written in. `sets` (``--set key=value``) apply last,
    to every run, and do not change names.
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
            for key, value in (sets or {}).items():
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
    keys = str(dotted).split(".")
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
        return "".join(_label(str(k), value[k]) for k in sorted(value, key=str))
    if isinstance(value, bool):
        return label if value else f"no-{label}"
    if value is None:
        return f"{label}-none"
    return _sanitize(f"{label}{_fmt(value)}")


def _fmt(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # refused by the schema; the name only has to exist until then
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

# Values other tools spell differently (transformers dtypes, optimizer short names).
VALUE_ALIASES = {"float16": "fp16", "half": "fp16", "bfloat16": "bf16", "float32": "fp32", "float": "fp32",
                 "adam": "adamw_torch", "adamw": "adamw_torch", "cosine_annealing": "cosine", "const": "constant"}
DEFAULT_MAX_RUNS = 5000
MAX_RUNS_ENV = "TRAINYARD_MAX_RUNS"


def max_runs_default() -> int:
    value = os.environ.get(MAX_RUNS_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_MAX_RUNS


@functools.cache
def known_keys() -> dict[str, Any]:
    return field_paths()


def load_matrix(path: str | Path, sets: list[str] | None = None, max_runs: int | None = None) -> Matrix:
    """Read, expand and validate a matrix file. Raises SpecError listing every problem.

    `sets`: ``key=value`` overrides (``--set train.lr=1e-4``), applied to every run last.
    `max_runs`: refuse a larger matrix before expanding it (default 5,000, $TRAINYARD_MAX_RUNS).
    """
    path = Path(path)
    fname = str(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "file not found"
        raise SpecError([Problem(fname, f"{what}; pass the path of a matrix YAML, e.g. jobs/rust_sft.yaml")])
    try:
        loaded = yaml_load.load(yaml_load.decode(path.read_bytes()))
    except yaml_load.YamlProblem as exc:
        raise SpecError([Problem(fname, exc.message, line=exc.line)]) from None
    except OSError as exc:
        raise SpecError([Problem(fname, f"cannot read the file: {exc.strerror or exc}")]) from None
    doc, lines = loaded.doc, loaded.lines
    if not isinstance(doc, dict):
        raise SpecError([Problem(fname, "a matrix file must be a mapping with name/base/grid/variants")])

    overrides, problems = parse_sets(sets or [], fname)
    problems += _check_shape(doc, fname, lines)
    if not problems:
        problems += _check_size(doc, fname, lines, max_runs or max_runs_default())
    if problems:
        raise SpecError(problems)

    name = str(doc["name"])
    runs: list[RunSpec] = []
    seen: dict[str, int] = {}
    expanded = expand(doc, overrides)
    for index, (run_name, merged, applied) in enumerate(expanded):
        if run_name in seen:
            problems.append(
                Problem(
                    fname,
                    f"duplicate run name (runs #{seen[run_name] + 1} and #{index + 1}): identical values or names give the "
                    "same name; give the variants distinct `name:` values or remove the repeated value",
                    run=run_name,
                    key="variants",
                    line=lines.get(("variants",)),
                )
            )
            continue
        seen[run_name] = index
        if not isinstance(merged, dict):
            continue
        merged = {**merged, "name": run_name, "matrix": name, "matrix_file": _relative(path)}
        try:
            runs.append(RunSpec.model_validate(merged, context=AUTHORED))
        except ValidationError as exc:
            problems.extend(_problems_from(exc, fname, run_name, applied, lines, overrides))
    dumps = [r.model_dump(mode="json") for r in runs]
    warnings = _identical_runs(runs, dumps, fname)
    baseline = doc.get("baseline")
    if baseline is not None and baseline not in seen:
        problems.append(
            Problem(fname, f"baseline {baseline!r} is not a run of this matrix{did_you_mean(str(baseline), set(seen))}; runs: {sorted(seen)[:20]}",
                    key="baseline", line=lines.get(("baseline",)))
        )
    if problems:
        raise SpecError(problems, total_runs=len(expanded))
    return Matrix(
        name=name,
        path=path,
        runs=runs,
        baseline=baseline,
        description=doc.get("description"),
        varying=varying_keys(runs, dumps),
        lines=lines,
        budget_usd=_budget(doc.get("budget_usd"), fname, lines),
        warnings=warnings,
    )


def _relative(path: Path) -> str:
    """The matrix file as a user would type it from here (the model card's Reproduce line)."""
    try:
        return Path(os.path.relpath(path)).as_posix()
    except ValueError:  # another drive (Windows)
        return str(path)


def _budget(value: Any, fname: str, lines: dict[tuple, int]) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise SpecError([Problem(fname, f"budget_usd must be a positive number of US dollars (got {value!r})", key="budget_usd", line=lines.get(("budget_usd",)))])
    return float(value)


def parse_sets(items: list[str], fname: str) -> tuple[dict[str, Any], list[Problem]]:
    """``--set key=value`` -> {dotted key: YAML-typed value}; unknown keys get a suggestion."""
    known = known_keys()
    out: dict[str, Any] = {}
    problems = []
    for item in items:
        where = f"{fname} (--set {item})"
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            problems.append(Problem(where, "--set needs KEY=VALUE with a dotted key, e.g. --set train.lr=1e-4"))
            continue
        if key in ("name", "matrix") or key not in known:
            problems.append(Problem(where, f"not a key of the schema{suggest_key(key, known, _siblings(key, known), full=True)}", key=key))
            continue
        try:
            value = yaml_load.load_value(text) if text.strip() else None
        except yaml_load.YamlProblem as exc:
            problems.append(Problem(where, f"value is not valid YAML: {exc.message}", key=key))
            continue
        out[key] = value
    return out, problems


def _siblings(dotted: str, known: dict[str, Any]) -> set[str]:
    parent = dotted.rsplit(".", 1)[0] if "." in dotted else ""
    if not parent:
        return {k for k in known if "." not in k}
    return {k.split(".")[-1] for k in known if k.rsplit(".", 1)[0] == parent and "." in k}


def _check_size(doc: dict[str, Any], fname: str, lines: dict[tuple, int], max_runs: int) -> list[Problem]:
    """Runs the matrix would expand to, counted before expanding (a 10^6 grid is refused at once)."""
    grid = doc.get("grid") or {}
    count = max(1, len(doc.get("variants") or []))
    for values in grid.values():
        count *= len(values)
    if count > max_runs:
        sizes = " x ".join([str(len(doc.get("variants") or [1]))] + [str(len(v)) for v in grid.values()])
        return [Problem(fname, f"the matrix expands to {count:,} runs ({count} = {sizes}), over the limit of {max_runs:,}; "
                        f"shrink the grid or raise the limit (--max-runs N or ${MAX_RUNS_ENV})", key="grid", line=lines.get(("grid",)))]
    return []


def _identical_runs(runs: list[RunSpec], dumps: list[dict[str, Any]], fname: str) -> list[Problem]:
    """Two runs with the same resolved settings would train the same model twice: a warning
    (replicates are sometimes meant), where a repeated grid value is an error."""
    first: dict[str, str] = {}
    problems = []
    for r, d in zip(runs, dumps, strict=True):
        blob = json.dumps({k: v for k, v in d.items() if k != "name"}, sort_keys=True)
        if blob in first:
            problems.append(Problem(fname, f"runs {first[blob]!r} and {r.name!r} have identical settings (a duplicate run: "
                                    "same data, seed and hyperparameters); vary train.seed for replicates", run=r.name))
        else:
            first[blob] = r.name
    return problems


def _repeated(values: list[Any]) -> str:
    """Values equal to an earlier one (1.0e4 == 10000; 1e-5 == 0.00001), described. Linear:
    numbers hash by value (hash(1.0) == hash(1)); lists / mappings by their JSON."""
    first: dict[Any, Any] = {}
    out = []
    for v in values:
        key = ("bool", v) if isinstance(v, bool) else v
        try:
            hash(key)
        except TypeError:
            key = ("json", json.dumps(v, sort_keys=True, default=str))
        if key in first:
            w = first[key]
            out.append(f"{w!r} and {v!r} are the same" if repr(v) != repr(w) else f"{v!r} twice")
            if len(out) >= 3:
                break
        else:
            first[key] = v
    return "; ".join(out)


def _walk_strings(node: Any, path: str):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk_strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk_strings(v, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def _check_shape(doc: dict[str, Any], fname: str, lines: dict[tuple, int]) -> list[Problem]:
    problems = []
    known = known_keys()
    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            skey = str(key)
            if skey in {k for k in known if "." not in k} or skey.split(".")[0] in known:
                hint = f"; RunSpec sections go under `base:` (base: {{{skey}: ...}}) or in a variant"
            else:
                hint = suggest_key(skey, TOP_LEVEL_KEYS | set(known), TOP_LEVEL_KEYS)
            problems.append(Problem(fname, f"unknown top-level key{hint}; allowed: {sorted(TOP_LEVEL_KEYS)}", key=skey, line=lines.get((key,))))
    for where, value in _walk_strings(doc, ""):
        if SECRET_PATTERN.search(value):
            problems.append(Problem(fname, "this value looks like a token or API key; secrets never go in a matrix file. "
                                    "Export it (HF_TOKEN, OPENAI_API_KEY, ...) and name the variable instead (e.g. eval.judge.api_key_env)", key=where))
    if "name" not in doc:
        problems.append(Problem(fname, "missing `name:` (used for runs/<name>/ and the Trackio project)", key="name"))
    elif isinstance(doc["name"], bool) or not isinstance(doc["name"], str | int) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(doc["name"])):
        problems.append(Problem(fname, "name may only use letters, digits, '_', '.', '-' (and start with a letter or digit)", key="name", line=lines.get(("name",))))
    if not isinstance(doc.get("base", {}), dict):
        problems.append(Problem(fname, "`base:` must be a mapping of RunSpec sections", key="base", line=lines.get(("base",))))
    for key in ("baseline", "description"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            problems.append(Problem(fname, f"`{key}:` must be a string", key=key, line=lines.get((key,))))
    grid = doc.get("grid") or {}
    if not isinstance(grid, dict):
        problems.append(Problem(fname, "`grid:` must map dotted keys to lists, e.g. train.lr: [2e-5, 5e-6]", key="grid", line=lines.get(("grid",))))
        grid = {}
    for key, values in grid.items():
        line = lines.get(("grid", key))
        if not isinstance(key, str) or key not in known or key in ("name", "matrix"):
            problems.append(Problem(fname, f"grid key is not in the schema{suggest_key(str(key), known, _siblings(str(key), known), full=True)}", key=f"grid.{key}", line=line))
        elif not isinstance(values, list):
            problems.append(Problem(fname, f"grid values must be a list, got {type(values).__name__}; write [{values}]", key=f"grid.{key}", line=line))
        elif not values:
            problems.append(Problem(fname, "empty grid list: it would expand to zero runs; give at least one value or remove the key", key=f"grid.{key}", line=line))
        else:
            dupes = _repeated(values)
            if dupes:
                problems.append(Problem(fname, f"grid list has duplicate values ({dupes}): the same run twice, identical settings; "
                                        "remove the repeat", key=f"grid.{key}", line=line))
    variants = doc.get("variants") or []
    if not isinstance(variants, list):
        problems.append(Problem(fname, "`variants:` must be a list of override mappings", key="variants", line=lines.get(("variants",))))
        return problems
    for i, variant in enumerate(variants):
        if not isinstance(variant, dict):
            problems.append(Problem(fname, "each variant must be a mapping (name: ..., dotted.key: value)", key=f"variants[{i}]", line=lines.get(("variants", i)) or lines.get(("variants",))))
            continue
        if "name" in variant and not isinstance(variant["name"], str | int | float):
            problems.append(Problem(fname, "a variant's name must be a string", key=f"variants[{i}].name", line=lines.get(("variants", i, "name"))))
        for key in variant:
            if key == "name":
                continue
            root = str(key).split(".")[0]
            if str(key) not in known and root not in known or key == "matrix":
                problems.append(Problem(fname, f"variant key is not in the schema{suggest_key(str(key), known, _siblings(str(key), known), full=True)}", run=str(variant.get("name")) if variant.get("name") is not None else None, key=str(key), line=lines.get(("variants", i, key))))
    return problems


def _dotted(loc: tuple) -> str:
    """('eval', 'datasets', 0, 'format') -> 'eval.datasets[0].format'."""
    out = ""
    for part in loc:
        if isinstance(part, int) or (isinstance(part, str) and part.isdigit()):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _problems_from(exc: ValidationError, fname: str, run: str, applied: dict[str, Any], lines: dict[tuple, int],
                   sets: dict[str, Any] | None = None) -> list[Problem]:
    known = known_keys()
    problems = []
    for err in exc.errors():
        # union members (e.g. "list[str]" / "literal") add a loc part of their own
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p in ("literal", "function-after", "function-before"))))
        names = [str(p) for p in loc if not isinstance(p, int) and not (isinstance(p, str) and p.isdigit())]
        key = _dotted(loc)
        schema_key = ".".join(names)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            parent = ".".join(names[:-1])
            siblings = {p.split(".")[-1] for p in known if p.rsplit(".", 1)[0] == parent and "." in p} if parent else {p for p in known if "." not in p}
            dotted_override = schema_key in applied or (sets is not None and schema_key in sets)
            msg = f"unknown key{suggest_key(schema_key, known, siblings, full=dotted_override)}; allowed here: {sorted(siblings)}"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "literal_error" and isinstance(err.get("input"), str):
            options = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
            typed = VALUE_ALIASES.get(err["input"].lower(), err["input"].lower())
            prefixed = [o for o in options if o.startswith(typed)]
            hint = f" (did you mean {prefixed[0]!r}?)" if prefixed else did_you_mean(err["input"], set(options))
            shown = ", ".join(options) if len(options) <= 12 else ", ".join(options[:12]) + f", ... ({len(options)} in all; see docs/config.md)"
            msg = f"unknown value {err['input']!r}{hint}; choose one of {shown}"
        elif "input" in err and err["type"] not in ("value_error", "assertion_error", "rule", "bool_for_number"):
            shown = repr(err["input"])
            msg = f"{msg} (got {shown if len(shown) <= 80 else shown[:77] + '...'})"
        msg = msg.replace("Value error, ", "")
        line = _line_for(schema_key, applied, lines)
        where = fname
        if sets and schema_key in sets:
            where, line = f"{fname} (--set {schema_key})", None
        problems.append(Problem(where, msg, run=run, key=key or None, line=line))
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


def varying_keys(runs: list[RunSpec], dumps: list[dict[str, Any]] | None = None) -> list[str]:
    """Dotted keys whose value differs between runs (the columns of a results table)."""
    if len(runs) < 2:
        return []
    dumps = dumps if dumps is not None else [r.model_dump(mode="json") for r in runs]
    flats = [flatten({k: v for k, v in d.items() if k != "name"}) for d in dumps]
    keys = sorted(set().union(*flats))
    return [k for k in keys if len({_hashable(f.get(k)) for f in flats}) > 1]


def _hashable(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return repr(v)
