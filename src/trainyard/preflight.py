"""Pre-flight: what can be known without training, checked before anything is submitted.

`validate` and every submit run it on the resolved runs:

* local data files are opened and sampled with the run's format: the file is UTF-8 and
  parses (the error names the line), rows are objects, it is not empty, the format's
  columns are there and its converter accepts the first rows;
* model configs are read (``config.json`` of a local directory with ``json``; a Hub model's
  from the HF cache, or downloaded when online; skipped with a note otherwise):
  ``train.max_length`` within the model's positions, every ``lora.target_modules`` name
  present in that architecture, a model path that is a file;
* precision / quantization / attention kernels against the device the backend gives:
  no CUDA on this machine refuses fp16/bf16, 4/8-bit and flash attention before a local
  launch; a CPU flavor (hf-jobs) or ``gpus: 0`` (k8s) does the same remotely.

Never imports torch or transformers. Results are cached per file / model, so a 1,000-run
matrix costs one read of each.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import io
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from trainyard.errors import Problem
from trainyard.spec import RunSpec, is_local_path

SAMPLE_ROWS = 64
HUB_TIMEOUT_S = 3
SCAN_BYTES = 64 * 2**20  # a JSON-lines file is parsed whole up to this size (one bad line anywhere)

# Module names of each architecture family that LoRA can target (peft matches name suffixes).
_LLAMA = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_EMBED = ("embed_tokens", "lm_head")
ARCH_MODULES: dict[str, tuple[str, ...]] = {
    **{t: _LLAMA + _EMBED for t in (
        "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
        "gemma3_text", "olmo", "olmo2", "smollm3", "granite", "cohere", "deepseek_v2", "stablelm", "starcoder2_llama",
    )},
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj") + _EMBED,
    "phi": ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2", "embed_tokens", "lm_head"),
    "gpt2": ("c_attn", "c_proj", "c_fc", "wte", "lm_head"),
    "gpt_neox": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h", "embed_in", "embed_out"),
    "opt": ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "embed_tokens", "lm_head"),
    "falcon": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h", "word_embeddings", "lm_head"),
    "bloom": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h", "word_embeddings", "lm_head"),
    "starcoder2": ("q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj", "embed_tokens", "lm_head"),
}
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
GPU_ONLY_OPTIMIZER_MARKERS = ("8bit", "bnb", "paged_", "4bit")


@dataclass
class Report:
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- data files


@functools.lru_cache(maxsize=256)
def _read_rows(path: str, mtime: float, size: int) -> tuple[list[dict] | None, list[str], str | None]:
    """-> (first rows, columns seen, error). Only the error or the sample is returned."""
    p = Path(path)
    suffix = p.suffix.lower()
    try:
        if suffix == ".jsonl":
            return _jsonl_rows(p)
        if suffix == ".json":
            return _json_rows(p)
        if suffix == ".csv":
            return _csv_rows(p)
        if suffix == ".txt":
            return _txt_rows(p)
        if suffix == ".parquet":
            return _parquet_rows(p)
    except OSError as exc:
        return None, [], f"cannot read {path}: {exc.strerror or exc}"
    return None, [], None  # .arrow and others: not sampled


ROW_COUNTS: dict[str, int] = {}  # path -> rows in the whole file, where it was read whole


def row_count(source: str) -> int | None:
    """Rows of a local file (or bundled fixture) the pre-flight has read whole, else None."""
    if source.startswith("fixture:"):
        from trainyard.fixtures import fixture_path

        try:
            path = fixture_path(source.split(":", 1)[1])
        except FileNotFoundError:
            return None
    else:
        path = _data_file(source)
    if path is None:
        return None
    stat = path.stat()
    _read_rows(str(path), stat.st_mtime, stat.st_size)
    return ROW_COUNTS.get(str(path))


def _columns(rows: list[dict]) -> list[str]:
    return sorted({k for r in rows for k in r})


def _jsonl_rows(p: Path, data: bytes | None = None):
    rows: list[dict] = []
    if data is None:
        with open(p, "rb") as fh:
            data = fh.read(SCAN_BYTES + 1)
    lines = data[:SCAN_BYTES].removeprefix(b"\xef\xbb\xbf").split(b"\n")
    if len(data) > SCAN_BYTES:
        lines = lines[:-1]  # the last line may be cut by the scan budget
    offset = 0
    for number, raw in enumerate(lines, start=1):
        start, offset = offset, offset + len(raw) + 1
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, [], f"{p}: line {number} is not UTF-8 (byte 0x{raw[exc.start]:02x} at byte offset {start + exc.start}); save the file as UTF-8"
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            return None, [], f"{p}: line {number} is not valid JSON ({exc.msg} at column {exc.colno}); each line must be one JSON object"
        if not isinstance(row, dict):
            return None, [], f"{p}: line {number} is a {type(row).__name__}, not an object; each line must be one JSON object like {{\"text\": ...}}"
        if len(rows) < SAMPLE_ROWS:
            rows.append(row)
    if not rows:
        return None, [], f"{p}: the file is empty (no JSON rows)"
    if len(data) <= SCAN_BYTES:
        ROW_COUNTS[str(p)] = sum(1 for line in lines if line.strip())
    return rows, _columns(rows), None


def _json_rows(p: Path):
    data = p.read_bytes()
    if len(data) > SCAN_BYTES:
        return None, [], None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, [], f"{p}: not UTF-8 (byte 0x{data[exc.start]:02x} at byte offset {exc.start}, line {line}); save the file as UTF-8"
    if not text.strip():
        return None, [], f"{p}: the file is empty"
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # JSON lines in a .json file: datasets reads those too
            return _jsonl_rows(p, data)
        return None, [], f"{p}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
    if isinstance(doc, dict) and doc and all(isinstance(v, list) for v in doc.values()):
        n = min(len(v) for v in doc.values())
        doc = [{k: v[i] for k, v in doc.items()} for i in range(min(n, SAMPLE_ROWS))]
    if not isinstance(doc, list):
        return None, [], f"{p}: holds a JSON {type(doc).__name__}; a data file is a list of objects (or JSON lines)"
    if not doc:
        return None, [], f"{p}: the file is empty (an empty list)"
    bad = next((i for i, r in enumerate(doc) if not isinstance(r, dict)), None)
    if bad is not None:
        return None, [], f"{p}: item {bad} is a {type(doc[bad]).__name__}, not an object; a data file is a list of objects"
    rows = doc[:SAMPLE_ROWS]
    ROW_COUNTS[str(p)] = len(doc)
    return rows, _columns(rows), None


def _decode_lines(p: Path) -> tuple[str | None, str | None]:
    with open(p, "rb") as fh:
        data = fh.read(SCAN_BYTES)
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        if exc.start >= len(data) - 4 and len(data) == SCAN_BYTES:
            return data[: exc.start].decode("utf-8"), None  # cut inside a character by the budget
        line = data[: exc.start].count(b"\n") + 1
        return None, f"{p}: line {line} is not UTF-8 (byte 0x{data[exc.start]:02x} at byte offset {exc.start}); save the file as UTF-8"


def _csv_rows(p: Path):
    text, err = _decode_lines(p)
    if err:
        return None, [], err
    reader = csv.DictReader(io.StringIO(text))
    try:
        rows = [r for _, r in zip(range(SAMPLE_ROWS), reader, strict=False)]
    except csv.Error as exc:
        return None, [], f"{p}: not valid CSV ({exc})"
    if not reader.fieldnames:
        return None, [], f"{p}: the file is empty (no CSV header)"
    if not rows:
        return None, [], f"{p}: the CSV has a header but no rows"
    return rows, list(reader.fieldnames), None


def _txt_rows(p: Path):
    text, err = _decode_lines(p)
    if err:
        return None, [], err
    rows = [{"text": line} for line in text.splitlines() if line.strip()][:SAMPLE_ROWS]
    if not rows:
        return None, [], f"{p}: the file is empty"
    return rows, ["text"], None


def _parquet_rows(p: Path):
    try:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(p)
        names = list(pf.schema_arrow.names)
        rows = pf.read_row_group(0).slice(0, SAMPLE_ROWS).to_pylist() if pf.num_row_groups else []
    except ImportError:
        return None, [], None
    except Exception as exc:  # pyarrow raises its own ArrowInvalid
        return None, [], f"{p}: not a readable parquet file ({exc})"
    if not rows:
        return None, [], f"{p}: the parquet file has no rows"
    return rows, names, None


def _data_file(source: str) -> Path | None:
    from trainyard.data.loading import EXT_BUILDERS

    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.suffix in EXT_BUILDERS)
        return files[0] if files else None
    return None


def check_data(source: str, format_name: str, text_field: str, split: str) -> tuple[str | None, str | None]:
    """-> (error, warning) for one local data source read with its format."""
    from trainyard.data.formats import FORMATS, SkipRow
    from trainyard.data.loading import EXT_BUILDERS

    fmt = FORMATS.get(format_name)
    path = Path(source).expanduser()
    if fmt is None or not path.exists():
        return None, None
    if fmt.loader is not None:  # nested raw formats (TAT-QA) read the file themselves
        return _check_loader(fmt, source, split), None
    if path.is_dir():
        if _data_file(source) is None:
            return f"directory {source} holds no data files ({', '.join(sorted(EXT_BUILDERS))})", None
    elif path.suffix not in EXT_BUILDERS:
        return f"{source}: unsupported file type {path.suffix!r}; use one of {sorted(EXT_BUILDERS)}", None
    file = _data_file(source)
    stat = file.stat()
    rows, columns, error = _read_rows(str(file), stat.st_mtime, stat.st_size)
    if error or rows is None:
        return error, None
    required = fmt.required_columns(text_field)
    missing = [c for c in required if c not in columns]
    if missing:
        fits = sorted(n for n, f in FORMATS.items() if f.loader is None and all(c in columns for c in f.required_columns(text_field)) and f.required)
        hint = f"; formats that fit these columns: {fits}" if fits else ("; set data.text_field" if "{text_field}" in fmt.required else "")
        return f"{file}: format {format_name!r} needs column(s) {missing}, the file has {columns}{hint}", None
    reasons: dict[str, int] = {}
    usable = 0
    for row in rows:
        try:
            ok = fmt.convert(row, text_field) is not None
        except SkipRow as exc:
            reasons[str(exc)] = reasons.get(str(exc), 0) + 1
            continue
        except Exception as exc:  # a converter meeting a shape it does not expect
            reasons[f"{type(exc).__name__}: {exc}"] = reasons.get(f"{type(exc).__name__}: {exc}", 0) + 1
            continue
        usable += ok
        if not ok:
            reasons["empty"] = reasons.get("empty", 0) + 1
    if not usable:
        return f"{file}: none of the first {len(rows)} rows is usable with format {format_name!r} ({reasons}); check data.format", None
    if reasons:
        return None, f"{file}: {sum(reasons.values())} of the first {len(rows)} rows would be skipped with format {format_name!r} ({reasons})"
    return None, None


def _check_loader(fmt, source: str, split: str) -> str | None:
    from trainyard.errors import BadInput

    try:
        rows = fmt.loader(source, split)
    except BadInput as exc:
        return str(exc)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{source}: cannot be read as {fmt.name} ({type(exc).__name__}: {exc})"
    return None if rows else f"{source}: no {fmt.name} rows"


@functools.lru_cache(maxsize=256)
def _check_json_cached(path: str) -> str | None:
    return check_json_file(path)


def check_json_file(path: str) -> str | None:
    """Judge questions / IFEval prompts / recorded replies: UTF-8 JSON (lines) of objects."""
    p = Path(path).expanduser()
    if not p.is_file():
        return None  # a missing path is reported as such; a directory is read by its loader
    stat = p.stat()
    if p.suffix.lower() in (".jsonl", ".json"):
        _, _, error = _read_rows(str(p), stat.st_mtime, stat.st_size)
        if error and "holds a JSON dict" in error:
            return None  # recorded judge replies are one JSON object
        return error
    return None


# ----------------------------------------------------------------------------- model configs


@functools.lru_cache(maxsize=64)
def read_model_config(name: str, revision: str | None, network: bool = True) -> tuple[dict | None, str | None, str | None]:
    """-> (config dict, error, note). Local directories always; the Hub from the HF cache,
    or downloaded when online; never via transformers."""
    path = Path(name).expanduser()
    if is_local_path(name):
        if path.is_file():
            return None, f"model path {name} is a file; give the directory that holds config.json (and the weights)", None
        if not path.is_dir():
            return None, None, None  # reported as a missing path
        cfg = path / "config.json"
        if not cfg.is_file():
            return None, f"model directory {name} has no config.json; point model.name at a saved model (save_pretrained) or a Hub id", None
        weights = [p for pattern in ("*.safetensors", "*.bin", "*.pt", "*.gguf", "*.index.json") for p in path.glob(pattern)]
        if not weights and not (path / "adapter_config.json").is_file():
            return None, f"model directory {name} has a config.json but no weights (*.safetensors / *.bin); save the model with save_pretrained", None
        try:
            return json.loads(cfg.read_text(encoding="utf-8")), None, None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return None, f"{cfg} is not valid JSON ({exc})", None
    cached = _cached_config(name, revision)
    if cached is not None:
        return _json_or_none(str(cached)), None, None
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return None, None, f"model {name}: config not checked (offline, not in the HF cache)"
    if not network:
        return None, None, f"model {name}: config not fetched from the Hub (fix the problems above first)"
    return _fetch_hub_config(name, revision)


def _cached_config(name: str, revision: str | None) -> Path | None:
    """config.json of a Hub model in the HF cache (hub/models--org--name/snapshots/<sha>/),
    read by path: importing huggingface_hub's download machinery costs half a second."""
    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / ("models--" + name.replace("/", "--"))
    ref = revision or "main"
    commit = ref
    ref_file = repo / "refs" / ref
    if ref_file.is_file():
        commit = ref_file.read_text().strip()
    path = repo / "snapshots" / commit / "config.json"
    return path if path.is_file() else None


