# SPDX-License-Identifier: Apache-2.0
"""HNSWIndex: a thin adapter over the optional `hnswlib` package (pip install recops[hnsw])."""

import os
import tempfile

import numpy as np

from .._runtime import num_threads
from ._index import Index, register


def _hnswlib():
    try:
        import hnswlib
    except ImportError:
        raise ImportError("HNSWIndex needs the optional hnswlib package: pip install 'recops[hnsw]'") from None
    return hnswlib


@register("hnsw")
class HNSWIndex(Index):
    """HNSW graph search from hnswlib behind the recops Index API (ids, exclusions, persistence, locking).

    metric "ip" uses hnswlib's inner-product space (scores = inner products); "cosine" normalises vectors and
    queries. Ids are non-negative as in every index. `search(..., ef=...)` sets the search
    breadth (default max(ef_search, k)). Exclusions use hnswlib's per-query filter (one query at a time).
    Removed vectors are marked deleted in the graph. Note: hnswlib's graph is built for metric distances; with
    inner product and widely varying norms its recall plateaus (see the retrieval benchmark).
    """

    def __init__(self, dim: int, metric: str = "ip", M: int = 16, ef_construction: int = 200, ef_search: int = 64,
                 seed: int = 100):
        super().__init__(dim, metric)
        for name, v in (("M", M), ("ef_construction", ef_construction), ("ef_search", ef_search)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"HNSWIndex: {name} must be an integer >= 1, got {v!r}")
        self.M, self.ef_construction, self.ef_search, self.seed = int(M), int(ef_construction), int(ef_search), seed
        self._graph = _hnswlib().Index(space="ip", dim=self.dim)
        self._graph.init_index(max_elements=16, M=self.M, ef_construction=self.ef_construction, random_seed=seed)

    def _add(self, x, ids):
        need = self._graph.get_current_count() + x.shape[0]  # deleted elements keep their slots
        if need > self._graph.get_max_elements():
            self._graph.resize_index(max(need, 2 * self._graph.get_max_elements()))
        self._graph.add_items(x, ids, num_threads=num_threads())
        self._table.set(np.concatenate([self._table.ids, ids]))

    def _remove(self, rows):
        for label in self._table.ids[rows]:
            self._graph.mark_deleted(int(label))
        keep = np.ones(len(self), bool)
        keep[rows] = False
        self._table.set(self._table.ids[keep])

    def _search(self, q, k, ex_ids, ex_offsets, params):
        ef = params.pop("ef", max(self.ef_search, k))
        if params:
            raise TypeError(f"HNSWIndex.search: unknown parameters {sorted(params)}")
        kk = min(k, len(self))
        self._graph.set_ef(max(int(ef), kk))
        scores = np.full((q.shape[0], k), -np.inf, np.float32)
        ids = np.full((q.shape[0], k), -1, np.int64)
        if ex_ids is None:
            try:
                labels, dist = self._graph.knn_query(q, k=kk, num_threads=num_threads())
                ids[:, :kk], scores[:, :kk] = labels.astype(np.int64), 1.0 - dist
                return scores, ids
            except RuntimeError:  # fewer than kk reachable hits for some query: answer one at a time below
                pass
        for i in range(q.shape[0]):
            banned = set() if ex_ids is None else set(ex_ids[ex_offsets[i]:ex_offsets[i + 1]].tolist())
            m = kk
            while m > 0:
                try:
                    labels, dist = self._graph.knn_query(q[i:i + 1], k=m, num_threads=1,
                                                         filter=(lambda label: label not in banned) if banned
                                                         else None)
                    break
                except RuntimeError:
                    m -= 1
            if m:
                ids[i, :m], scores[i, :m] = labels[0].astype(np.int64), 1.0 - dist[0]
        return scores, ids

    def _state(self):
        fd, tmp = tempfile.mkstemp(prefix=".recops-hnsw-")
        os.close(fd)
        try:
            self._graph.save_index(tmp)
            with open(tmp, "rb") as f:
                graph = np.frombuffer(f.read(), np.uint8)
        finally:
            os.unlink(tmp)
        return dict(M=self.M, ef_construction=self.ef_construction, ef_search=self.ef_search,
                    seed=self.seed), {"graph": graph}

    @classmethod
    def _from_state(cls, *, dim, params, arrays):
        index = cls(dim, metric=params["metric"], M=params["M"], ef_construction=params["ef_construction"],
                    ef_search=params["ef_search"], seed=params["seed"])
        graph = arrays.get("graph")
        if graph is None or graph.dtype != np.uint8 or graph.ndim != 1:
            raise ValueError("recops.retrieval.load: an HNSW index needs its graph bytes")
        fd, tmp = tempfile.mkstemp(prefix=".recops-hnsw-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(graph.tobytes())
            # The checksum catches corruption, not forgery: hnswlib parses these bytes (load trusted files).
            index._graph.load_index(tmp, max_elements=0)
        finally:
            os.unlink(tmp)
        ids = arrays.get("ids")
        if ids is not None and ids.ndim == 1 and ids.size:  # what add() validated: every id there, finite vectors
            if not np.isin(ids, np.asarray(index._graph.get_ids_list(), np.int64)).all():
                raise ValueError("recops.retrieval.load: the HNSW graph does not hold every id of the index")
            if not np.isfinite(index._graph.get_items(ids)).all():
                raise ValueError("recops.retrieval.load: vectors must be finite")
        return index
