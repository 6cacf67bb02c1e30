"""`python launch.py` — submit (the default command), validate, status, logs, cancel, report.

    python launch.py --matrix jobs/X.yaml [--backend local|hf-jobs|k8s] [--smoke] [--dry-run [-o yaml|json]] [--only GLOB] [--parallel N]
    python launch.py validate --matrix jobs/X.yaml [--smoke] [--backend B]
    python launch.py status   --matrix jobs/X.yaml [--smoke] [--json]
    python launch.py logs     --matrix jobs/X.yaml RUN [--follow]
    python launch.py cancel   --matrix jobs/X.yaml [RUN ...]
    python launch.py report   --matrix jobs/X.yaml [--smoke] [--out DIR]

Every command takes ``--set KEY=VALUE`` (repeatable) to override a setting of every run.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trainyard import __version__
from trainyard.backends import BACKENDS
from trainyard.backends.remote import job_of
from trainyard.contract import ExitCode
from trainyard.errors import SpecError
from trainyard.matrix import DEFAULT_MAX_RUNS, MAX_RUNS_ENV, Matrix, load_matrix
from trainyard.run_dir import RunDir, disk_fault_message, is_disk_fault

COMMANDS = ("submit", "validate", "status", "logs", "cancel", "report")


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """rich would exit 1; a reader that stopped early (`| head`) is not a failure."""
        raise BrokenPipeError


# Not a terminal (CI, pipes, logs): wide enough that tables are never truncated.
err = _Console(stderr=True, width=None if sys.stderr.isatty() else 200)
out = _Console(width=None if sys.stdout.isatty() else 200)
SUMMARY_ROWS = 50  # a larger matrix shows its first runs in the table, then a count

USAGE = """launch.py [submit] --matrix FILE [--backend {local,hf-jobs,k8s}] [--dry-run] [--smoke] [--set KEY=VALUE] ...
       launch.py {validate,status,logs,cancel,report} --matrix FILE [options]"""
DESCRIPTION = """Run LLM fine-tuning experiment matrices.

