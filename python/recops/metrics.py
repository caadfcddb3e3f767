# SPDX-License-Identifier: Apache-2.0
"""Ranking metrics and full-corpus top-k with history exclusion."""

import math
from typing import Dict, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .ops import topk_inner_product


def topk_with_exclusion(queries: Tensor, items: Tensor, k: int, exclude_ids: Optional[Tensor] = None,
                        exclude_offsets: Optional[Tensor] = None):
    """(scores [Q, k], ids [Q, k]) of the top-k inner products, skipping each query's excluded ids (k is capped at
    the number of items). Runs recops.ops.topk_inner_product: no [Q, N] score matrix is built."""
    k = min(k, items.shape[0])
    return topk_inner_product(queries, items, k, exclude_offsets=exclude_offsets, exclude_ids=exclude_ids)


def ranks_of(target: Tensor, topk_ids: Tensor) -> Tensor:
    """1-based rank of each row's target within its top-k ids, +inf where it is absent."""
    hit = topk_ids == target[:, None]
    pos = torch.argmax(hit.int(), dim=1).double() + 1
    return torch.where(hit.any(1), pos, torch.full_like(pos, math.inf))


def ranking_metrics(ranks: Tensor, ks: Iterable[int] = (10, 50, 200)) -> Dict[str, float]:
    """HR@K = mean(rank <= K), NDCG@K = mean(1/log2(rank + 1) if rank <= K), MRR = mean(1/rank) (ranks beyond
    the evaluated top-k count 0). ranks: 1-based, +inf for a miss."""
    ranks = ranks.double()
    out = {}
    n = max(ranks.numel(), 1)
    for k in ks:
        hit = ranks <= k
        out[f"HR@{k}"] = hit.sum().item() / n
        out[f"NDCG@{k}"] = torch.where(hit, 1.0 / torch.log2(ranks + 1), torch.zeros_like(ranks)).sum().item() / n
    out["MRR"] = torch.where(torch.isfinite(ranks), 1.0 / ranks, torch.zeros_like(ranks)).sum().item() / n
    return out


def roc_auc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve (ties count one half; Mann-Whitney U from average ranks). NaN when only one class
    is present."""
    scores, labels = scores.detach().double().flatten().cpu(), labels.detach().flatten().cpu() > 0.5
    npos = int(labels.sum())
    nneg = labels.numel() - npos
    if npos == 0 or nneg == 0:
        return float("nan")
    order = torch.argsort(scores)
    s = scores[order]
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, s.numel() + 1, dtype=torch.float64)
    # average ranks over ties
    uniq, inverse, counts = torch.unique(s, return_inverse=True, return_counts=True)
    if uniq.numel() != s.numel():
        sums = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(0, inverse, ranks[order])
        ranks[order] = (sums / counts)[inverse]
    return float((ranks[labels].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def grouped_auc(scores: Tensor, labels: Tensor, groups: Tensor) -> float:
    """GAUC: the AUC within each group (user) that has both classes, averaged with weights = the group's number of
    samples. NaN when no group has both classes."""
    groups = groups.detach().flatten().cpu()
    order = torch.argsort(groups, stable=True)
    g, s, y = groups[order], scores.detach().flatten().cpu()[order], labels.detach().flatten().cpu()[order]
    _, counts = torch.unique_consecutive(g, return_counts=True)
    total = weight = 0.0
    start = 0
    for c in counts.tolist():
        yy = y[start:start + c] > 0.5
        if 0 < int(yy.sum()) < c:
            total += c * roc_auc(s[start:start + c], yy)
            weight += c
        start += c
    return total / weight if weight else float("nan")


def log_loss(probabilities: Tensor, labels: Tensor, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities against 0/1 labels (probabilities clipped to [eps, 1 - eps])."""
    p = probabilities.detach().double().flatten().clamp(eps, 1 - eps)
    y = labels.detach().double().flatten()
    return float(F.binary_cross_entropy(p, y)) if p.numel() else float("nan")
