# SPDX-License-Identifier: Apache-2.0
"""Process-group setup for the command line: `recops train --nproc N` re-runs itself under torchrun, and each
process joins the group torchrun describes in its environment."""

import os
import subprocess
import sys
from typing import Iterable, Iterator, List, Tuple, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def relaunch(nproc: int, argv: List[str]) -> int:
    """Run `python -m recops <argv>` in nproc processes with torchrun (standalone rendezvous on this host) and
    return its exit code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m",
           "recops"] + argv
    return subprocess.call(cmd)


def init_from_env() -> Tuple[int, int]:
    """(rank, world size): joins torchrun's process group (gloo, or NCCL with CUDA) when launched by torchrun
    with more than one process, else (0, 1)."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) < 2:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def rank_share(items: Iterable[T], rank: int, world: int) -> Iterator[T]:
    """Item i of every complete group of `world` consecutive items goes to rank i: every rank gets the same
    number of items (a trailing incomplete group is dropped), so collectives stay matched."""
    if world == 1:
        yield from items
        return
    group: List[T] = []
    for item in items:
        group.append(item)
        if len(group) == world:
            yield group[rank]
            group = []


def agree(flag: bool, world: int) -> bool:
    """True on every rank when `flag` is true on any rank (an all_reduce; a plain bool with one process).
    Decisions that depend on local clocks (time budgets) go through this so every rank stops at the same step."""
    if world == 1:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