Without a command, `launch.py --matrix FILE` submits: it validates every run, then runs
them locally (or on --backend). `launch.py COMMAND --help` lists a command's options."""
EPILOG = """examples:
  launch.py validate --matrix jobs/rust_sft.yaml              check every run; run nothing
  launch.py --matrix jobs/rust_sft.yaml --smoke               tiny model + fixtures, offline
  launch.py --matrix jobs/rust_sft.yaml --set train.lr=1e-4   override a setting of every run
  launch.py --matrix jobs/rust_sft.yaml --backend hf-jobs     submit to Hugging Face Jobs
  launch.py status --matrix jobs/rust_sft.yaml --json | head  state of every run
config reference: docs/config.md"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="launch.py", usage=USAGE, description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"trainyard {__version__}", help="print the version and exit")
    sub = p.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--matrix", required=True, help="matrix YAML, e.g. jobs/rust_sft.yaml")
        sp.add_argument("--smoke", action="store_true", help="tiny local model + bundled fixtures, offline (matrix runs as <name>-smoke)")
        sp.add_argument("--runs-dir", default=os.environ.get("TRAINYARD_RUNS_DIR", "runs"), help="root of run directories (default: $TRAINYARD_RUNS_DIR or runs)")
        sp.add_argument("--only", action="append", metavar="GLOB", help="only runs whose name matches (repeatable)")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="set",
                        help="override a dotted key in every run, value in YAML (repeatable): --set train.lr=1e-4 --set lora.r=32")
        sp.add_argument("--max-runs", type=int, default=None, metavar="N",
                        help=f"refuse a matrix that expands to more runs (default ${MAX_RUNS_ENV} or {DEFAULT_MAX_RUNS:,})")

    s = sub.add_parser("submit", help="validate every run, then run/submit them (the default command)")
    common(s)
    s.add_argument("--backend", choices=BACKENDS, default="local", help="where the runs execute (default: local)")
    s.add_argument("--dry-run", action="store_true", help="validate and show what would be submitted; submit nothing")
    s.add_argument("--parallel", type=int, default=None, help="runs at once: local default 1; remote backends: at most N jobs queued/running, the rest submitted as they end (default: all at once)")
    s.add_argument("-o", "--output", choices=("yaml", "json"), help="with --dry-run on a remote backend: only the payloads on stdout (k8s: `| kubectl apply -f -`), notes on stderr")
    s.add_argument("--yes", "-y", action="store_true", help="remote backends: submit without asking to confirm the cost estimate")
    s.add_argument("--restart", action="store_true", help="set aside run dirs of a changed spec (renamed, not deleted) and train again")
    v = sub.add_parser("validate", help="expand and validate every run, read data and model configs; run nothing")
    common(v)
    v.add_argument("--backend", choices=BACKENDS, default=None,
                   help="check precision / quantization / attention against this backend's machines (default: this machine, as a local launch)")
    st = sub.add_parser("status", help="state of every run of the matrix")
    common(st)
    st.add_argument("--json", action="store_true", help="print the rows as JSON (for scripts)")
    lg = sub.add_parser("logs", help="a run's log")
    common(lg)
    lg.add_argument("run", help="run name (see validate / status)")
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing while the run is active")
    c = sub.add_parser("cancel", help="stop running runs (all, or those named)")
    common(c)
    c.add_argument("runs", nargs="*", help="run names (default: every run of the matrix)")
    r = sub.add_parser("report", help="tables and charts of a (partly) finished matrix")
    common(r)
    r.add_argument("--out", help="output directory (default: reports/<matrix>)")
    return p


def main(argv: list[str] | None = None) -> int:
    """The CLI. Output survives a closed pipe (`status --json | head`): no traceback."""
    try:
        code = _main(argv)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader went away: send what is still buffered nowhere, and stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version"):
        argv = ["submit", *argv]
    args = build_parser().parse_args(argv)
    if args.max_runs is not None and args.max_runs < 1:
        print("--max-runs must be at least 1", file=sys.stderr)
        return ExitCode.BAD_INPUT
    try:
        matrix = load_matrix(args.matrix, sets=args.set, max_runs=args.max_runs)
    except SpecError as exc:
        print(str(exc), file=sys.stderr)
        return ExitCode.BAD_INPUT
    specs = select(matrix, args)
    if specs is None:
        return ExitCode.BAD_INPUT
    return {
        "submit": cmd_submit,
        "validate": cmd_validate,
        "status": cmd_status,
        "logs": cmd_logs,
        "cancel": cmd_cancel,
        "report": cmd_report,
    }[args.command](matrix, specs, args)


def select(matrix: Matrix, args: argparse.Namespace):
    specs = matrix.runs
    if args.only:
        specs = [s for s in specs if any(fnmatch.fnmatch(s.name, g) for g in args.only)]
        if not specs:
            print(f"{matrix.path}: --only {args.only} matches no run; runs: {matrix.run_names}", file=sys.stderr)
            return None
    if args.smoke:
        from trainyard.smoke import smoke_spec

        args.originals = specs

        tiny = tiny_model_dir() if args.command == "submit" and not getattr(args, "dry_run", False) else "<tiny-local-model>"
        try:
            specs = [smoke_spec(s, tiny) for s in specs]
        except Exception as exc:  # a smoke transform must never half-apply
            print(f"{matrix.path}: cannot build the smoke variant: {exc}", file=sys.stderr)
            return None
    return specs


def tiny_model_dir() -> str:
    """The --smoke model, built on first use in a child process: the launcher itself never
    imports torch / transformers."""
    import subprocess

    from trainyard.fixtures import tiny_model

    target = tiny_model.cache_dir() / f"{tiny_model.TINY_VERSION}-{tiny_model._corpus_hash()}"
    if (target / "config.json").is_file() and (target / "tokenizer.json").is_file():
        return str(target)
    src = str(Path(tiny_model.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-m", "trainyard.fixtures.tiny_model"], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def summary_table(matrix: Matrix, specs) -> Table:
    t = Table(title=f"{specs[0].matrix}: {len(specs)} run(s) from {matrix.path}")
    cols = ["run", "recipe", "model", "examples", "epochs", "max steps", "LoRA r/α", "max len", "scheduler", "warmup", "lr", "batch×accum[×procs]", "options"]
    for c in cols:
        t.add_column(c)
    for s in specs[:SUMMARY_ROWS]:
        tr = s.train
        warm = f"{tr.warmup_ratio:g}" if tr.warmup_ratio else (f"{tr.warmup_steps} steps" if tr.warmup_steps else "–")
        sched = tr.scheduler + (f" ({tr.scheduler_cycles} cycles)" if tr.scheduler_cycles else "")
        t.add_row(
            s.name,
            s.recipe,
            s.model.name.rsplit("/", 2)[-1] if s.smoke else s.model.name,
            f"{s.data.limit:,}" if s.data.limit else "all",
            f"{tr.epochs:g}",
            str(tr.max_steps or "–"),
            f"{s.lora.r}/{s.lora.alpha}" if s.lora else "full",
            str(tr.max_length),
            sched,
            warm,
            f"{tr.lr:g}",
            batch_cell(s),
            run_options(s),
        )
    if len(specs) > SUMMARY_ROWS:
        t.caption = f"first {SUMMARY_ROWS} of {len(specs)} runs shown (--only GLOB selects others)"
    return t


def batch_cell(s) -> str:
    """'2 × 4', or with torchrun the effective batch: '2 × 4 × 2 procs = 16'."""
    from trainyard.backends.launch import effective_batch, world_size

    tr, n = s.train, world_size(s)
    return f"{tr.batch_size} × {tr.grad_accum}" + (f" × {n} procs = {effective_batch(s)}" if n > 1 else "")


def run_options(s) -> str:
    """Quantization and recipe-section settings (dpo: beta, loss, prompt budget; pretrain:
    model size; mixed_loss: α / T / top-k; causal-LM text filters and eval sets)."""
    parts = []
    if s.quantization is not None:
        q = s.quantization
        parts.append(f"{q.bits}-bit {q.quant_type if q.bits == 4 else ''}/{q.compute_dtype}".replace(" /", "/"))
    if s.dpo is not None:
        d = s.dpo
        parts.append(f"β {d.beta:g} {d.loss_type}" + (f", prompt ≤{d.max_prompt_length}" if d.max_prompt_length else ""))
    if s.architecture is not None:
        from trainyard.arch import describe

        parts.append(describe(s.architecture))
    if s.mixed_loss is not None:
        m = s.mixed_loss
        parts.append(f"α {m.alpha:g}, T {m.temperature:g}, top-k {m.top_k or 'all'}")
    if s.lm.min_chars or s.lm.stride:
        parts.append(f"texts ≥{s.lm.min_chars} chars, stride {s.lm.stride or s.train.max_length}")
    if s.eval.datasets:
        parts.append(f"eval: {', '.join(d.name for d in s.eval.datasets)}")
    return "; ".join(parts) or "–"


def run_preflight(matrix: Matrix, specs, target: str | None, originals=None) -> bool:
    """Data files, model configs and devices (trainyard.preflight). Prints what it finds;
    False when something must be fixed before any run starts. With --smoke, the user's own
    data and model (`originals`) are still read: the smoke runs swap them for fixtures."""
    from trainyard.errors import group_problems
    from trainyard.preflight import preflight

    if originals is not None:
        report = preflight(originals, str(matrix.path), None, line_of=matrix.line_of, checks=("paths", "data", "model"))
        device = preflight(specs, str(matrix.path), target, line_of=matrix.line_of, checks=("device",))
        report.errors += device.errors
        report.warnings += device.warnings
    else:
        report = preflight(specs, str(matrix.path), target, line_of=matrix.line_of)
    report.warnings = list(matrix.warnings) + report.warnings
    for line in group_problems(report.warnings, len(specs)):
        err.print(f"[yellow]warning[/]: {escape(line)}", highlight=False)
    for note in report.notes:
        err.print(f"note: {escape(note)}", highlight=False)
    if report.errors:
        print(str(SpecError(report.errors, total_runs=len(specs))), file=sys.stderr)
        return False
    return True


def backend_problem(fname: str, text: str):
    """A backend's "run 'x' | key 'k': message" line as a Problem, so runs sharing it group."""
    import re

    from trainyard.errors import Problem

    m = re.match(r"run '([^']*)'(?: \| key '([^']*)')?: (.*)$", text, re.S)
    return Problem(fname, m.group(3), run=m.group(1), key=m.group(2)) if m else Problem(fname, text)