def _fetch_hub_config(name: str, revision: str | None) -> tuple[dict | None, str | None, str | None]:
    """One GET of config.json, a few seconds, no retries: validate never waits on a slow network."""
    import urllib.error
    import urllib.parse
    import urllib.request

    from huggingface_hub import constants, get_token

    url = f"{constants.ENDPOINT}/{name}/resolve/{urllib.parse.quote(revision or 'main', safe='')}/config.json"
    request = urllib.request.Request(url)
    token = get_token()
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=HUB_TIMEOUT_S) as response:
            return json.loads(response.read().decode("utf-8")), None, None
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None, f"model {name!r} (revision {revision or 'main'}) has no config.json on the Hub: not a model id there, nor a local directory", None
        return None, None, f"model {name}: config not checked (HTTP {exc.code}: gated, private or needs HF_TOKEN)"
    except (OSError, ValueError) as exc:
        return None, None, f"model {name}: config not checked ({type(exc).__name__}: no network?)"


def _json_or_none(path: str) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def model_positions(config: dict) -> int | None:
    for cfg in (config, config.get("text_config") or {}):
        for key in POSITION_KEYS:
            value = cfg.get(key)
            if isinstance(value, int) and value > 0:
                return value
    return None


def check_model(spec: RunSpec, network: bool = True) -> tuple[list[tuple[str, str]], str | None]:
    """-> ([(key, error)], note) from the model's config."""
    if spec.architecture is not None or spec.smoke:
        return [], None  # pretrain builds its own (checked by the schema); smoke's tiny model is fixed
    problems: list[tuple[str, str]] = []
    tok = spec.model.tokenizer
    if tok and is_local_path(tok) and Path(tok).expanduser().is_file():
        problems.append(("model.tokenizer", f"tokenizer path {tok} is a file; give the directory that holds tokenizer.json / tokenizer_config.json"))
    config, error, note = read_model_config(spec.model.name, spec.model.revision, network)
    if error:
        return [*problems, ("model.name", error)], None
    if config is not None:
        positions = model_positions(config)
        if positions is not None and spec.train.max_length > positions:
            problems.append(("train.max_length", f"max_length {spec.train.max_length} exceeds the {positions} positions of {spec.model.name} (config.json); use max_length <= {positions}"))
        model_type, source = str(config.get("model_type")), "config.json"
    else:
        model_type, source = family_from_name(spec.model.name), "its name"
    problems += _target_module_problems(spec, model_type, source)
    return problems, note


