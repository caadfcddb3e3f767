# SPDX-License-Identifier: Apache-2.0
"""Plain-Python reference of dynamic tables (recops.nn.dynamic, cpp/embedding/dynamic_table.h), for tests.

`RefDynamicMap` is the id -> row map spelled with dicts, a heap of free rows, explicit counters and
timestamps, and the same count-min sketch (same hash), so a test can require the C++ map's rows to be equal.
`RefDynamicTable` keeps one vector and optimizer state per id (not per row) and implements pooling and the
fused sgd / rowwise_adagrad / adam updates in torch, so outputs and steps compare against the collection."""

import heapq
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

M64 = (1 << 64) - 1


def mix64(x: int) -> int:
    """cpp/embedding/dynamic_table.h mix64 (one splitmix64 step)."""
    x = (x + 0x9E3779B97F4A7C15) & M64
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def init_values(id_: int, dim: int, seed: int, bound: float) -> List[float]:
    """The initial row of a new id (dynamic_init_values), as float32 values."""
    base = mix64((seed ^ (id_ & M64)) & M64)
    out = []
    for j in range(dim):
        u = (mix64((base + j) & M64) >> 11) * 2.0 ** -53
        out.append((2.0 * u - 1.0) * bound)
    return torch.tensor(out, dtype=torch.float64).float().tolist()


class RefDynamicMap:
    def __init__(self, capacity: int, max_capacity: int, admit_after: int = 1, ttl: Optional[float] = None,
                 eviction: str = "lru", sketch_width: int = 64, sketch_depth: int = 4):
        self.cap, self.max_cap, self.admit_after, self.ttl = capacity, max_capacity, admit_after, ttl
        self.eviction, self.width, self.depth = eviction, sketch_width, sketch_depth
        self.row_of: Dict[int, int] = {}
        self.key: Dict[int, int] = {}
        self.last_use: Dict[int, int] = {}
        self.last_seen: Dict[int, float] = {}
        self.freq: Dict[int, int] = {}
        self.free = list(range(capacity))
        self.sketch = [[0] * sketch_width for _ in range(sketch_depth)] if admit_after > 1 else []
        self.serial = 0

    def _cells(self, key: int):
        k = key & M64
        for d in range(self.depth):
            yield d, mix64(k ^ ((0x5851F42D4C957F2D * (d + 1)) & M64)) & (self.width - 1)

    def estimate(self, key: int) -> int:
        return min(self.sketch[d][c] for d, c in self._cells(key))

    def count(self, key: int, occ: int) -> None:
        target = min(255, self.estimate(key) + occ)
        for d, c in self._cells(key):
            self.sketch[d][c] = max(self.sketch[d][c], target)

    def expired(self, row: int, now: float) -> bool:
        return self.ttl is not None and now - self.last_seen[row] > self.ttl

    def release(self, row: int) -> None:
        del self.row_of[self.key.pop(row)]
        del self.last_use[row]
        self.last_seen.pop(row, None)
        self.freq.pop(row, None)
        heapq.heappush(self.free, row)

    def reclaim(self, now: float) -> None:
        for r in sorted(self.key):
            if self.expired(r, now):
                self.release(r)

    def grow(self, capacity: int) -> None:
        for r in range(self.cap, capacity):
            heapq.heappush(self.free, r)
        self.cap = capacity

    def live(self, now: float) -> List[int]:
        return sorted(k for r, k in self.key.items() if not self.expired(r, now))

    def resolve(self, ids: Sequence[int], training: bool, now: float) -> Tuple[List[int], List[Tuple[int, int]]]:
        """(rows, [(row, id) assigned]) as DynamicIdMap.resolve, growing itself when asked to."""
        while True:
            found = []
            for x in ids:
                r = self.row_of.get(x)
                found.append(None if r is None or self.expired(r, now) else r)
            if not training:
                return [self.cap if r is None else r for r in found], []
            uniq, occ = [], {}
            for x, r in zip(ids, found):
                if r is None:
                    if x not in occ:
                        uniq.append(x)
                        occ[x] = 0
                    occ[x] += 1
            admit = {x: self.admit_after == 1 or self.estimate(x) + occ[x] >= self.admit_after for x in uniq}
            wanted = sum(admit.values())
            if self.ttl is not None:
                for x in uniq:
                    if x in self.row_of:
                        self.release(self.row_of[x])
            if wanted > len(self.free):
                self.reclaim(now)
                need = len(self.key) + wanted
                if need > self.cap and self.cap < self.max_cap:
                    to = self.cap
                    while to < need and to < self.max_cap:
                        to = min(self.max_cap, to * 2)
                    self.grow(to)
                    continue
            break
        self.serial += 1
        for x, r in zip(ids, found):
            if r is not None:
                self.last_use[r] = self.serial
                self.last_seen[r] = now
                self.freq[r] = self.freq.get(r, 0) + 1
        if self.admit_after > 1:
            for x in uniq:
                self.count(x, occ[x])
        if wanted > len(self.free):
            short = wanted - len(self.free)
            cand = sorted(((self.freq[r] if self.eviction == "lfu" else 0, self.last_use[r], r)
                           for r in self.key if self.last_use[r] != self.serial))
            for _, _, r in cand[:short]:
                self.release(r)
        new, got = [], {}
        for x in uniq:
            if admit[x] and self.free:
                r = heapq.heappop(self.free)
                self.row_of[x], self.key[r] = r, x
                self.last_use[r], self.last_seen[r], self.freq[r] = self.serial, now, occ[x]
                new.append((r, x))
                got[x] = r
        rows = [r if r is not None else got.get(x, self.cap) for x, r in zip(ids, found)]
        return rows, new