def cmd_validate(matrix: Matrix, specs, args) -> int:
    if not run_preflight(matrix, specs, args.backend, getattr(args, "originals", None)):
        return ExitCode.BAD_INPUT
    if args.backend not in (None, "local"):
        from trainyard.backends import get_backend
        from trainyard.backends.remote import validate_all

        problems = validate_all(specs, get_backend(args.backend))  # what submit would refuse, offline
        if problems:
            print(str(SpecError([backend_problem(str(matrix.path), p) for p in problems], total_runs=len(specs))), file=sys.stderr)
            return ExitCode.BAD_INPUT
    out.print(summary_table(matrix, specs))
    out.print(f"[green]ok[/]: {len(specs)} run(s) valid" + (f" for --backend {args.backend}" if args.backend else ""))
    return 0


def cmd_submit(matrix: Matrix, specs, args) -> int:
    runs_root = Path(args.runs_dir)
    if args.parallel is not None and args.parallel < 1:
        print(f"--parallel must be at least 1 (got {args.parallel})", file=sys.stderr)
        return 2
    if args.output and (not args.dry_run or args.backend == "local"):
        print(f"-o {args.output} prints the payloads of a remote backend: add --dry-run and --backend k8s|hf-jobs", file=sys.stderr)
        return 2
    if not run_preflight(matrix, specs, args.backend, getattr(args, "originals", None)):
        return ExitCode.BAD_INPUT
    if args.backend != "local":
        return submit_remote(matrix, specs, args)
    from trainyard.backends.local import shape_problems

    if problems := shape_problems(specs):  # e.g. resources.nodes > 1: one machine here
        print("\n".join([f"{len(problems)} problem(s) found; nothing was run:"] + [f"  - {matrix.path} | {p}" for p in problems]), file=sys.stderr)
        return 2
    if args.dry_run:
        from trainyard.backends.launch import describe_launch
        from trainyard.backends.local import run_command

        out.print(summary_table(matrix, specs))
        for s in specs:
            rd = RunDir.for_run(runs_root, s.matrix, s.name)
            command = shlex.join(["python", *run_command(s, rd)[1:]])
            out.print(f"[bold]{escape(s.name)}[/] -> {rd.path}: {describe_launch(s, 'local')}  ({escape(command)})", highlight=False, soft_wrap=True)
            if os.environ.get("TRAINYARD_DRY_RUN_SPECS"):
                out.print_json(s.to_json())
        out.print(f"dry run: {len(specs)} run(s) validated, nothing submitted")
        return 0
    from trainyard.backends.local import run_local

    try:
        if refuse_stale(specs, runs_root, args.restart):
            return 2
        code = run_local(specs, runs_root, parallel=max(1, args.parallel or 1), console=err)
    except OSError as exc:
        if not is_disk_fault(exc):
            raise
        print(f"cannot write the run directories: {disk_fault_message(exc)}", file=sys.stderr)
        return 1
    if specs and specs[0].tracking.enabled:
        err.print(f"curves: trackio show --project {specs[0].tracking_project}")
    return code


