# SPDX-License-Identifier: Apache-2.0
"""Graph propagation through the embedding-bag kernel against torch.sparse.mm: shapes, empty rows, both
directions, gradients (gradcheck in float64), LightGCN's normalised graph, bad input."""

import pytest
import torch

from recops.nn.graph import CSRGraph, bipartite_graph, lightgcn_embeddings, propagate, propagate_ref


def _random_graph(rows, cols, edges, seed, symmetric=False):
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(0, rows, (edges,), generator=g)
    c = torch.randint(0, cols, (edges,), generator=g)
    w = torch.rand(edges, generator=g, dtype=torch.float64)
    if symmetric:
        r, c, w = torch.cat([r, c]), torch.cat([c, r]), torch.cat([w, w])
    return CSRGraph.from_edges(r, c, w, rows, cols, symmetric)


@pytest.mark.parametrize("rows,cols,edges", [(1, 1, 0), (5, 7, 3), (40, 30, 200), (300, 300, 5000)])
@pytest.mark.parametrize("dim", [1, 8, 33])
def test_forward_matches_sparse_mm(rows, cols, edges, dim):
    graph = _random_graph(rows, cols, edges, seed=rows + dim)
    x = torch.randn(cols, dim, dtype=torch.float64)
    torch.testing.assert_close(propagate(x, graph), propagate_ref(x, graph))
    torch.testing.assert_close(propagate(x.float(), graph), propagate_ref(x.float(), graph), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("symmetric", [False, True])
def test_gradcheck(symmetric):
    n = 9
    graph = _random_graph(n, n if symmetric else 6, 25, seed=3, symmetric=symmetric)
    x = torch.randn(graph.num_cols, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: propagate(t, graph), (x,))
    y = torch.randn(graph.num_cols, 4, dtype=torch.float64, requires_grad=True)
    propagate_ref(y, graph).pow(2).sum().backward()
    xx = y.detach().clone().requires_grad_()
    propagate(xx, graph).pow(2).sum().backward()
    torch.testing.assert_close(xx.grad, y.grad)


def test_lightgcn_graph_is_normalised_and_symmetric():
    users = torch.tensor([0, 0, 1, 2, 2, 2, 0])
    items = torch.tensor([0, 1, 1, 0, 1, 2, 0])  # (0, 0) twice: one edge
    g = bipartite_graph(users, items, 3, 3)
    a = g.to_dense()
    assert torch.equal(a, a.t())
    deg = torch.tensor([2., 1., 3., 2., 3., 1.])
    adj = (a > 0).float()
    torch.testing.assert_close(a, adj / (deg[:, None] * deg[None, :]).sqrt())
    e0 = torch.randn(6, 4, dtype=torch.float64)
    want = (e0 + a.double() @ e0 + a.double() @ (a.double() @ e0)) / 3
    torch.testing.assert_close(lightgcn_embeddings(e0, g, 2), want.to(e0.dtype), atol=1e-6, rtol=1e-6)


def test_half_precision_accumulates_in_float32():
    graph = _random_graph(50, 50, 400, seed=5)
    x = torch.randn(50, 16)
    got = propagate(x.bfloat16(), graph).float()
    torch.testing.assert_close(got, propagate_ref(x, graph), atol=3e-2, rtol=3e-2)


def test_bad_input():
    with pytest.raises(ValueError, match="indptr must start at 0"):
        CSRGraph(torch.tensor([0, 2]), torch.tensor([0]), torch.tensor([1.0]), 3)
    with pytest.raises(IndexError, match="num_cols=3"):
        CSRGraph(torch.tensor([0, 1]), torch.tensor([5]), torch.tensor([1.0]), 3)
    with pytest.raises(TypeError, match="int64"):
        CSRGraph(torch.tensor([0, 1], dtype=torch.int32), torch.tensor([0]), torch.tensor([1.0]), 3)
    with pytest.raises(TypeError, match="weights"):
        CSRGraph(torch.tensor([0, 1]), torch.tensor([0]), torch.tensor([1]), 3)
    g = CSRGraph(torch.tensor([0, 1]), torch.tensor([0]), torch.tensor([1.0]), 3)
    with pytest.raises(ValueError, match="num_cols=3"):
        propagate(torch.randn(4, 2), g)
    with pytest.raises(ValueError, match="square"):
        CSRGraph(torch.tensor([0, 1]), torch.tensor([0]), torch.tensor([1.0]), 3, symmetric=True)
    with pytest.raises(IndexError, match="items"):
        bipartite_graph(torch.tensor([0]), torch.tensor([9]), 1, 2)