class RefDynamicTable:
    """One dynamic table trained by the fused optimizer, with per-id vectors: weights[id], state[id]."""

    def __init__(self, dim: int, pooling: str, map_: RefDynamicMap, seed: int, bound: float, kind: str,
                 lr: float, eps: float, beta1: float = 0.9, beta2: float = 0.999):
        self.dim, self.pooling, self.map = dim, pooling, map_
        self.seed, self.bound = seed, bound
        self.kind, self.lr, self.eps, self.beta1, self.beta2 = kind, lr, eps, beta1, beta2
        self.w: Dict[int, Tensor] = {}
        self.s0: Dict[int, Tensor] = {}
        self.s1: Dict[int, Tensor] = {}

    def forward(self, ids: List[int], offsets: List[int], training: bool, now: float):
        """Pooled [B, D] float64 and what backward needs."""
        rows, new = self.map.resolve(ids, training, now)
        for _, x in new:
            self.w[x] = torch.tensor(init_values(x, self.dim, self.seed, self.bound), dtype=torch.float64)
            self.s0[x] = torch.zeros(() if self.kind == "rowwise_adagrad" else self.dim, dtype=torch.float64)
            self.s1[x] = torch.zeros(self.dim, dtype=torch.float64)
        has = [r != self.map.cap for r in rows]
        b = len(offsets) - 1
        out = torch.zeros(b, self.dim, dtype=torch.float64)
        for i in range(b):
            lo, hi = offsets[i], offsets[i + 1]
            vecs = [self.w[ids[p]] if has[p] else torch.zeros(self.dim, dtype=torch.float64) for p in range(lo, hi)]
            if not vecs:
                continue
            v = torch.stack(vecs)
            out[i] = v.sum(0) if self.pooling == "sum" else v.mean(0) if self.pooling == "mean" else v.max(0).values
        return out, (ids, offsets, has)

    def backward(self, saved, grad_out: Tensor, step: int) -> None:
        ids, offsets, has = saved
        grads: Dict[int, Tensor] = {}
        for i in range(len(offsets) - 1):
            lo, hi = offsets[i], offsets[i + 1]
            n = hi - lo
            if self.pooling == "max" and n:
                vecs = torch.stack([self.w[ids[p]] if has[p] else torch.zeros(self.dim, dtype=torch.float64)
                                    for p in range(lo, hi)])
                win = vecs.argmax(0)
            for p in range(lo, hi):
                if not has[p]:
                    continue
                g = grad_out[i].double()
                if self.pooling == "mean":
                    g = g / n
                elif self.pooling == "max":
                    g = torch.where(win == p - lo, g, torch.zeros_like(g))
                x = ids[p]
                grads[x] = grads.get(x, 0) + g
        for x, g in grads.items():
            if self.kind == "sgd":
                self.w[x] -= self.lr * g
            elif self.kind == "rowwise_adagrad":
                self.s0[x] += (g * g).mean()
                self.w[x] -= self.lr * g / (self.s0[x].sqrt() + self.eps)
            elif self.kind == "adam":
                self.s0[x] = self.beta1 * self.s0[x] + (1 - self.beta1) * g
                self.s1[x] = self.beta2 * self.s1[x] + (1 - self.beta2) * g * g
                size = self.lr * math.sqrt(1 - self.beta2 ** step) / (1 - self.beta1 ** step)
                self.w[x] -= size * self.s0[x] / (self.s1[x].sqrt() + self.eps)
            else:
                raise ValueError(self.kind)