def refuse_stale(specs, runs_root: Path, restart: bool) -> bool:
    """Runs of a changed spec block the launch; --restart sets their directories aside."""
    from trainyard.backends.local import set_aside, stale_runs
    from trainyard.run_lock import holder

    stale = stale_runs(specs, runs_root)
    busy = [(rd, h) for rd, _ in stale if (h := holder(rd.path)) is not None]
    if busy:  # never move a directory a trainer is writing
        print("\n".join(["refusing to start:"] + [f"  - {rd.path} is being trained by {h.describe()}; stop it first (launch.py cancel)" for rd, h in busy]), file=sys.stderr)
        return True
    if stale and not restart:
        print("\n".join(["refusing to start:"] + [f"  - {msg}" for _, msg in stale]), file=sys.stderr)
        return True
    for rundir, _ in stale:
        err.print(f"--restart: moved {rundir.path} to {set_aside(rundir)}", highlight=False)
    return False


def collect_status(specs, runs_root: Path) -> list[dict]:
    """One row per run. A queued/running status whose process is gone (its trainer or its
    launcher died without a final word) is repaired on the way (run_lock.repair_stale)."""
    from trainyard.run_lock import repair_stale

    rows = []
    for s in specs:
        rd = RunDir.for_run(runs_root, s.matrix, s.name)
        repaired = repair_stale(rd)
        st = repaired.to_dict() if repaired is not None else rd.status()
        m = rd.metrics()
        rows.append({"run": s.name, "state": st.get("state", "not started"), "step": st.get("step"), "max_steps": st.get("max_steps"), "reason": st.get("reason"), "path": str(rd.path), "job": st.get("job"), "metrics": {k: v for k, v in m.items() if k in ("train/loss",) or k.endswith("/loss") or k.endswith("/perplexity")}})
    return rows


