"""`python launch.py` — submit (default), validate, status, logs, cancel, report.

    python launch.py --matrix jobs/X.yaml [--backend local|hf-jobs|k8s] [--smoke] [--dry-run] [--only GLOB] [--parallel N]
    python launch.py validate --matrix jobs/X.yaml [--smoke]
    python launch.py status   --matrix jobs/X.yaml [--smoke] [--json]
    python launch.py logs     --matrix jobs/X.yaml RUN [--follow]
    python launch.py cancel   --matrix jobs/X.yaml [RUN ...]
    python launch.py report   --matrix jobs/X.yaml [--smoke] [--out DIR]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import signal
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trainyard.backends import BACKENDS
from trainyard.backends.remote import job_of
from trainyard.errors import SpecError
from trainyard.matrix import Matrix, load_matrix
from trainyard.run_dir import RunDir, disk_fault_message, is_disk_fault

COMMANDS = ("submit", "validate", "status", "logs", "cancel", "report")
# Not a terminal (CI, pipes, logs): wide enough that tables are never truncated.
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
out = Console(width=None if sys.stdout.isatty() else 200)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="launch.py", description="Run LLM fine-tuning experiment matrices.")
    sub = p.add_subparsers(dest="command")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--matrix", required=True, help="matrix YAML, e.g. jobs/rust_sft.yaml")
        sp.add_argument("--smoke", action="store_true", help="tiny local model + bundled fixtures, offline (matrix runs as <name>-smoke)")
        sp.add_argument("--runs-dir", default=os.environ.get("TRAINYARD_RUNS_DIR", "runs"), help="root of run directories (default: runs)")
        sp.add_argument("--only", action="append", metavar="GLOB", help="only runs whose name matches (repeatable)")

    s = sub.add_parser("submit", help="validate every run, then run/submit them (the default command)")
    common(s)
    s.add_argument("--backend", choices=BACKENDS, default="local")
    s.add_argument("--dry-run", action="store_true", help="validate and show what would be submitted; submit nothing")
    s.add_argument("--parallel", type=int, default=1, help="local backend: runs at once (default 1)")
    s.add_argument("--restart", action="store_true", help="set aside run dirs of a changed spec (renamed, not deleted) and train again")
    v = sub.add_parser("validate", help="expand and validate every run; run nothing")
    common(v)
    st = sub.add_parser("status", help="state of every run of the matrix")
    common(st)
    st.add_argument("--json", action="store_true")
    lg = sub.add_parser("logs", help="a run's log")
    common(lg)
    lg.add_argument("run")
    lg.add_argument("--follow", "-f", action="store_true")
    c = sub.add_parser("cancel", help="stop running runs (all, or those named)")
    common(c)
    c.add_argument("runs", nargs="*")
    r = sub.add_parser("report", help="tables and charts of a (partly) finished matrix")
    common(r)
    r.add_argument("--out", help="output directory (default: reports/<matrix>)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv = ["submit", *argv]
    args = build_parser().parse_args(argv)
    try:
        matrix = load_matrix(args.matrix)
    except SpecError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    specs = select(matrix, args)
    if specs is None:
        return 2
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
        from trainyard.fixtures.tiny_model import ensure_tiny_model
        from trainyard.smoke import smoke_spec

        tiny = str(ensure_tiny_model()) if args.command == "submit" and not getattr(args, "dry_run", False) else "<tiny-local-model>"
        try:
            specs = [smoke_spec(s, tiny) for s in specs]
        except Exception as exc:  # a smoke transform must never half-apply
            print(f"{matrix.path}: cannot build the smoke variant: {exc}", file=sys.stderr)
            return None
    return specs


def summary_table(matrix: Matrix, specs) -> Table:
    t = Table(title=f"{specs[0].matrix}: {len(specs)} run(s) from {matrix.path}")
    cols = ["run", "recipe", "model", "examples", "epochs", "max steps", "LoRA r/α", "max len", "scheduler", "warmup", "lr", "batch×accum", "options"]
    for c in cols:
        t.add_column(c)
    for s in specs:
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
            f"{tr.batch_size} × {tr.grad_accum}",
            run_options(s),
        )
    return t


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


def missing_local_files(specs) -> list[str]:
    """Local model / data paths that do not exist (relative to the current directory)."""
    from trainyard.spec import is_local_path

    return [
        f"run {s.name!r} | key {key!r}: local path {value!r} does not exist; create it or use a Hub id"
        for s in specs
        for key, value in s.sources()
        if is_local_path(value) and not Path(value).expanduser().exists()
    ]


def cmd_validate(matrix: Matrix, specs, args) -> int:
    out.print(summary_table(matrix, specs))
    for w in missing_local_files(specs):
        err.print(f"[yellow]warning[/]: {escape(f'{matrix.path} | {w}')} (a local launch refuses to start until it exists)", highlight=False)
    out.print(f"[green]ok[/]: {len(specs)} run(s) valid")
    return 0


def cmd_submit(matrix: Matrix, specs, args) -> int:
    runs_root = Path(args.runs_dir)
    if args.backend != "local":
        return submit_remote(matrix, specs, args)
    if args.dry_run:
        out.print(summary_table(matrix, specs))
        for s in specs:
            rd = RunDir.for_run(runs_root, s.matrix, s.name)
            out.print(f"[bold]{s.name}[/] -> {rd.path}  (python -m trainyard.run --spec {rd.spec_file} --run-dir {rd.path})", highlight=False)
            if os.environ.get("TRAINYARD_DRY_RUN_SPECS"):
                out.print_json(s.to_json())
        out.print(f"dry run: {len(specs)} run(s) validated, nothing submitted")
        return 0
    from trainyard.backends.local import run_local

    missing = missing_local_files(specs)
    if missing:
        print("\n".join(["refusing to start:"] + [f"  - {matrix.path} | {m}" for m in missing]), file=sys.stderr)
        return 2
    try:
        if refuse_stale(specs, runs_root, args.restart):
            return 2
        code = run_local(specs, runs_root, parallel=max(1, args.parallel), console=err)
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
    problems = validate_all(specs, backend)
    if problems:
        print("\n".join([f"{len(problems)} problem(s) found; nothing was submitted:"] + [f"  - {p}" for p in problems]), file=sys.stderr)
        return 2
    if args.dry_run:
        out.print(summary_table(matrix, specs))
        invalid = []
        for s in specs:
            out.print(f"[bold]{s.name}[/] -> {args.backend} job:", highlight=False)
            payload = backend.render(s)
            invalid += backend.validate_payload(payload)  # k8s: kubernetes-validate --strict, offline
            print(json.dumps(payload, indent=2))
        if invalid:
            print("\n".join(["invalid payloads:"] + [f"  - {p}" for p in invalid]), file=sys.stderr)
            return 2
        out.print(f"dry run: {len(specs)} run(s) validated, nothing submitted (secrets shown as placeholders)")
        return 0
    runs_root = Path(args.runs_dir)
    try:
        if refuse_stale(specs, runs_root, args.restart):
            return 2
        results = submit_runs(specs, backend, runs_root, BackendCache(backend))
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
    if any(s.tracking.enabled and not (s.tracking.space_id or s.tracking.server_url) for s in specs):
        err.print("note: live curves stay inside the job unless tracking.space_id is set; history.json still comes back")
    for r in results:
        if r.job is not None and r.action == "submitted":
            err.print(f"{r.spec.name}: {json.dumps(asdict(r.job))}", highlight=False)
    err.print(f"follow: python launch.py status --matrix {matrix.path}" + (" --smoke" if args.smoke else ""))
    return 1 if any(r.action == "failed" for r in results) else 0


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
    from trainyard.contract import RunState
    from trainyard.run_dir import FINAL_STATES

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
