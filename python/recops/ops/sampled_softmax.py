# SPDX-License-Identifier: Apache-2.0
"""Fused sampled softmax: cross-entropy of each row's positive item among sampled candidates, without building
the [L, C, D] gather or the [L, C] logits in memory (cpp/losses/sampled_softmax.h).

Used by the sequential models with per-position negatives (the HSTU / SASRec reference recipe draws
`num_negatives` uniform negatives for every supervised position) and by the retrieval objectives (in-batch
negatives with logQ correction)."""

import operator
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._runtime import core as _C
from .._runtime import Launch, check_same_device, num_threads
from . import sampled_softmax_ref as _ref

_OP = "sampled_softmax_loss"
_REDUCTIONS = ("none", "sum", "mean")
_HAS_CUDA = _C.has_cuda()  # read once: a constant under torch.compile


def _int_arg(name: str, value) -> int:
    """A Python int from an integer-like argument (int, numpy or 0-d integer tensor); TypeError otherwise."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{_OP}: {name} must be an integer, got {type(value).__name__} {value!r}") from None


def _check(queries: Tensor, positives: Tensor, items: Tensor, negatives: Optional[Tensor],
           log_q: Optional[Tensor], num_negatives: int, temperature: float, seed: Optional[int] = None) -> None:
    """Every check that needs no data (run by the wrapper and by the ops' bodies and fake kernels)."""
    check_same_device(_OP, queries=queries, positives=positives, items=items, negatives=negatives, log_q=log_q)
    if queries.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{_OP}: queries must be float32 or float64, got {queries.dtype}")
    for name, t in (("items", items), ("log_q", log_q)):
        if t is not None and t.dtype != queries.dtype:
            raise TypeError(f"{_OP}: {name} must have the dtype of queries ({queries.dtype}), got {t.dtype}")
    for name, t in (("positives", positives), ("negatives", negatives)):
        if t is not None and t.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"{_OP}: {name} must be int32 or int64, got {t.dtype}")
    if queries.dim() != 2 or items.dim() != 2:
        raise ValueError(f"{_OP}: queries and items must have 2 dimensions, got {queries.dim()} and {items.dim()}")
    if items.shape[1] != queries.shape[1]:
        raise ValueError(f"{_OP}: items.shape[1] must be {queries.shape[1]} (queries.shape[1]), got {items.shape[1]}")
    if positives.dim() != 1 or positives.shape[0] != queries.shape[0]:
        raise ValueError(f"{_OP}: positives must have shape [{queries.shape[0]}], got {list(positives.shape)}")
    if negatives is not None and not (negatives.dim() == 1 or
                                      (negatives.dim() == 2 and negatives.shape[0] == queries.shape[0])):
        raise ValueError(f"{_OP}: negatives must be [M] or [L={queries.shape[0]}, M], got {list(negatives.shape)}")
    if log_q is not None and (log_q.dim() != 1 or log_q.shape[0] != items.shape[0]):
        raise ValueError(f"{_OP}: log_q must have shape [{items.shape[0]}], got {list(log_q.shape)}")
    num_negatives = _int_arg("num_negatives", num_negatives)
    if not 0 <= num_negatives < 2**63:
        raise ValueError(f"{_OP}: num_negatives must be in [0, 2^63), got {num_negatives}")
    if negatives is not None and num_negatives != negatives.shape[-1]:
        raise ValueError(f"{_OP}: num_negatives must match negatives.shape[-1]={negatives.shape[-1]}, "
                         f"got {num_negatives}")
    try:
        temperature = float(temperature)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{_OP}: temperature must be a real number, got {temperature!r}") from None
    if not 0 < temperature < float("inf"):
        raise ValueError(f"{_OP}: temperature must be finite and > 0, got {temperature}")
    if 1.0 / temperature > torch.finfo(queries.dtype).max:  # every logit is scaled by 1/temperature in this dtype
        raise ValueError(f"{_OP}: 1/temperature overflows {queries.dtype}, got temperature={temperature}")
    if seed is not None and not 0 <= _int_arg("seed", seed) < 2**63:
        raise ValueError(f"{_OP}: seed must be in [0, 2^63), got {seed}")