def cmd_status(matrix: Matrix, specs, args) -> int:
    refresh_remote(specs, args)
    rows = collect_status(specs, Path(args.runs_dir))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    t = Table(title=f"{specs[0].matrix} status")
    for c in ("run", "state", "step", "train/loss", "eval loss", "note"):
        t.add_column(c)
    for r in rows:
        evals = {k: v for k, v in r["metrics"].items() if k.startswith("eval/") and k.endswith("/loss")}
        ev = ", ".join(f"{k.split('/')[1]} {v:.4f}" if isinstance(v, float) else f"{k.split('/')[1]} {v}" for k, v in evals.items())
        tl = r["metrics"].get("train/loss")
        t.add_row(r["run"], r["state"], f"{r['step']}/{r['max_steps']}" if r["step"] is not None else "", f"{tl:.4f}" if isinstance(tl, float) else "", ev, escape(str(r["reason"] or "")))
    out.print(t)
    return 0


def cmd_logs(matrix: Matrix, specs, args) -> int:
    names = [s.name for s in specs]
    if args.run not in names:
        from trainyard.errors import did_you_mean

        print(f"{matrix.path}: no run {args.run!r}{did_you_mean(args.run, names)}; runs: {names}", file=sys.stderr)
        return 2
    spec = next(s for s in specs if s.name == args.run)
    rd = RunDir.for_run(args.runs_dir, spec.matrix, spec.name)
    if job_of(rd) is not None:
        return remote_logs(rd, args.follow)
    if not rd.log_file.exists():
        print(f"no log yet at {rd.log_file} (state: {rd.state or 'not started'})", file=sys.stderr)
        return 1
    with open(rd.log_file) as fh:
        sys.stdout.write(fh.read())
        while args.follow and rd.state in (None, "queued", "running"):
            chunk = fh.read()
            sys.stdout.write(chunk)
            sys.stdout.flush()
            time.sleep(1)
        sys.stdout.write(fh.read())
    return 0


