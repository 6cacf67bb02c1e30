"""Which process of a torchrun launch this is, and the few agreements the ranks must share.

torchrun (backends/launch.py) sets RANK / LOCAL_RANK / WORLD_SIZE in each worker; a plain
`python -m trainyard.run` has none of them and is rank 0 of a world of 1, where every helper
here is a no-op. Only the main process (global rank 0) writes the run directory, Trackio and
the Hub; every rank must take the same decisions (resume point, stop for cancellation or
divergence), or one of them waits forever in the next collective. torch is imported only
when the world is larger than 1.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

COLLECTIVE_TIMEOUT_S = 4 * 3600


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main() -> bool:
    return rank() == 0


def is_distributed() -> bool:
    return world_size() > 1


def init() -> None:
    """Join the process group before the recipe (the Trainer reuses it): gloo on CPU, NCCL
    for CUDA tensors with gloo beside it for the CPU-side agreements below."""
    if not is_distributed():
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    # rank 0 alone runs the evaluations before training (eval.compare_before: judge, IFEval)
    # while the others wait in the first collective: torch's 10-30 min default is too short
    timeout = timedelta(seconds=COLLECTIVE_TIMEOUT_S)
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
        dist.init_process_group(backend="cuda:nccl,cpu:gloo", timeout=timeout)
    else:
        dist.init_process_group(backend="gloo", timeout=timeout)


def _group_ready() -> bool:
    if not is_distributed():
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def any_rank(flag: bool) -> bool:
    """True on every rank if it is true on any (e.g. SIGTERM reached one worker)."""
    return total(1.0 if flag else 0.0) > 0


def total(value: float) -> float:
    """The sum of `value` over all ranks (the value itself in a world of 1)."""
    if not _group_ready():
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item())


def mean(value: float) -> float:
    return total(value) / world_size() if _group_ready() else value


def from_main(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (a picklable value: a path, a small dict)."""
    if not _group_ready():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if _group_ready():
        import torch.distributed as dist

        dist.barrier()


def shutdown() -> None:
    if _group_ready():
        import torch.distributed as dist

        dist.destroy_process_group()
