# SPDX-License-Identifier: Apache-2.0
"""Plain-PyTorch reference of recops.ops.sampled_softmax_loss: the candidates materialised as an [L, C] id
matrix, gathered, scored with einsum, masked and reduced with logsumexp (the eager composition the fused op
replaces)."""

from typing import Optional

import torch
from torch import Tensor

from .. import _C


def generated_negatives(rows: int, num_negatives: int, num_items: int, seed: int) -> Tensor:
    """The [rows, M] ids the fused kernel draws for `seed` (cpp/losses/sampled_softmax.h: negative_id)."""
    out = torch.empty(rows, num_negatives, dtype=torch.int64)
    _C.sampled_softmax_negatives(rows, num_negatives, num_items, seed, out)
    return out


def candidates(positives: Tensor, negatives: Optional[Tensor], in_batch: bool) -> Tensor:
    """[L, C] candidate ids: the positive, the negatives ([M] shared or [L, M]), then the other rows' positives."""
    L = positives.shape[0]
    cols = [positives[:, None]]
    if negatives is not None:
        cols.append(negatives.expand(L, -1) if negatives.dim() == 1 else negatives)
    if in_batch and L > 1:  # row i: the rows j != i in order, by index arithmetic (no mask: runs on meta too)
        j = torch.arange(L - 1, device=positives.device)
        rows = torch.arange(L, device=positives.device)[:, None]
        cols.append(positives[j + (j >= rows)])
    return torch.cat(cols, dim=1)


def sampled_softmax_loss(queries: Tensor, positives: Tensor, items: Tensor, negatives: Optional[Tensor] = None, *,
                         temperature: float = 1.0, log_q: Optional[Tensor] = None,
                         remove_accidental_hits: bool = True, in_batch: bool = False,
                         reduction: str = "mean") -> Tensor:
    """Reference; negatives are explicit ids ([M] or [L, M]) or None."""
    ids = candidates(positives, negatives, in_batch)
    logits = torch.einsum("ld,lcd->lc", queries, items[ids]) / temperature
    if log_q is not None:
        logits = logits - log_q[ids]
    if remove_accidental_hits:
        hit = ids == positives[:, None]
        hit[:, 0] = False
        logits = logits.masked_fill(hit, float("-inf"))
    loss = torch.logsumexp(logits, dim=1) - logits[:, 0]
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()