def cmd_cancel(matrix: Matrix, specs, args) -> int:
    from trainyard.contract import RunState
    from trainyard.run_lock import holder, stale_reason, try_lock

    targets = [s for s in specs if not args.runs or s.name in args.runs]
    n = 0
    for s in targets:
        rd = RunDir.for_run(args.runs_dir, s.matrix, s.name)
        st = rd.read_status()
        if job_of(rd) is not None:
            n += remote_cancel(rd)
            continue
        if st is None or st.state not in (RunState.QUEUED, RunState.RUNNING):
            continue
        trainer = holder(rd.path)  # the live trainer; a pre-lock trainer is known by its pid only
        pid = trainer.pid if trainer is not None else (st.pid if st.state is RunState.RUNNING and stale_reason(rd.path, st) is None else None)
        if pid:
            try:
                os.kill(int(pid), signal.SIGTERM)  # the run checkpoints and marks itself canceled
                n += 1
                continue
            except ProcessLookupError:
                pass
        with try_lock(rd.path) as free:  # nobody trains it: say so in its status
            if free and rd.state in (RunState.QUEUED, RunState.RUNNING):
                rd.set_status(RunState.CANCELED, reason="canceled before it started" if st.state is RunState.QUEUED else f"canceled; its process (pid {st.pid}) was already gone")
                n += 1
    out.print(f"cancel requested for {n} run(s)")
    return 0


def cmd_report(matrix: Matrix, specs, args) -> int:
    from trainyard.report import main_report

    refresh_remote(specs, args)
    return main_report(matrix, specs, Path(args.runs_dir), args.out)


# ----------------------------------------------------------------------------- remote backends
# Any registered backend (hf-jobs, k8s, ...): the JobRef recorded in status.json says which.


def submit_remote(matrix: Matrix, specs, args) -> int:
    from dataclasses import asdict

    from trainyard.backends import get_backend
    from trainyard.backends.remote import BackendCache, submit_runs, validate_all

    backend = get_backend(args.backend)
    if args.dry_run:  # renders (and so validates) every run once
        return dry_run_remote(matrix, specs, backend, args)
    estimate = checked_estimate(validate_all(specs, backend), backend, matrix, specs, args)
    if estimate is REFUSED:
        return 2
    runs_root = Path(args.runs_dir)
    try:
        if refuse_stale(specs, runs_root, args.restart):
            return 2
        if estimate is not None and estimate.specs and not confirm_cost(estimate, args.yes):
            print("not submitted", file=sys.stderr)
            return 1
        if args.parallel:
            err.print(f"--parallel {args.parallel}: at most {args.parallel} job(s) at once; waiting here to submit the rest as earlier ones end (Ctrl-C stops submitting, running jobs go on)")
        on_submit = (lambda r: err.print(f"{r.spec.name}: {r.action} {escape(str(r.note or ''))}", highlight=False)) if args.parallel else None
        results = submit_runs(specs, backend, runs_root, BackendCache(backend), parallel=args.parallel, poll_s=float(os.environ.get("TRAINYARD_POLL_S", "30")), on_submit=on_submit)
    except KeyboardInterrupt:
        err.print("interrupted: runs not submitted yet stay unsubmitted; run the same command again to go on")
        return 130
    except OSError as exc:
        if not is_disk_fault(exc):
            raise
        print(f"cannot write the run directories: {disk_fault_message(exc)} (the run being submitted may have started without a local record: check the {args.backend} jobs)", file=sys.stderr)
        return 1
    t = Table(title=f"{specs[0].matrix}: {len(specs)} run(s) -> {args.backend}")
    for c in ("run", "action", "job / note"):
        t.add_column(c)
    colors = {"submitted": "green", "skipped": "white", "failed": "red"}
    for r in results:
        t.add_row(r.spec.name, f"[{colors[r.action]}]{r.action}[/]", escape(str(r.note or "")))
    out.print(t)
    urls = sorted({r.job.extra["tracking_url"] for r in results if r.job is not None and (r.job.extra or {}).get("tracking_url")})
    for url in urls:
        err.print(f"curves: {url}", highlight=False)
    if args.backend == "k8s" and any(s.tracking.enabled and not (s.tracking.space_id or s.tracking.server_url) for s in specs):
        err.print("note: curves go to the in-cluster Trackio server (TRACKIO_SERVER_URL in ConfigMap trainyard-env): kubectl -n trainyard port-forward svc/trackio 7860")
    elif any(s.tracking.enabled and not (s.tracking.space_id or s.tracking.server_url) for s in specs):
        err.print("note: live curves stay inside the job unless tracking.space_id is set; history.json still comes back")
    for r in results:
        if r.job is not None and r.action == "submitted":
            err.print(f"{r.spec.name}: {json.dumps(asdict(r.job))}", highlight=False)
    err.print(f"follow: python launch.py status --matrix {matrix.path}" + (" --smoke" if args.smoke else ""))
    return 1 if any(r.action == "failed" for r in results) else 0


