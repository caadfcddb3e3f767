# SPDX-License-Identifier: Apache-2.0
"""The Index base class: the common API over ExactIndex, IVFIndex and HNSWIndex."""

import numpy as np

from . import _base
from ._format import read_index, write_index

_KINDS = {}


def register(kind: str):
    def deco(cls):
        cls.kind = kind
        _KINDS[kind] = cls
        return cls
    return deco


class Index:
    """Top-k inner-product (or cosine) search over vectors with caller-chosen int64 ids.

    Subclasses implement _add(vectors, ids), _remove(rows), _search(queries, k, ex_ids, ex_offsets, params),
    _state() -> (params, arrays) and the classmethod _from_state(*, dim, params, arrays). Searches (and saves)
    from many threads run concurrently (the compiled search releases the GIL); add / remove wait for running
    searches, and new searches wait behind a waiting add / remove (writers first: searches cannot starve them).
    """

    kind = "base"

    def __init__(self, dim: int, metric: str = "ip"):
        self.dim = _base.check_dim(dim)
        self.metric = _base.check_metric(metric)
        self._table = _base.IdTable()
        self._lock = _base.RWLock()

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, metric={self.metric!r}, n={len(self)})"

    def add(self, vectors, ids=None) -> None:
        """Add vectors [n, D] (float numpy or torch; NaN/inf -> ValueError) with integer ids [n] >= 0 (default:
        ids after the largest present). Float ids -> TypeError; negative ids (-1 pads search results), ids above
        2**63 - 1 and duplicates, within the batch or with the index, -> ValueError."""
        op = f"{type(self).__name__}.add"
        x, _ = _base.as_matrix(op, "vectors", vectors, self.dim)
        with self._lock.write():
            ids = self._table.next_ids(op, x.shape[0]) if ids is None else _base.as_ids(op, ids, x.shape[0])
            self._table.check_new(op, ids)
            if self.metric == "cosine":
                x = _base.normalize(x)
            if x.shape[0]:
                self._add(x, ids)

    def remove(self, ids) -> None:
        """Remove the vectors with these ids; an id not in the index -> KeyError (nothing is removed)."""
        with self._lock.write():
            rows = self._table.rows_for_removal(f"{type(self).__name__}.remove", ids)
            if rows.size:
                self._remove(rows)

    def search(self, queries, k: int, *, exclude=None, exclude_offsets=None, **params):
        """Top-k per query. queries [Q, D] float (numpy or torch); exclude: per-query id lists (a sequence of
        Q lists, or flat ids with exclude_offsets [Q + 1]) never returned; ids not in the index are ignored.
        Returns (scores [Q, k] float32, ids [Q, k] int64) as numpy or torch like the queries, sorted by score
        descending; fewer than k hits -> id -1, score -inf (ids are >= 0, so -1 is never a real id). Scores are inner products (cosine similarities for
        metric="cosine")."""
        op = f"{type(self).__name__}.search"
        k = _base.check_k(op, k)
        q, as_torch = _base.as_matrix(op, "queries", queries, self.dim)
        ex_ids, ex_off = _base.as_exclusions(op, exclude, exclude_offsets, q.shape[0])
        if self.metric == "cosine":
            q = _base.normalize(q)
        with self._lock.read():
            if len(self) == 0 or q.shape[0] == 0:
                scores = np.full((q.shape[0], k), -np.inf, np.float32)
                ids = np.full((q.shape[0], k), -1, np.int64)
            else:
                scores, ids = self._search(q, k, ex_ids, ex_off, params)
        return _base.results(scores, ids, as_torch)

    def save(self, path: str) -> None:
        """Write the index to `path` (recops index format: versioned, checksummed, atomically renamed)."""
        with self._lock.read():
            params, arrays = self._state()
            write_index(path, self.kind, self.dim, len(self),
                        dict(params, metric=self.metric), dict(arrays, ids=self._table.ids))

    def _check_ids(self, arrays, n):
        ids = arrays.get("ids")
        if ids is None or ids.shape != (n,):
            raise ValueError(f"recops.retrieval.load: ids must have shape ({n},)")
        if np.unique(ids).shape[0] != n:
            raise ValueError("recops.retrieval.load: ids must be unique")
        if n and int(ids.min()) < 0:
            raise ValueError(f"recops.retrieval.load: ids must be >= 0, got {int(ids.min())}")
        self._table.set(ids)


def load(path: str) -> Index:
    """Read an index written by Index.save. A truncated, corrupted, wrong-version or inconsistent file raises
    ValueError (nothing is read out of bounds and no code is unpickled)."""
    header, arrays = read_index(path)
    cls = _KINDS.get(header["kind"])
    if cls is None:
        raise ValueError(f"recops.retrieval.load: {path}: unknown index kind {header['kind']!r}")
    try:
        dim, count, params = int(header["dim"]), int(header["count"]), dict(header["params"])
        index = cls._from_state(dim=dim, params=params, arrays=arrays)
        index._check_ids(arrays, count)
    except (KeyError, TypeError) as e:
        raise ValueError(f"recops.retrieval.load: {path}: inconsistent index ({e!r})") from None
    return index
