# SPDX-License-Identifier: Apache-2.0
"""Shared plumbing of the index classes: input conversion, id bookkeeping, exclusion lists, locking."""

import contextlib
import threading
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

METRICS = ("ip", "cosine")


class RWLock:
    """Many concurrent readers (searches, save) or one writer (add / remove). Writers have preference: while a
    writer waits, new readers wait behind it, so a steady stream of searches cannot starve an add. Not reentrant
    (a thread holding it must not take it again)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def read(self):
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self):
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
                if not self._writers_waiting:
                    self._cond.notify_all()  # readers held back only by this writer (it may have been interrupted)
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def as_matrix(op: str, name: str, x, dim: int) -> Tuple[np.ndarray, bool]:
    """x (numpy array or torch tensor) as a contiguous float32 [n, dim] numpy array (no copy when it already is
    one, on the CPU) and whether it came as a torch tensor. Raises TypeError / ValueError on bad input."""
    is_torch = isinstance(x, torch.Tensor)
    if is_torch:
        x = x.detach()
        if x.device.type != "cpu":
            x = x.cpu()
        if not x.dtype.is_floating_point:
            raise TypeError(f"{op}: {name} must be a float tensor, got {x.dtype}")
        x = x.to(torch.float32).contiguous().numpy()
    else:
        x = np.asarray(x)
        if x.dtype.kind != "f":
            raise TypeError(f"{op}: {name} must be a float array, got {x.dtype}")
        x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{op}: {name} must have 2 dimensions [n, {dim}], got shape {tuple(x.shape)}")
    if x.shape[1] != dim:
        raise ValueError(f"{op}: {name}.shape[1] must be the index dim {dim}, got {x.shape[1]}")
    if x.size and not np.isfinite(x).all():
        row = int(np.nonzero(~np.isfinite(x).all(1))[0][0])
        raise ValueError(f"{op}: {name} must be finite, got NaN or inf in row {row}")
    return x, is_torch


_INT64_MAX = np.iinfo(np.int64).max


def int_array(op: str, name: str, x) -> np.ndarray:
    """x (array-like, tensor or sequence) as a flat contiguous int64 numpy array: floats and bools raise
    TypeError (never truncated), unsigned values above 2**63 - 1 ValueError (never wrapped to negative ids).
    An empty input of any dtype is accepted."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.size and x.dtype.kind not in "iu":
        raise TypeError(f"{op}: {name} must be integers, got {x.dtype}")
    if x.size and x.dtype.kind == "u" and x.dtype.itemsize == 8 and int(x.max()) > _INT64_MAX:
        raise ValueError(f"{op}: {name} must fit int64, got {int(x.max())}")
    return np.ascontiguousarray(x, dtype=np.int64).reshape(-1)


def as_ids(op: str, ids, n: Optional[int] = None) -> np.ndarray:
    """ids (array-like or tensor) as contiguous int64 [n]; n = None accepts any length. Ids are >= 0: -1 pads
    the results of a search with fewer than k hits, so a negative id could not be told apart from padding."""
    ids = int_array(op, "ids", ids)
    if n is not None and ids.shape[0] != n:
        raise ValueError(f"{op}: ids must have one id per vector ({n}), got {ids.shape[0]}")
    if ids.size and int(ids.min()) < 0:
        raise ValueError(f"{op}: ids must be >= 0 (-1 pads search results), got {int(ids.min())}")
    return ids


def normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def as_exclusions(op: str, exclude, exclude_offsets, num_queries: int):
    """Per-query exclusion lists as int64 numpy (ids, offsets [Q + 1]), or (None, None).

    exclude: None, a sequence of Q id lists, or (with exclude_offsets [Q + 1]) the flat jagged ids. Ids are
    integers (floats raise TypeError); ids not in the index, negative ones included, exclude nothing."""
    if exclude is None:
        if exclude_offsets is not None:
            raise ValueError(f"{op}: exclude_offsets given without exclude")
        return None, None
    if exclude_offsets is not None:
        ids = int_array(op, "exclude", exclude)
        offsets = int_array(op, "exclude_offsets", exclude_offsets)
        if offsets.shape[0] != num_queries + 1:
            raise ValueError(f"{op}: exclude_offsets must have Q + 1 = {num_queries + 1} elements, "
                             f"got {offsets.shape[0]}")
        if offsets[0] != 0 or (np.diff(offsets) < 0).any() or offsets[-1] != ids.shape[0]:
            raise ValueError(f"{op}: exclude_offsets must start at 0, be non-decreasing and end at "
                             f"len(exclude)={ids.shape[0]}, got {offsets.tolist()[:16]}")
        return ids, offsets
    lists: Sequence = list(exclude)
    if len(lists) != num_queries:
        raise ValueError(f"{op}: exclude must have one id list per query ({num_queries}), got {len(lists)}")
    parts = [int_array(op, f"exclude[{i}]", s if isinstance(s, (torch.Tensor, np.ndarray)) else list(s))
             for i, s in enumerate(lists)]
    offsets = np.zeros(num_queries + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(p) for p in parts])
    ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return np.ascontiguousarray(ids, dtype=np.int64), offsets


def check_k(op: str, k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{op}: k must be an integer >= 1, got {k!r}")
    return int(k)


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"metric must be 'ip' or 'cosine', got {metric!r}")
    return metric


def check_dim(dim) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
    return int(dim)


def results(scores: np.ndarray, ids: np.ndarray, as_torch: bool):
    if as_torch:
        return torch.from_numpy(scores), torch.from_numpy(ids)
    return scores, ids


class IdTable:
    """The ids of the vectors of an index (one per stored row) with O(log n) lookups."""

    def __init__(self, ids: Optional[np.ndarray] = None):
        self.ids = np.zeros(0, np.int64) if ids is None else ids
        self._order = None

    def __len__(self):
        return int(self.ids.shape[0])

    def next_ids(self, op: str, n: int) -> np.ndarray:
        """n default ids after the largest present; ValueError when they would pass 2**63 - 1."""
        start = int(self.ids.max()) + 1 if len(self) else 0
        if n and start + n - 1 > _INT64_MAX:
            raise ValueError(f"{op}: default ids {start}..{start + n - 1} do not fit int64 (the largest id in "
                             f"the index is {start - 1}): pass ids explicitly")
        return np.arange(start, start + n, dtype=np.int64)

    def check_new(self, op: str, ids: np.ndarray) -> None:
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"{op}: duplicate id {int(uniq[counts > 1][0])} in ids")
        present = self.rows(ids) >= 0
        if present.any():
            raise ValueError(f"{op}: id {int(ids[present][0])} is already in the index")

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id, -1 where absent."""
        if self._order is None:
            self._order = np.argsort(self.ids, kind="stable")
        sorted_ids = self.ids[self._order]
        pos = np.searchsorted(sorted_ids, ids)
        pos_c = np.minimum(pos, max(len(self) - 1, 0))
        found = (pos < len(self)) & (sorted_ids[pos_c] == ids) if len(self) else np.zeros(ids.shape, bool)
        return np.where(found, self._order[pos_c] if len(self) else -1, -1)

    def rows_for_removal(self, op: str, ids) -> np.ndarray:
        ids = as_ids(op, ids)
        rows = self.rows(ids)
        if (rows < 0).any():
            raise KeyError(f"{op}: id {int(ids[rows < 0][0])} is not in the index")
        return rows

    def set(self, ids: np.ndarray) -> None:
        self.ids = ids
        self._order = None
