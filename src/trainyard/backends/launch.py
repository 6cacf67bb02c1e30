"""The launch shape of a run: one `python -m trainyard.run`, or torchrun around it.

`launch_command(spec, run_dir)` is the container / process command every backend uses:

- 1 process in all (`resources.processes`, default `gpus`, x `nodes` == 1):
  `python -m trainyard.run --run-dir DIR`;
- several processes on one node: torchrun `--standalone --nproc-per-node K`;
- several nodes (k8s Indexed Job): torchrun's static rendezvous, `--nnodes M --node-rank R
  --master-addr A --master-port P`, where the backend says how a node learns R and A
  (k8s: `$(JOB_COMPLETION_INDEX)` and pod 0's DNS name).

torchrun is run through this module (`python -m trainyard.backends.launch <torchrun args>`)
rather than the `torchrun` script because torchrun exits 1 whenever a worker fails, which
hides the entrypoint's exit codes (contract.ExitCode: 2 bad input, 3 diverged, 130
canceled) from the k8s podFailurePolicy and HF Jobs; here the first failed worker's code
is the exit code. Only `main()` imports torch (it runs in the training image); building
the command needs nothing but the spec.
"""

from __future__ import annotations

import re
import sys

from trainyard.errors import BackendError
from trainyard.spec import RunSpec

MASTER_PORT = 29500
RUN_MODULE = ["-m", "trainyard.run"]
LAUNCH_MODULE = ["python", "-m", "trainyard.backends.launch"]


class LaunchShapeError(BackendError):
    """The spec asks for a launch shape the backend cannot start."""


def processes_per_node(spec: RunSpec, gpus: int | None = None) -> int:
    """`resources.processes`, else one per GPU (`gpus` overrides resources.gpus: HF Jobs
    flavors carry their own GPU count), at least 1."""
    res = spec.resources
    return res.processes or max(1, res.gpus if gpus is None else gpus)


def world_size(spec: RunSpec, gpus: int | None = None) -> int:
    return processes_per_node(spec, gpus) * spec.resources.nodes


def effective_batch(spec: RunSpec, gpus: int | None = None) -> int:
    """Sequences per optimizer step: batch_size x grad_accum x processes x nodes."""
    return spec.train.batch_size * spec.train.grad_accum * world_size(spec, gpus)


def launch_command(
    spec: RunSpec,
    run_dir: str,
    *,
    gpus: int | None = None,
    node_rank: str | None = None,
    master_addr: str | None = None,
    master_port: int = MASTER_PORT,
) -> list[str]:
    """The command that starts `spec` with its run directory at `run_dir`.

    Multi-node needs `node_rank` and `master_addr` (strings: the backend may pass an
    expansion such as `$(JOB_COMPLETION_INDEX)`); a backend that cannot give them raises.
    """
    run = [*RUN_MODULE, "--run-dir", run_dir]
    nproc, nodes = processes_per_node(spec, gpus), spec.resources.nodes
    if nproc * nodes == 1:
        return ["python", *run]
    if nodes == 1:
        return [*LAUNCH_MODULE, "--standalone", "--nnodes", "1", "--nproc-per-node", str(nproc), *run]
    if node_rank is None or master_addr is None:
        raise LaunchShapeError(f"run {spec.name!r} | key 'resources.nodes': {nodes} nodes need the k8s backend (an Indexed Job); other backends start one node")
    return [
        *LAUNCH_MODULE,
        "--nnodes", str(nodes),
        "--node-rank", node_rank,
        "--master-addr", master_addr,
        "--master-port", str(master_port),
        "--nproc-per-node", str(nproc),
        "--max-restarts", "0",  # a failed node fails the pod; the Job's retry policy decides
        *run,
    ]


def describe_launch(spec: RunSpec, backend: str) -> str:
    """'2 nodes x 4 processes (torchrun), effective batch 2 x 2 x 4 x 2 = 32' for --dry-run."""
    gpus = flavor_gpus(spec.resources.flavor) if backend == "hf-jobs" else None
    nproc, nodes = processes_per_node(spec, gpus), spec.resources.nodes
    tr = spec.train
    shape = (f"{nodes} nodes x " if nodes > 1 else "") + f"{nproc} process{'es' if nproc > 1 else ''}" + (" (torchrun)" if nproc * nodes > 1 else "")
    factors = [tr.batch_size, tr.grad_accum] + ([nproc] if nproc * nodes > 1 else []) + ([nodes] if nodes > 1 else [])
    return f"{shape}, effective batch {' x '.join(map(str, factors))} = {effective_batch(spec, gpus)}"


def flavor_gpus(flavor: str) -> int:
    """GPUs of an HF Jobs flavor: 'a100x4' -> 4, 'h200' -> 1, 'cpu-basic' -> 0."""
    if flavor.startswith("cpu"):
        return 0
    m = re.search(r"x(\d+)$", flavor)
    return int(m.group(1)) if m else 1


SHUTDOWN_TIMEOUT_ENV = "TORCH_ELASTIC_SHUTDOWN_TIMEOUT"
# On SIGTERM torchrun forwards it to the workers and SIGKILLs them after this many seconds
# (torch's default: 30), which is too short to save a big checkpoint. Backends with a
# longer grace period set it just below theirs (k8s: terminationGracePeriodSeconds - 30).
DEFAULT_SHUTDOWN_TIMEOUT_S = 270


def main(argv: list[str] | None = None) -> int:
    """torchrun with the first failed worker's exit code (a signal N becomes 128 + N)."""
    import os

    from trainyard.run_lock import PARENT_PID_ENV, die_with_parent

    os.environ.setdefault(SHUTDOWN_TIMEOUT_ENV, str(DEFAULT_SHUTDOWN_TIMEOUT_S))
    if os.environ.get(PARENT_PID_ENV, "").isdigit():  # the local launcher: SIGTERM us when it dies
        die_with_parent(int(os.environ[PARENT_PID_ENV]))
        # the workers are our children (in sessions of their own): they die with us, in turn
        os.environ[PARENT_PID_ENV] = str(os.getpid())
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(sys.argv[1:] if argv is None else argv))
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        code = failure.exitcode
        return code if code > 0 else 128 - code if code < 0 else 1
    except SignalException as exc:  # SIGTERM (cancel, preemption): the workers were told and stopped
        return 128 + int(exc.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
