# SPDX-License-Identifier: Apache-2.0
"""Graph propagation for graph collaborative filtering (LightGCN, NGCF): `E' = A E` over a sparse adjacency A
stored as CSR, run as a weighted embedding bag through recops' embedding-bag kernel (neighbours as indices, CSR
row pointers as offsets, edge weights as per-sample weights). The backward is the same kernel over the
transposed graph (A itself for a symmetric A, e.g. LightGCN's D^-1/2 A D^-1/2), so no step sorts anything.
Edge weights are constants (no gradient), as in LightGCN and NGCF."""

import dataclasses
from typing import Optional

import torch
from torch import Tensor

from ..ops.embedding import embedding_bag


@dataclasses.dataclass
class CSRGraph:
    """A [num_rows, num_cols] sparse matrix: row r's entries are indices[indptr[r]:indptr[r+1]] (columns) with
    weights (float). `transpose()` is computed once and cached; `symmetric=True` declares A^T = A (the
    transpose is then the graph itself; not checked beyond the shape)."""

    indptr: Tensor
    indices: Tensor
    weights: Tensor
    num_cols: int
    symmetric: bool = False

    def __post_init__(self):
        op = "CSRGraph"
        for arg in ("indptr", "indices"):
            t = getattr(self, arg)
            if t.dtype != torch.int64 or t.dim() != 1:
                raise TypeError(f"{op}: {arg} must be a 1-D int64 tensor, got {t.dtype} {tuple(t.shape)}")
        if not self.weights.is_floating_point() or self.weights.shape != self.indices.shape:
            raise TypeError(f"{op}: weights must be floating point with the shape of indices "
                            f"{tuple(self.indices.shape)}, got {self.weights.dtype} {tuple(self.weights.shape)}")
        if self.indptr.shape[0] < 1:
            raise ValueError(f"{op}: indptr must have num_rows + 1 >= 1 entries, got 0")
        n = self.indices.shape[0]
        first, last = int(self.indptr[0]), int(self.indptr[-1])
        if first != 0 or last != n or bool((self.indptr[1:] < self.indptr[:-1]).any()):
            raise ValueError(f"{op}: indptr must start at 0, never decrease and end at len(indices)={n}, got "
                             f"indptr[0]={first}, indptr[-1]={last}")
        if n and (int(self.indices.min()) < 0 or int(self.indices.max()) >= self.num_cols):
            bad = int(self.indices[(self.indices < 0) | (self.indices >= self.num_cols)][0])
            raise IndexError(f"{op}: indices must be in [0, num_cols={self.num_cols}), got {bad}")
        if self.symmetric and self.num_rows != self.num_cols:
            raise ValueError(f"{op}: a symmetric graph must be square, got {self.num_rows} x {self.num_cols}")
        self._t: Optional["CSRGraph"] = None

    @property
    def num_rows(self) -> int:
        return self.indptr.shape[0] - 1

    @staticmethod
    def from_edges(rows: Tensor, cols: Tensor, weights: Tensor, num_rows: int, num_cols: int,
                   symmetric: bool = False) -> "CSRGraph":
        """CSR of the entries (rows[e], cols[e]) = weights[e] (duplicates kept: they add up)."""
        rows, cols = rows.to(torch.int64), cols.to(torch.int64)
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= num_rows):
            raise IndexError(f"CSRGraph.from_edges: rows must be in [0, num_rows={num_rows})")
        order = torch.argsort(rows * max(num_cols, 1) + cols, stable=True)
        indptr = torch.zeros(num_rows + 1, dtype=torch.int64, device=rows.device)
        indptr[1:] = torch.bincount(rows, minlength=num_rows).cumsum(0)
        return CSRGraph(indptr, cols[order].contiguous(), weights[order].contiguous(), num_cols, symmetric)

    def transpose(self) -> "CSRGraph":
        if self.symmetric:
            return self
        if self._t is None:
            rows = torch.repeat_interleave(torch.arange(self.num_rows, device=self.indptr.device),
                                           self.indptr.diff())
            self._t = CSRGraph.from_edges(self.indices, rows, self.weights, self.num_cols, self.num_rows)
            self._t._t = self
        return self._t

    def to_dense(self) -> Tensor:
        rows = torch.repeat_interleave(torch.arange(self.num_rows), self.indptr.diff().cpu())
        out = torch.zeros(self.num_rows, self.num_cols, dtype=self.weights.dtype)
        out.index_put_((rows, self.indices.cpu()), self.weights.cpu(), accumulate=True)
        return out