# Families recognizable from a Hub id when its config cannot be read (offline, not cached).
NAME_FAMILIES = (("qwen3", "qwen3"), ("qwen2", "qwen2"), ("qwen", "qwen2"), ("llama", "llama"), ("smollm", "llama"),
                 ("mixtral", "mixtral"), ("mistral", "mistral"), ("gemma", "gemma"), ("phi-3", "phi3"), ("phi3", "phi3"),
                 ("gpt2", "gpt2"), ("pythia", "gpt_neox"), ("gpt-neox", "gpt_neox"), ("facebook/opt", "opt"), ("falcon", "falcon"), ("bloom", "bloom"))


def family_from_name(name: str) -> str | None:
    lower = name.lower()
    return next((family for marker, family in NAME_FAMILIES if marker in lower), None)


def _target_module_problems(spec: RunSpec, model_type: str | None, source: str) -> list[tuple[str, str]]:
    """Every lora.target_modules name must exist in the architecture. For an architecture
    we do not know, a name one typo away from a common module name is still refused."""
    from trainyard.errors import did_you_mean

    lora = spec.lora
    if lora is None or not isinstance(lora.target_modules, list):
        return []
    modules = ARCH_MODULES.get(model_type or "")
    if modules is not None:
        unknown = [m for m in lora.target_modules if m.split(".")[-1] not in modules]
        if unknown:
            hint = did_you_mean(unknown[0].split(".")[-1], set(modules))
            return [("lora.target_modules", f"{unknown} not in {model_type} models{hint}; their modules ({model_type} from {source}): {list(modules)}, or all-linear")]
        return []
    common = {m for names in ARCH_MODULES.values() for m in names}
    import difflib

    for m in lora.target_modules:
        leaf = m.split(".")[-1]
        close = difflib.get_close_matches(leaf, sorted(common), n=1, cutoff=0.8)
        if leaf not in common and close:
            return [("lora.target_modules", f"{m!r} is no module name of any known architecture (did you mean {close[0]!r}?); or use all-linear")]
    return []