def _i64(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.to(torch.int64).contiguous()


def _core_args(queries, items, positives, negatives, log_q, num_negatives, seed, temperature, in_batch,
               remove_accidental_hits):
    generate = negatives is None and num_negatives > 0
    m = negatives.shape[-1] if negatives is not None else num_negatives
    return ((queries.detach().contiguous(), items.detach().contiguous(), _i64(positives), _i64(negatives),
             None if log_q is None else log_q.detach().contiguous()),
            dict(num_negatives=m, generate=generate, seed=seed, inv_temperature=1.0 / temperature,
                 in_batch=in_batch, remove_accidental_hits=remove_accidental_hits))


def _fused_cuda(queries: Tensor) -> bool:
    """Whether queries' call runs the fused CUDA kernels: a CUDA build of recops, CUDA tensors, float32 (off the
    CPU anything else, float64 on CUDA included, runs the plain-PyTorch composition)."""
    return _HAS_CUDA and queries.is_cuda and queries.dtype == torch.float32


def _call(kernel, args, kw, lead=(), trail=(), **out) -> None:
    """kernel(*lead, *args, *trail, **kw, **out) (a _C sampled-softmax entry point, args from _core_args): on the
    CPU directly, on CUDA through Launch, whose device error flag (an id outside [0, V), a non-finite log_q)
    becomes the CPU core's ValueError: `recheck` reruns its checks on host copies."""
    queries, items, positives, negatives, log_q = args
    if not queries.is_cuda:
        kernel(*lead, *args, *trail, **kw, **out, num_threads=num_threads())
        return

    def recheck():
        _C.check_sampled_softmax(positives.cpu(), None if negatives is None else negatives.cpu(),
                                 None if log_q is None else log_q.cpu(), dim=queries.shape[1],
                                 num_items=items.shape[0], num_negatives=kw["num_negatives"],
                                 generate=kw["generate"], inv_temperature=kw["inv_temperature"],
                                 in_batch=kw["in_batch"])

    with Launch(queries, _OP, recheck) as launch:
        kernel(*lead, *args, *trail, **kw, **out, num_threads=num_threads(), stream=launch.stream,
               error_flag=launch.flag)
    launch.raise_errors()


@torch.library.custom_op("recops::sampled_softmax", mutates_args=())
def _sampled_softmax(queries: Tensor, items: Tensor, positives: Tensor, negatives: Optional[Tensor],
                     log_q: Optional[Tensor], num_negatives: int, seed: int, temperature: float, in_batch: bool,
                     remove_accidental_hits: bool) -> Tuple[Tensor, Tensor]:
    """(loss [L], lse [L]) per row; see sampled_softmax_loss."""
    _check(queries, positives, items, negatives, log_q, num_negatives, temperature, seed)
    loss = queries.new_empty(queries.shape[0])
    lse = queries.new_empty(queries.shape[0])
    args, kw = _core_args(queries, items, positives, negatives, log_q, num_negatives, seed, temperature, in_batch,
                          remove_accidental_hits)
    _call(_C.sampled_softmax_forward, args, kw, loss=loss, lse=lse)
    return loss, lse


@_sampled_softmax.register_fake
def _(queries, items, positives, negatives, log_q, num_negatives, seed, temperature, in_batch,
      remove_accidental_hits):
    _check(queries, positives, items, negatives, log_q, num_negatives, temperature, seed)
    return queries.new_empty(queries.shape[0]), queries.new_empty(queries.shape[0])


def _check_backward(grad_loss, queries, items, positives, negatives, log_q, lse, num_negatives, seed, temperature):
    check_same_device(_OP, queries=queries, grad_loss=grad_loss, lse=lse)
    _check(queries, positives, items, negatives, log_q, num_negatives, temperature, seed)


@torch.library.custom_op("recops::sampled_softmax_backward", mutates_args=())
def _sampled_softmax_backward(grad_loss: Tensor, queries: Tensor, items: Tensor, positives: Tensor,
                              negatives: Optional[Tensor], log_q: Optional[Tensor], lse: Tensor, num_negatives: int,
                              seed: int, temperature: float, in_batch: bool,
                              remove_accidental_hits: bool) -> Tuple[Tensor, Tensor]:
    """(grad_queries [L, D], grad_items [V, D]) of the per-row loss for grad_loss [L]."""
    _check_backward(grad_loss, queries, items, positives, negatives, log_q, lse, num_negatives, seed, temperature)
    gq = torch.empty_like(queries, memory_format=torch.contiguous_format)
    gi = torch.empty_like(items, memory_format=torch.contiguous_format)
    args, kw = _core_args(queries, items, positives, negatives, log_q, num_negatives, seed, temperature, in_batch,
                          remove_accidental_hits)
    _call(_C.sampled_softmax_backward, args, kw, lead=(grad_loss.contiguous(),), trail=(lse.contiguous(),),
          grad_queries=gq, grad_items=gi)
    return gq, gi


@_sampled_softmax_backward.register_fake
def _(grad_loss, queries, items, positives, negatives, log_q, lse, num_negatives, seed, temperature, in_batch,
      remove_accidental_hits):
    _check_backward(grad_loss, queries, items, positives, negatives, log_q, lse, num_negatives, seed, temperature)
    return (torch.empty_like(queries, memory_format=torch.contiguous_format),
            torch.empty_like(items, memory_format=torch.contiguous_format))


def _setup(ctx, inputs, output):
    queries, items, positives, negatives, log_q, *rest = inputs
    ctx.rest = rest
    ctx.save_for_backward(queries, items, positives, negatives, log_q, output[1])


def _backward(ctx, grad_loss, _grad_lse):
    queries, items, positives, negatives, log_q, lse = ctx.saved_tensors
    gq, gi = _sampled_softmax_backward(grad_loss, queries, items, positives, negatives, log_q, lse, *ctx.rest)
    return (gq if ctx.needs_input_grad[0] else None, gi if ctx.needs_input_grad[1] else None,
            None, None, None, None, None, None, None, None)


_sampled_softmax.register_autograd(_backward, setup_context=_setup)


def sampled_softmax_loss(queries: Tensor, positives: Tensor, items: Tensor, negatives: Optional[Tensor] = None, *,
                         num_negatives: Optional[int] = None, temperature: float = 1.0,
                         log_q: Optional[Tensor] = None, remove_accidental_hits: bool = True,
                         in_batch: bool = False, reduction: str = "mean",
                         generator: Optional[torch.Generator] = None, seed: Optional[int] = None) -> Tensor:
    """Cross-entropy of each row's positive among sampled candidates, fused (op `recops::sampled_softmax`).

    Row i scores its positive `positives[i]`, then the negatives, then (in_batch) the positives of the other
    rows: logit = (queries[i] . items[id]) / temperature - log_q[id]. With remove_accidental_hits, a negative
    equal to the row's positive is masked. loss_i = logsumexp(logits) - logit of the positive.

    Args:
        queries: [L, D] float32 / float64 (e.g. the sequence model's output at every supervised position).
        positives: [L] int32/int64 row ids into items, in [0, V).
        items: [V, D], queries' dtype and device (gradient accumulated into the rows used; dense [V, D] result).
        negatives: [M] ids shared by every row, [L, M] per-row ids, or None.
        num_negatives: with negatives None, M uniform negatives per row drawn inside the kernel from a
            counter-based generator keyed by (seed, row, j): the backward regenerates them, nothing [L, M] is
            stored. The seed comes from `seed` or is drawn from `generator` (torch's default generator if None),
            so runs repeat under torch.manual_seed. recops.ops.sampled_softmax_ref.generated_negatives gives the ids.
            Under torch.compile(fullgraph=True) pass `seed` (drawing it reads a tensor on the host, a graph break).
        temperature: > 0. log_q: [V] log sampling probability of each item (logQ correction, Yi et al. 2019),
            subtracted from every candidate including the positive; no gradient.
        in_batch: add the other rows' positives as negatives (a repeat of the row's own positive is an
            accidental hit). reduction: "mean", "sum" or "none" ([L]).

    Returns:
        The loss (scalar, or [L] for reduction "none"); differentiable w.r.t. queries and items.
        On CUDA, float32 runs the fused CUDA kernels (cuda/losses/losses_cuda.h; float32 math; the same candidates
        and masking, bad ids and a non-finite log_q raise the CPU's ValueError). Their item gradient is
        accumulated with float atomics, so unlike the CPU's it is not bitwise reproducible from run to run (the
        loss and the query gradient are). float64 on CUDA, and CUDA tensors with a CPU-only build of recops, use
        the plain-PyTorch composition (sampled_softmax_ref).
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{_OP}: reduction must be 'none', 'sum' or 'mean', got {reduction!r}")
    if num_negatives is None:
        num_negatives = negatives.shape[-1] if negatives is not None and negatives.dim() > 0 else 0
    _check(queries, positives, items, negatives, log_q, num_negatives, temperature, seed)
    m = _int_arg("num_negatives", num_negatives)
    if negatives is None and m > 0 and seed is None:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    seed = 0 if seed is None else _int_arg("seed", seed)
    if queries.device.type != "cpu" and not _fused_cuda(queries):
        if negatives is None and m > 0:
            negatives = _ref.generated_negatives(queries.shape[0], m, items.shape[0], seed).to(queries.device)
        return _ref.sampled_softmax_loss(queries, positives, items, negatives, temperature=temperature, log_q=log_q,
                                         remove_accidental_hits=remove_accidental_hits, in_batch=in_batch,
                                         reduction=reduction)
    loss, _ = _sampled_softmax(queries, items, positives, negatives, log_q, m, seed, float(temperature),
                               bool(in_batch), bool(remove_accidental_hits))
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()