def bipartite_graph(users: Tensor, items: Tensor, num_users: int, num_items: int) -> CSRGraph:
    """LightGCN's normalised user-item graph: nodes 0..U-1 users, U..U+I-1 items, each distinct (user, item) pair an
    edge both ways, weight 1 / sqrt(deg(u) deg(i)); symmetric."""
    users, items = users.to(torch.int64), items.to(torch.int64)
    if users.shape != items.shape:
        raise ValueError(f"bipartite_graph: users and items must have one shape, got {tuple(users.shape)} and "
                         f"{tuple(items.shape)}")
    if users.numel() and (int(users.min()) < 0 or int(users.max()) >= num_users or int(items.min()) < 0
                          or int(items.max()) >= num_items):
        raise IndexError(f"bipartite_graph: users must be in [0, {num_users}) and items in [0, {num_items})")
    pairs = torch.unique(users * num_items + items)
    u, i = pairs // num_items, pairs % num_items + num_users
    n = num_users + num_items
    src, dst = torch.cat([u, i]), torch.cat([i, u])
    deg = torch.bincount(src, minlength=n).double()
    w = (deg[src].rsqrt() * deg[dst].rsqrt()).float()
    return CSRGraph.from_edges(src, dst, w, n, n, symmetric=True)


class _Propagate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, graph):
        ctx.graph = graph
        with torch.no_grad():
            return _spmm(graph, x)

    @staticmethod
    def backward(ctx, grad):
        return _spmm(ctx.graph.transpose(), grad.contiguous()), None


def _spmm(graph: CSRGraph, x: Tensor) -> Tensor:
    w = graph.weights.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    return embedding_bag(x.detach(), graph.indices, graph.indptr, "sum", w)


def propagate(x: Tensor, graph: CSRGraph) -> Tensor:
    """A @ x for x [num_cols, D] -> [num_rows, D] (float32, float64, float16, bfloat16 with float32 accumulation),
    differentiable w.r.t. x (the backward is A^T @ grad, the same kernel)."""
    if not isinstance(graph, CSRGraph):
        raise TypeError(f"propagate: graph must be a CSRGraph, got {type(graph).__name__}")
    if x.dim() != 2 or x.shape[0] != graph.num_cols:
        raise ValueError(f"propagate: x must be [num_cols={graph.num_cols}, D], got {tuple(x.shape)}")
    return _Propagate.apply(x, graph)


def propagate_ref(x: Tensor, graph: CSRGraph) -> Tensor:
    """Plain-PyTorch reference of propagate: torch.sparse.mm on the COO matrix."""
    rows = torch.repeat_interleave(torch.arange(graph.num_rows, device=x.device), graph.indptr.diff())
    a = torch.sparse_coo_tensor(torch.stack([rows, graph.indices]), graph.weights.to(x.dtype),
                                (graph.num_rows, graph.num_cols), check_invariants=False)
    return torch.sparse.mm(a, x)


def lightgcn_embeddings(e0: Tensor, graph: CSRGraph, num_layers: int) -> Tensor:
    """LightGCN's final embeddings: the mean of E_0 .. E_K with E_{k+1} = A E_k."""
    if num_layers < 0:
        raise ValueError(f"lightgcn_embeddings: num_layers must be >= 0, got {num_layers}")
    acc, e = e0, e0
    for _ in range(num_layers):
        e = propagate(e, graph)
        acc = acc + e
    return acc / (num_layers + 1)