# ----------------------------------------------------------------------------- devices


@functools.cache
def local_cuda() -> bool:
    """Whether this machine has an NVIDIA GPU, without importing torch."""
    return Path("/dev/nvidiactl").exists() or shutil.which("nvidia-smi") is not None


def device_of(spec: RunSpec, target: str) -> tuple[bool, str]:
    """(has CUDA, how to say where) for the machine `target` runs `spec` on."""
    if target == "local":
        return local_cuda(), "this machine has no CUDA GPU"
    if target == "hf-jobs":
        flavor = spec.resources.flavor
        return not flavor.startswith("cpu"), f"hf-jobs flavor {flavor} has no GPU"
    if target == "k8s":
        return spec.resources.gpus > 0, "resources.gpus is 0"
    return True, ""


def check_device(spec: RunSpec, target: str) -> list[tuple[str, str]]:
    cuda, where = device_of(spec, target)
    problems = []
    t = spec.train
    if not cuda:
        if t.precision in ("fp16", "bf16"):
            problems.append(("train.precision", f"precision {t.precision} needs a GPU and {where}; use precision: auto (fp32 on CPU) or a GPU backend"))
        if spec.quantization is not None:
            problems.append(("quantization", f"{spec.quantization.bits}-bit loading needs a CUDA GPU and bitsandbytes, and {where}; run on a GPU backend, drop `quantization:`, or use --smoke (which drops it)"))
        attn = spec.model.attn_implementation or ""
        if attn.startswith("flash_attention"):
            problems.append(("model.attn_implementation", f"{attn} needs a CUDA GPU and {where}; use sdpa"))
        if any(m in t.optimizer for m in GPU_ONLY_OPTIMIZER_MARKERS):
            problems.append(("train.optimizer", f"optimizer {t.optimizer} (bitsandbytes) needs a CUDA GPU and {where}; use adamw_torch"))
    elif target == "local" and spec.quantization is not None and importlib.util.find_spec("bitsandbytes") is None:
        problems.append(("quantization", "quantization needs bitsandbytes: pip install 'trainyard[quant]'"))
    if target == "hf-jobs" and spec.resources.flavor.startswith("t4") and t.precision == "bf16":
        problems.append(("train.precision", f"bf16 needs an Ampere or newer GPU; flavor {spec.resources.flavor} (T4) has none: use precision: auto (fp16) or an a10g / a100 flavor"))
    return problems


