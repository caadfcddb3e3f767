# SPDX-License-Identifier: Apache-2.0
"""Collective helpers on torch.distributed: a differentiable all_to_all_single with a byte counter, agreement on
input errors before any data moves, and gathers of unevenly sized row blocks."""

import builtins
import dataclasses
import math
from typing import List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

OP = "ShardedEmbeddingBagCollection"


@dataclasses.dataclass
class CommStats:
    """Bytes this rank sent to other ranks (its own block excluded) and the number of collectives it joined."""

    bytes_sent: int = 0
    collectives: int = 0

    def reset(self) -> None:
        self.bytes_sent = self.collectives = 0


def group_rank_size(group) -> tuple:
    return dist.get_rank(group), dist.get_world_size(group)


def global_rank(group, rank: int) -> int:
    """Global rank of `rank` in `group` (the src/dst argument of broadcast and friends)."""
    return rank if group is None or group is dist.group.WORLD else dist.get_global_rank(group, rank)


def _wire(t: Tensor) -> Tensor:
    """16-bit floats travel as bytes (gloo moves neither bfloat16 nor int16); a contiguous [N, ...] tensor becomes
    a uint8 [N, 2 * prod(...)] view, so row splits stay valid and writes land in `t`."""
    if t.dtype not in (torch.float16, torch.bfloat16):
        return t
    rows = t.shape[0] if t.dim() else 1
    return t.reshape(rows, math.prod(t.shape[1:])).view(torch.uint8)


def all_to_all(x: Tensor, send: Sequence[int], recv: Sequence[int], group, stats: Optional[CommStats]) -> Tensor:
    """Rows x[sum(send[:r]):sum(send[:r+1])] go to rank r; returns the concatenation of what every rank sent here
    ([sum(recv), *x.shape[1:]])."""
    out = x.new_empty(sum(recv), *x.shape[1:])
    dist.all_to_all_single(_wire(out), _wire(x.contiguous()), list(recv), list(send), group=group)
    if stats is not None:
        rank = dist.get_rank(group)
        stats.bytes_sent += (sum(send) - send[rank]) * math.prod(x.shape[1:]) * x.element_size()
        stats.collectives += 1
    return out


class AllToAll(torch.autograd.Function):
    """all_to_all with autograd: the backward sends the gradients back along the reversed splits and multiplies
    them by `grad_scale`. `anchor` (an empty grad-requiring tensor) makes every rank record this node, so every
    rank joins the backward collective even when its own `x` does not require grad."""

    @staticmethod
    def forward(ctx, x, anchor, send, recv, group, stats, grad_scale):
        ctx.meta = (send, recv, group, stats, grad_scale)
        return all_to_all(x, send, recv, group, stats)

    @staticmethod
    def backward(ctx, grad):
        send, recv, group, stats, grad_scale = ctx.meta
        if grad_scale != 1.0:
            grad = grad * grad_scale
        return all_to_all(grad, recv, send, group, stats), None, None, None, None, None, None


def agree_on_errors(error: Optional[BaseException], flags: Tensor, group) -> None:
    """Raise the same exception on every rank when any rank's input was rejected.

    `flags` [W] holds 1 for each rank whose input was bad (already exchanged, so every rank holds the same
    values); only then are the messages gathered, so the good path costs no extra collective. The exception type
    of the first bad rank is kept for builtin exceptions (ValueError, TypeError, IndexError, KeyError)."""
    bad = [r for r, f in enumerate(flags.tolist()) if f]
    if not bad:
        return
    rank, world = group_rank_size(group)
    mine = None if error is None else (type(error).__name__, str(error))
    notes: List = [None] * world
    dist.all_gather_object(notes, mine, group=group)
    first = bad[0]
    kind, msg = notes[first] if notes[first] is not None else ("ValueError", "invalid input")
    cls = getattr(builtins, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls = RuntimeError
    others = f" (ranks {bad[1:]} also rejected their input)" if len(bad) > 1 else ""
    text = f"{OP}: input of rank {first} of {world} rejected{others}: {msg}"
    if error is not None and rank == first:
        raise cls(text) from error
    raise cls(text)


def gather_rows(local: Tensor, counts: List[int], group) -> Tensor:
    """Concatenate every rank's `local` [counts[r], *tail] in rank order, on every rank."""
    rank, world = group_rank_size(group)
    if local.shape[0] != counts[rank]:
        raise ValueError(f"{OP}: this rank holds {local.shape[0]} rows, the plan says {counts[rank]}")
    if world == 1:
        return local.clone()
    most = max(counts)
    padded = local.new_zeros(most, *local.shape[1:])
    padded[:local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather([_wire(p) for p in parts], _wire(padded), group=group)
    return torch.cat([p[:n] for p, n in zip(parts, counts)])


def broadcast_rows(local: Tensor, shape, src: int, group) -> Tensor:
    """Rank `src`'s `local` on every rank (the others pass anything: a tensor of `shape` is allocated)."""
    rank, _ = group_rank_size(group)
    buf = local.detach().clone() if rank == src else local.new_empty(shape)
    dist.broadcast(_wire(buf), src=global_rank(group, src), group=group)
    return buf