@dataclass
class CostEstimate:
    specs: list  # the runs that would be submitted (finished ones excluded)
    plan: Any


def cost_plan(backend, matrix: Matrix, specs, runs_root: Path) -> CostEstimate | None:
    """Cost and time of the runs a submit would send; None for backends without prices."""
    prices = getattr(backend, "prices", None)
    if prices is None:
        return None
    from trainyard.backends import cost
    from trainyard.backends.remote import DONE_STATES

    todo = [s for s in specs if RunDir.for_run(runs_root, s.matrix, s.name).state not in DONE_STATES]
    table, source = prices()
    return CostEstimate(todo, cost.plan(todo, table, source, runs_root))


def cost_table(estimate: CostEstimate) -> Table:
    from trainyard.backends.cost import fmt_duration, fmt_tokens, fmt_usd

    p = estimate.plan
    t = Table(title=f"estimated cost and time ({p.price_source}; planning figures, see docs/hf-jobs.md)")
    for c in ("run", "flavor", "$/h", "tokens", "tokens/s", "duration", "timeout", "cost", "worst case", "basis"):
        t.add_column(c)
    for e in p.estimates:
        t.add_row(
            e.run, e.flavor, fmt_usd(e.price_per_hour), fmt_tokens(e.tokens), f"{e.tokens_per_second:,.0f}" if e.tokens_per_second else "?",
            fmt_duration(e.duration_s) + (" (> timeout)" if e.hits_timeout else ""), fmt_duration(e.timeout_s), fmt_usd(e.cost_usd), fmt_usd(e.worst_usd),
            escape("; ".join(e.notes)),
        )
    t.add_row("total", "", "", fmt_tokens(sum(e.tokens for e in p.estimates if e.tokens) or None), "", fmt_duration(p.total_duration_s), "", fmt_usd(p.total_usd), fmt_usd(p.total_worst_usd), "")
    return t


def cost_line(estimate: CostEstimate) -> str:
    from trainyard.backends.cost import fmt_duration, fmt_usd

    p = estimate.plan
    return (
        f"{len(estimate.specs)} run(s): estimated {fmt_usd(p.total_usd)} and {fmt_duration(p.total_duration_s)} of jobs, "
        f"worst case {fmt_usd(p.total_worst_usd)} if every run hits its timeout ({p.price_source})"
    )


def confirm_cost(estimate: CostEstimate, yes: bool) -> bool:
    err.print(cost_line(estimate), highlight=False)
    if yes or not sys.stdin.isatty():
        return True
    return input("submit? [y/N] ").strip().lower() in ("y", "yes")


REFUSED = object()  # checked_estimate's answer when the submit must not go on


def checked_estimate(problems: list[str], backend, matrix: Matrix, specs, args):
    """Print the payload problems or the budget overrun and return REFUSED, else the cost
    estimate (None for backends without prices): the checks a submit and a dry run share."""
    if problems:
        print("\n".join([f"{len(problems)} problem(s) found; nothing was submitted:"] + [f"  - {p}" for p in problems]), file=sys.stderr)
        return REFUSED
    estimate = cost_plan(backend, matrix, specs, Path(args.runs_dir))
    return REFUSED if refuse_budget(estimate, matrix) else estimate


