# SPDX-License-Identifier: Apache-2.0
"""IVFIndex: inverted lists of scalar-quantised vectors with an exact re-rank, trained in C++ in seconds."""

import math

import numpy as np
import torch

from .._runtime import core as _C
from .._runtime import num_threads
from ..ops.retrieval import topk_inner_product
from ._base import normalize
from ._index import Index, register

_STORAGE = {"fp32": 0, "fp16": 1, "int8": 2}
# constructor arguments saved in the file header (with the base class's metric), passed back by name on load
_SAVED_ARGS = ("nlist", "storage", "rerank", "nprobe", "kmeans_iters", "seed", "norm_buckets")


@register("ivf")
class IVFIndex(Index):
    """Approximate top-k by inner product (or cosine) with an inverted-file index.

    Build (on the first `add`): spherical k-means (C++, multi-threaded, `kmeans_iters` rounds on a sample of
    min(n, 64 * nlist) vector directions) gives nlist directions; each vector goes to the list of (its nearest
    direction, its norm bucket), the norm buckets being `norm_buckets` quantile ranges of the training norms.
    Norm-aware probing: list l is ranked for a query by max_norm(l) * dot(query, direction(l)), an estimate of
    the best score in l, so the large-norm items that inner-product search wants are reached first and lists
    of small-norm items are not scanned just because their direction matches (plain k-means on raw vectors
    strands large-norm items in a few far lists; measured on clustered data with spread norms, norm buckets
    raise recall@10 at equal scanned fraction, e.g. 0.92 -> 0.96). Vectors are stored as `storage` codes
    ("int8": per-dimension scalar quantisation with ranges from the first batch; "fp16"; "fp32") scanned with
    SIMD, plus float32 copies for the exact re-rank of the best rerank * k candidates (rerank = 0: no re-rank,
    approximate scores are returned).

    Args:
        dim, metric: vector size; "ip" or "cosine".
        nlist: number of k-means directions (default round(sqrt(n)) of the first batch, at least 1); the index
            has nlist * norm_buckets lists.
        storage: "int8" (default), "fp16" or "fp32".
        rerank: candidates per hit re-scored exactly (default 4; 0 for fp32 storage).
        nprobe: lists probed per query (default 64; `search(..., nprobe=...)` overrides).
        kmeans_iters, seed: training rounds and seed (training is deterministic for a seed).
        norm_buckets: norm ranges per direction (default 4 for "ip", 1 for "cosine", where all norms are 1).
    Memory: 4 + (1 | 2 | 4) bytes per dimension per vector, + 16 bytes per vector (id, list).
    """

    def __init__(self, dim: int, metric: str = "ip", nlist=None, storage: str = "int8", rerank=None,
                 nprobe: int = 64, kmeans_iters: int = 10, seed: int = 0, norm_buckets=None):
        super().__init__(dim, metric)
        if storage not in _STORAGE:
            raise ValueError(f"IVFIndex: storage must be 'int8', 'fp16' or 'fp32', got {storage!r}")
        for name, v, lo in (("nlist", nlist, 1), ("rerank", rerank, 0), ("nprobe", nprobe, 1),
                            ("kmeans_iters", kmeans_iters, 0), ("norm_buckets", norm_buckets, 1)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo):
                raise ValueError(f"IVFIndex: {name} must be an integer >= {lo}, got {v!r}")
        self.nlist = nlist
        self.storage = storage
        self.rerank = (0 if storage == "fp32" else 4) if rerank is None else int(rerank)
        self.nprobe = int(nprobe)
        self.kmeans_iters = int(kmeans_iters)
        self.seed = int(seed)
        self.norm_buckets = (1 if metric == "cosine" else 4) if norm_buckets is None else int(norm_buckets)
        self._norm_edges = np.zeros(self.norm_buckets - 1, np.float32)
        self._centroids = None  # [nlist, D] unit directions once trained
        self._vmin = np.zeros(self.dim, np.float32)
        self._vscale = np.ones(self.dim, np.float32)
        self._empty_arrays()

    def _empty_arrays(self):
        self._vectors = np.zeros((0, self.dim), np.float32)
        self._codes = self._encode(self._vectors)
        self._lists = np.zeros(0, np.int64)
        self._offsets = np.zeros(self._num_lists() + 1, np.int64)
        self._scale = np.zeros(self._num_lists(), np.float32)

    def _num_lists(self):
        return 0 if self._centroids is None else len(self._centroids) * self.norm_buckets

    @property
    def num_centroids(self) -> int:
        """k-means directions of the trained index (the nlist in use; 0 before the first add)."""
        return 0 if self._centroids is None else len(self._centroids)

    @property
    def is_trained(self) -> bool:
        return self._centroids is not None

    def _encode(self, x):
        if self.storage == "fp32":
            return x
        if self.storage == "fp16":
            return np.ascontiguousarray(x.astype(np.float16).view(np.uint16))
        return np.ascontiguousarray(np.clip(np.rint((x - self._vmin) / self._vscale), 0, 255).astype(np.uint8))

    def _train(self, x):
        n = x.shape[0]
        nlist = min(self.nlist or max(1, round(math.sqrt(n))), n)
        rng = np.random.default_rng(self.seed)
        sample = x if n <= 64 * nlist else x[np.sort(rng.choice(n, 64 * nlist, replace=False))]
        centroids = np.empty((nlist, self.dim), np.float32)
        _C.kmeans(normalize(sample), nlist, self.kmeans_iters, self.seed, True, centroids, num_threads=num_threads())
        self._centroids = centroids
        self._norm_edges = np.quantile(np.linalg.norm(sample, axis=1),
                                       np.arange(1, self.norm_buckets) / self.norm_buckets).astype(np.float32)
        lo, hi = x.min(0), x.max(0)
        self._vmin = lo.astype(np.float32)
        self._vscale = np.where(hi > lo, (hi - lo) / 255.0, 1.0).astype(np.float32)
        self._empty_arrays()

    def _assign(self, x):
        """List of each row: (direction cluster, norm bucket) -> cluster * norm_buckets + bucket."""
        _, lists = topk_inner_product(torch.from_numpy(normalize(x)), torch.from_numpy(self._centroids), 1)
        lists = np.maximum(lists.numpy()[:, 0], 0)  # -1 only for an all-NaN row, which add() rejects
        return lists * self.norm_buckets + np.searchsorted(self._norm_edges, np.linalg.norm(x, axis=1), "right")

    def _rebuild(self, vectors, codes, lists, ids):
        """Store rows grouped by list (stable), with list offsets and per-list max norms."""
        order = np.argsort(lists, kind="stable")
        self._vectors = np.ascontiguousarray(vectors[order])
        self._codes = np.ascontiguousarray(codes[order])
        self._lists = np.ascontiguousarray(lists[order])
        self._table.set(np.ascontiguousarray(ids[order]))
        nlist = self._num_lists()
        self._list_centroids = np.ascontiguousarray(np.repeat(self._centroids, self.norm_buckets, axis=0))
        self._offsets = np.zeros(nlist + 1, np.int64)
        self._offsets[1:] = np.cumsum(np.bincount(self._lists, minlength=nlist))
        self._scale = np.zeros(nlist, np.float32)
        np.maximum.at(self._scale, self._lists, np.linalg.norm(self._vectors, axis=1))

    def _add(self, x, ids):
        if not self.is_trained:
            self._train(x)
        self._rebuild(np.concatenate([self._vectors, x]), np.concatenate([self._codes, self._encode(x)]),
                      np.concatenate([self._lists, self._assign(x)]), np.concatenate([self._table.ids, ids]))

    def _remove(self, rows):
        keep = np.ones(len(self), bool)
        keep[rows] = False
        self._rebuild(self._vectors[keep], self._codes[keep], self._lists[keep], self._table.ids[keep])

    def _search(self, q, k, ex_ids, ex_offsets, params):
        nprobe = params.pop("nprobe", self.nprobe)
        rerank = params.pop("rerank", self.rerank)
        if params:
            raise TypeError(f"IVFIndex.search: unknown parameters {sorted(params)}")
        for name, v, lo in (("nprobe", nprobe, 1), ("rerank", rerank, 0)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"IVFIndex.search: {name} must be an integer >= {lo}, got {v!r}")
        scores = np.empty((q.shape[0], k), np.float32)
        ids = np.empty((q.shape[0], k), np.int64)
        int8 = self.storage == "int8"
        _C.ivf_search(q, self._list_centroids, self._scale, self._offsets, _STORAGE[self.storage], self._codes,
                      self._vmin if int8 else None, self._vscale if int8 else None, self._vectors,
                      self._table.ids, int(nprobe), k, int(rerank) * k, ex_ids, ex_offsets, scores, ids,
                      num_threads=num_threads())
        return scores, ids

    def _state(self):
        params = {name: getattr(self, name) for name in _SAVED_ARGS}
        params["trained"] = self.is_trained
        arrays = dict(vectors=self._vectors, lists=self._lists, vmin=self._vmin, vscale=self._vscale,
                      norm_edges=self._norm_edges)
        if self.is_trained:
            arrays["centroids"] = self._centroids
        return params, arrays

    @classmethod
    def _from_state(cls, *, dim, params, arrays):
        index = cls(dim, metric=params["metric"], **{name: params[name] for name in _SAVED_ARGS})

        def arr(name, dtype, shape):
            a = arrays.get(name)
            if a is None or a.dtype != dtype or a.shape != shape:
                raise ValueError(f"recops.retrieval.load: {name} must be {np.dtype(dtype).name} {shape}, got "
                                 f"{None if a is None else (a.dtype.name, a.shape)}")
            return a

        v = arrays.get("vectors")
        n = v.shape[0] if v is not None and v.ndim == 2 else -1
        vectors = arr("vectors", np.float32, (n, dim))
        index._vmin, index._vscale = arr("vmin", np.float32, (dim,)), arr("vscale", np.float32, (dim,))
        index._norm_edges = arr("norm_edges", np.float32, (index.norm_buckets - 1,))
        # what add() would have produced: finite bounds, positive finite scales, sorted finite norm edges
        if not (np.isfinite(index._vmin).all() and np.isfinite(index._vscale).all() and (index._vscale > 0).all()):
            raise ValueError("recops.retrieval.load: vmin must be finite and vscale finite and > 0")
        if not np.isfinite(index._norm_edges).all() or (np.diff(index._norm_edges) < 0).any():
            raise ValueError("recops.retrieval.load: norm_edges must be finite and non-decreasing")
        if not params["trained"]:
            if n:
                raise ValueError("recops.retrieval.load: an untrained IVF index must be empty")
            return index
        c = arrays.get("centroids")
        nlist = c.shape[0] if c is not None and c.ndim == 2 else -1
        index._centroids = arr("centroids", np.float32, (nlist, dim))
        lists = arr("lists", np.int64, (n,))
        if n and (lists.min() < 0 or lists.max() >= index._num_lists()):
            raise ValueError(f"recops.retrieval.load: lists must be in [0, {index._num_lists()})")
        if not (np.isfinite(vectors).all() and np.isfinite(index._centroids).all()):
            raise ValueError("recops.retrieval.load: vectors and centroids must be finite")
        index._rebuild(vectors, index._encode(vectors), lists, arr("ids", np.int64, (n,)))
        return index