# ----------------------------------------------------------------------------- all runs


ALL_CHECKS = ("paths", "data", "model", "device")


def preflight(specs: list[RunSpec], fname: str, target: str | None, line_of: Callable[[str], int | None] | None = None,
              checks: tuple[str, ...] = ALL_CHECKS) -> Report:
    """Problems of every run. `target`: the backend that will run them (local, hf-jobs, k8s),
    or None for `validate` without --backend: devices are checked as for local (the default
    backend), and a missing local path is a warning (it may exist where the run runs, e.g.
    on a k8s volume; a local launch refuses it)."""
    report = Report()
    notes: dict[str, None] = {}
    # a new pre-flight re-reads files that changed (the caches key on path, not content)
    _check_data_cached.cache_clear()
    _missing_local.cache_clear()
    _check_json_cached.cache_clear()
    read_model_config.cache_clear()
    for spec in specs:
        def add(key: str, message: str, *, warn: bool = False, spec: RunSpec = spec) -> None:
            line = line_of(key.split("[")[0]) if line_of else None
            (report.warnings if warn else report.errors).append(Problem(fname, message, run=spec.name, key=key, line=line))

        if spec.train.lr >= 1:  # legal (a divergence test), but almost always a typo: 2e+5 for 2e-5
            typo = f"{spec.train.lr:.0e}".replace("e+", "e-")
            add("train.lr", f"learning rate {spec.train.lr:g} is 1 or more, usually a typo (did you mean {typo}?); training will almost surely diverge", warn=True)
        for key, value in spec.sources() if "paths" in checks else ():
            if _missing_local(value):
                add(key, f"local path {value!r} does not exist; create it or use a Hub id"
                    + ("" if target == "local" else " (a local launch refuses to start until it exists)"), warn=target != "local")
        for key, message in _data_problems(spec) if "data" in checks else ():
            add(key, message[1], warn=message[0] == "warning")
        if "data" in checks:
            for key, message in _schedule_problems(spec):
                add(key, message)
        # the Hub is asked only while nothing local is wrong: a broken file fails fast, offline
        problems, note = check_model(spec, network=not report.errors) if "model" in checks else ([], None)
        for key, message in problems:
            add(key, message)
        if note:
            notes[note] = None
        if "device" in checks:
            for key, message in check_device(spec, target or "local"):
                add(key, message + ("" if target else "; validate checks this machine unless given --backend hf-jobs|k8s"))
    report.notes = list(notes)
    return report


