# SPDX-License-Identifier: Apache-2.0
"""Pure-PyTorch references for the retrieval family (slow, obviously correct)."""

from typing import Optional, Tuple

import torch
from torch import Tensor


def topk_inner_product(queries: Tensor, items: Tensor, k: int, exclude_offsets: Optional[Tensor] = None,
                       exclude_ids: Optional[Tensor] = None,
                       item_bias: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Reference implementation; slow. Same contract as recops.ops.topk_inner_product: materialises the full
    [Q, N] score matrix, drops excluded and NaN scores, then sorts by (score descending, id ascending)."""
    if k < 1:
        raise ValueError(f"topk_inner_product: k must be >= 1, got {k}")
    nq, n = queries.shape[0], items.shape[0]
    scores = queries.float() @ items.float().T
    if item_bias is not None:
        scores = scores + item_bias.float()
    candidate = ~torch.isnan(scores)
    if exclude_ids is not None:
        ids = exclude_ids.long()
        if ids.numel() and (ids.min() < 0 or ids.max() >= n):
            bad = int(torch.nonzero((ids < 0) | (ids >= n))[0, 0])
            raise ValueError(f"topk_inner_product: exclude_ids[{bad}] must be in [0, {n}), got {int(ids[bad])}")
        rows = torch.repeat_interleave(torch.arange(nq, device=scores.device), exclude_offsets.long().diff())
        candidate[rows, ids] = False
    # Stable sorts: score descending keeps ascending ids among ties; then candidates before non-candidates.
    order = torch.sort(torch.where(candidate, scores, float("-inf")), dim=1, descending=True, stable=True).indices
    order = order.gather(1, torch.sort(candidate.gather(1, order).to(torch.int8), dim=1, descending=True,
                                       stable=True).indices)
    m = min(k, n)
    top = order[:, :m]
    ok = candidate.gather(1, top)
    out_scores = torch.full((nq, k), float("-inf"), dtype=torch.float32, device=queries.device)
    out_ids = torch.full((nq, k), -1, dtype=torch.int64, device=queries.device)
    out_scores[:, :m] = torch.where(ok, scores.gather(1, top), float("-inf"))
    out_ids[:, :m] = torch.where(ok, top, -1)
    return out_scores, out_ids


exact_topk = topk_inner_product
