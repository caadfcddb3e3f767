# SPDX-License-Identifier: Apache-2.0
"""ExactIndex: brute-force top-k through the fused op recops.ops.topk_inner_product."""

import numpy as np
import torch

from ..ops.retrieval import topk_inner_product
from ._index import Index, register


def rows_exclusions(table, ex_ids, ex_offsets):
    """Map per-query exclusion lists of ids to lists of rows, dropping ids not in the index."""
    rows = table.rows(ex_ids)
    keep = rows >= 0
    query_of = np.repeat(np.arange(ex_offsets.shape[0] - 1), np.diff(ex_offsets))
    offsets = np.zeros_like(ex_offsets)
    offsets[1:] = np.cumsum(np.bincount(query_of[keep], minlength=ex_offsets.shape[0] - 1))
    return np.ascontiguousarray(rows[keep]), offsets


@register("exact")
class ExactIndex(Index):
    """Exact top-k by inner product (metric="ip") or cosine similarity (metric="cosine"). Stores the vectors
    as float32 [n, D]; a search scores every vector with the fused matmul + top-k kernel. Ties are broken by
    insertion order."""

    def __init__(self, dim: int, metric: str = "ip"):
        super().__init__(dim, metric)
        self._vectors = np.zeros((0, self.dim), np.float32)

    def _add(self, x, ids):
        self._vectors = np.concatenate([self._vectors, x])
        self._table.set(np.concatenate([self._table.ids, ids]))

    def _remove(self, rows):
        keep = np.ones(len(self), bool)
        keep[rows] = False
        self._vectors = np.ascontiguousarray(self._vectors[keep])
        self._table.set(self._table.ids[keep])

    def _search(self, q, k, ex_ids, ex_offsets, params):
        if params:
            raise TypeError(f"ExactIndex.search: unknown parameters {sorted(params)}")
        kw = {}
        if ex_ids is not None:
            rows, offsets = rows_exclusions(self._table, ex_ids, ex_offsets)
            kw = dict(exclude_ids=torch.from_numpy(rows), exclude_offsets=torch.from_numpy(offsets))
        scores, rows = topk_inner_product(torch.from_numpy(q), torch.from_numpy(self._vectors), k, **kw)
        rows = rows.numpy()
        return scores.numpy(), np.where(rows >= 0, self._table.ids[np.maximum(rows, 0)], -1)

    def _state(self):
        return {}, {"vectors": self._vectors}

    @classmethod
    def _from_state(cls, *, dim, params, arrays):
        index = cls(dim, metric=params["metric"])
        v = arrays["vectors"]
        if v.dtype != np.float32 or v.ndim != 2 or v.shape[1] != dim:
            raise ValueError(f"recops.retrieval.load: vectors must be float32 [n, {dim}], got {v.dtype} {v.shape}")
        if v.size and not np.isfinite(v).all():
            raise ValueError("recops.retrieval.load: vectors must be finite")
        index._vectors = v
        return index
