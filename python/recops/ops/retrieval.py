# SPDX-License-Identifier: Apache-2.0
"""Exact top-k retrieval by inner product, fused with the matmul (the [Q, N] score matrix is never built).

Used for full-ranking evaluation and as the exact backend of `recops.retrieval.ExactIndex`. No gradient: the
op has no autograd formula (a backward through it raises); retrieval results are indices.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

from .._runtime import core as _C
from .._runtime import Launch, check_same_device, num_threads

_OP = "topk_inner_product"


def _check(queries: Tensor, items: Tensor, k: int, exclude_offsets: Optional[Tensor], exclude_ids: Optional[Tensor],
           item_bias: Optional[Tensor]) -> None:
    check_same_device(_OP, queries=queries, items=items, exclude_offsets=exclude_offsets, exclude_ids=exclude_ids,
                      item_bias=item_bias)
    for name, t in (("queries", queries), ("items", items), ("item_bias", item_bias)):
        if t is not None and t.dtype != torch.float32:
            raise TypeError(f"{_OP}: {name} must be float32, got {t.dtype}")
    if queries.dim() != 2 or items.dim() != 2:
        raise ValueError(f"{_OP}: queries and items must have 2 dimensions, got {queries.dim()} and {items.dim()}")
    if items.shape[1] != queries.shape[1]:
        raise ValueError(f"{_OP}: items.shape[1] must be {queries.shape[1]} (queries.shape[1]), got {items.shape[1]}")
    if k < 1:
        raise ValueError(f"{_OP}: k must be >= 1, got {k}")
    if item_bias is not None and (item_bias.dim() != 1 or item_bias.shape[0] != items.shape[0]):
        raise ValueError(f"{_OP}: item_bias must have shape [{items.shape[0]}], got {list(item_bias.shape)}")
    if queries.shape[0] * k >= 2**63:
        raise ValueError(f"{_OP}: output size overflows int64, got Q={queries.shape[0]} * k={k}")
    if (exclude_offsets is None) != (exclude_ids is None):
        raise ValueError(f"{_OP}: exclude_ids and exclude_offsets must be given together")
    for name, t in (("exclude_offsets", exclude_offsets), ("exclude_ids", exclude_ids)):
        if t is not None and t.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"{_OP}: {name} must be int32 or int64, got {t.dtype}")


def _i64(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.to(torch.int64).contiguous()


def _outputs(queries: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    q = queries.shape[0]
    return (queries.new_empty(q, k), torch.empty(q, k, dtype=torch.int64, device=queries.device))


@torch.library.custom_op("recops::topk_inner_product", mutates_args=())
def topk_inner_product(queries: Tensor, items: Tensor, k: int, exclude_offsets: Optional[Tensor] = None,
                       exclude_ids: Optional[Tensor] = None,
                       item_bias: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """The k items with the largest inner product (+ item_bias) per query, excluding per-query lists.

    Args:
        queries: [Q, D] float32.
        items: [N, D] float32, same device.
        k: hits per query (>= 1; k > N pads with id -1 and score -inf).
        exclude_offsets: [Q + 1] int32/int64, with exclude_ids [L] int32/int64 in [0, N): the jagged per-query
            lists of item rows never returned (e.g. already-seen items).
        item_bias: [N] float32, added to every query's score of that item.

    Returns:
        (scores [Q, k] float32, ids [Q, k] int64): sorted by score descending, ties broken by the lower id.
        Items whose score is NaN are never returned; fewer than k candidates leave id -1 / score -inf.
    """
    _check(queries, items, k, exclude_offsets, exclude_ids, item_bias)
    scores, ids = _outputs(queries, k)
    ex_ids, ex_off = _i64(exclude_ids), _i64(exclude_offsets)
    args = (queries.detach().contiguous(), items.detach().contiguous(),
            None if item_bias is None else item_bias.detach().contiguous(), ex_ids, ex_off, k, scores, ids)
    def recheck():  # the core's exclusion checks on host copies
        _C.check_topk(None if ex_off is None else ex_off.cpu(), None if ex_ids is None else ex_ids.cpu(),
                      queries.shape[0], items.shape[0])

    with Launch(queries, _OP, recheck) as launch:
        kwargs = {}
        if launch.cuda:
            ws = _C.topk_workspace_numel(queries.shape[0], k)
            kwargs = dict(workspace_scores=torch.empty(ws, dtype=torch.float32, device=queries.device),
                          workspace_ids=torch.empty(ws, dtype=torch.int64, device=queries.device))
        _C.topk_inner_product(*args, num_threads=num_threads(), stream=launch.stream, error_flag=launch.flag,
                              **kwargs)
    launch.raise_errors()
    return scores, ids


@topk_inner_product.register_fake
def _(queries, items, k, exclude_offsets=None, exclude_ids=None, item_bias=None):
    _check(queries, items, k, exclude_offsets, exclude_ids, item_bias)
    return _outputs(queries, k)