def _schedule_problems(spec: RunSpec) -> list[tuple[str, str]]:
    """A warm-up longer than the run, with the run's length from the rows of a local file
    (one example per row: sft without packing, dpo; epochs, not max_steps)."""
    t, d = spec.train, spec.data
    if not t.warmup_steps or t.max_steps is not None or d.limit or not (spec.recipe == "dpo" or (spec.recipe == "sft" and not t.packing)):
        return []
    from trainyard.data.formats import FORMATS

    fmt = FORMATS.get(d.format)
    if fmt is None or fmt.loader is not None:
        return []
    rows = row_count(d.source)
    if not rows:
        return []
    held = 0 if d.eval_split is not None or not d.eval_size else (int(d.eval_size) if d.eval_size >= 1 else round(rows * d.eval_size))
    train_rows = max(1, rows - held)
    steps = max(1, -(-train_rows // (t.batch_size * t.grad_accum))) * t.epochs
    if t.warmup_steps >= steps:
        return [("train.warmup_steps", f"warmup_steps ({t.warmup_steps}) >= the run's ~{steps:g} steps ({train_rows} training rows of {d.source} / "
                 f"(batch_size {t.batch_size} x grad_accum {t.grad_accum}) x epochs {t.epochs:g}): the run would end warming up")]
    return []


@functools.lru_cache(maxsize=1024)
def _missing_local(value: str) -> bool:
    return is_local_path(value) and not Path(value).expanduser().exists()


@functools.lru_cache(maxsize=1024)
def _check_data_cached(source: str, fmt: str, field_name: str, split: str) -> tuple[str | None, str | None]:
    if source.startswith("fixture:") or not Path(source).expanduser().exists():
        return None, None
    return check_data(source, fmt, field_name, split)


def _split_problems(spec: RunSpec) -> list[tuple[str, tuple[str, str]]]:
    """Local files have no splits (datasets reads them all as `train`): a split or an
    eval_split named for one would silently be the same rows."""
    from trainyard.data.formats import FORMATS

    d = spec.data
    fmt = FORMATS.get(d.format)
    if fmt is None or fmt.loader is not None or d.source.startswith("fixture:") or not Path(d.source).expanduser().exists():
        return []
    out = []
    if d.eval_split is not None:
        out.append(("data.eval_split", ("error", f"{d.source} is a local file or folder: it has no splits, so eval_split {d.eval_split!r} "
                    "would be the training rows again; use data.eval_size, or name the eval file in eval.datasets")))
    if d.split != "train":
        out.append(("data.split", ("error", f"{d.source} is a local file or folder: it has no splits (all rows are read); remove split: {d.split}")))
    return out


def _data_problems(spec: RunSpec) -> list[tuple[str, tuple[str, str]]]:
    out = []
    d = spec.data
    sets = [("data.source", d.source, d.format, d.text_field, d.split)]
    sets += [(f"eval.datasets[{e.name}].source", e.source, e.format, e.text_field, e.split) for e in spec.eval.datasets]
    out += _split_problems(spec)
    for key, source, fmt, field_name, split in sets:
        error, warning = _check_data_cached(source, fmt, field_name, split)
        if error:
            out.append((key, ("error", error)))
        elif warning:
            out.append((key, ("warning", warning)))
    e = spec.eval
    for key, value in ((("eval.judge.questions"), e.judge.questions if e.judge else None),
                       ("eval.judge.recorded", e.judge.recorded if e.judge else None),
                       ("eval.ifeval.prompts", e.ifeval.prompts if e.ifeval else None)):
        if value and not value.startswith("fixture:"):
            error = _check_json_cached(value)
            if error:
                out.append((key, ("error", error)))
    return out