def refuse_budget(estimate: CostEstimate | None, matrix: Matrix) -> bool:
    """True (and says why) when the worst case of the runs to submit exceeds a budget."""
    if estimate is None:
        return False
    from trainyard.backends.cost import budget_problems

    over = budget_problems(estimate.specs, estimate.plan, matrix.budget_usd, where=f"{matrix.path} | ")
    if over:
        print("\n".join([f"over budget; nothing was submitted ({estimate.plan.price_source}):"] + [f"  - {p}" for p in over]), file=sys.stderr)
    return bool(over)


DRY_RUN_TABLE_ROWS = 50  # a 1,000-run table takes seconds to lay out and nobody reads it


def dry_run_remote(matrix: Matrix, specs, backend, args) -> int:
    """Render + validate every payload. With -o yaml|json stdout holds only the objects."""
    from trainyard.backends.launch import describe_launch
    from trainyard.errors import BackendError

    rendered, problems = [], []
    for s in specs:
        try:
            rendered.append((s, backend.render(s)))
        except (BackendError, ValueError) as exc:
            problems.extend(str(exc).splitlines())
    estimate = checked_estimate(problems, backend, matrix, specs, args)
    if estimate is REFUSED:
        return 2
    notes = err if args.output else out
    notes.print(summary_table(matrix, specs[:DRY_RUN_TABLE_ROWS]))
    if len(specs) > DRY_RUN_TABLE_ROWS:
        notes.print(f"(the table shows {DRY_RUN_TABLE_ROWS} of {len(specs)} runs; `launch.py validate` lists all)")
    payloads, invalid = [], []
    for s, payload in rendered:
        invalid += backend.validate_payload(payload)  # k8s: kubernetes-validate --strict, offline
        print(f"{s.name} -> {args.backend} job: {describe_launch(s, args.backend)}", file=sys.stderr if args.output else sys.stdout)
        if args.output:
            payloads += payload["items"] if payload.get("kind") == "List" else [payload]
        else:
            print(json.dumps(payload, indent=2))
    if invalid:
        print("\n".join(["invalid payloads:"] + [f"  - {p}" for p in invalid]), file=sys.stderr)
        return 2
    if args.output == "yaml":
        from trainyard.backends.kubernetes import manifests_yaml

        sys.stdout.write(manifests_yaml(payloads))
    elif args.output == "json":  # k8s: one v1 List (kubectl apply -f - takes it); else a JSON array
        is_k8s = all("kind" in p and "apiVersion" in p for p in payloads)
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": payloads} if is_k8s else payloads, indent=2))
    if estimate is not None:
        notes.print(cost_table(estimate))
    notes.print(f"dry run: {len(specs)} run(s) validated, nothing submitted (secrets shown as placeholders)")
    return 0


def refresh_remote(specs, args) -> None:
    from trainyard.backends.remote import refresh_all

    for warning in refresh_all(specs, Path(args.runs_dir)):
        err.print(f"[yellow]warning[/]: {escape(str(warning))}", highlight=False)


def remote_logs(rd: RunDir, follow: bool) -> int:
    from trainyard.backends import get_backend

    job = job_of(rd)
    try:
        for line in get_backend(job.backend).logs(job, follow=follow):
            print(line, flush=True)
    except Exception as exc:
        print(f"cannot read the logs of {job.backend} job {job.id}: {exc}", file=sys.stderr)
        return 1
    return 0


def remote_cancel(rd: RunDir) -> int:
    from trainyard.backends import get_backend
    from trainyard.contract import FINAL_STATES, RunState

    job = job_of(rd)
    if rd.state in FINAL_STATES:
        return 0
    try:
        get_backend(job.backend).cancel(job)
    except Exception as exc:
        print(f"{rd.path.name}: cancel of {job.backend} job {job.id} failed: {exc}", file=sys.stderr)
        return 0
    rd.set_status(RunState.CANCELED, reason=f"canceled by user ({job.backend} job {job.id})")
    return 1
