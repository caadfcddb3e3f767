# SPDX-License-Identifier: Apache-2.0
"""Graph propagation (one LightGCN layer, E' = A_hat E, forward + backward, D=64) through recops' embedding-bag
kernel (recops.nn.graph.propagate) against torch.sparse.mm on the same COO and CSR matrices. The graph: the
Taobao buy + cart + view training pairs of ../shared/data/taobao-mbcgcn (15,449 users + 11,953 items, 1.88M
directed edges; the folder RECOPS_DATA/taobao-mbcgcn, default ../shared/data) when it is there, else (and in quick mode) a random bipartite graph of the same density."""

import os

import torch

from ..nn.graph import bipartite_graph, propagate

# RECOPS_DATA (default ../shared/data from the working directory, the repository root's neighbour)
TAOBAO = os.path.join(os.environ.get("RECOPS_DATA", os.path.join("..", "shared", "data")), "taobao-mbcgcn")


def _taobao_pairs():
    users, items = [], []
    for b in ("buy", "cart", "view"):
        with open(os.path.join(TAOBAO, f"{b}_train.txt")) as f:
            for line in f:
                p = line.split()
                users += [int(p[0])] * (len(p) - 1)
                items += [int(x) for x in p[1:]]
    return torch.tensor(users), torch.tensor(items), 15449, 11953


def graph_cases(device, quick):
    from . import Case

    if not quick and os.path.isdir(TAOBAO):
        users, items, nu, ni = _taobao_pairs()
        label = "taobao buy+cart+view, 27,402 nodes, D=64"
    else:
        g = torch.Generator().manual_seed(0)
        nu, ni, e = (2000, 1500, 60_000) if quick else (15449, 11953, 940_000)
        users, items = torch.randint(0, nu, (e,), generator=g), torch.randint(0, ni, (e,), generator=g)
        label = f"random bipartite {nu}+{ni} nodes, {e} pairs, D=64"
    graph = bipartite_graph(users, items, nu, ni)
    n = nu + ni
    rows = torch.repeat_interleave(torch.arange(n), graph.indptr.diff())
    coo = torch.sparse_coo_tensor(torch.stack([rows, graph.indices]), graph.weights, (n, n),
                                  check_invariants=False).coalesce()
    csr = coo.to_sparse_csr()
    x = torch.randn(n, 64, requires_grad=True)
    grad = torch.randn(n, 64)
    label += f", {graph.indices.shape[0]} edges"

    def ours():
        propagate(x, graph).backward(grad)

    def sp_coo():
        torch.sparse.mm(coo, x).backward(grad)

    def sp_csr():
        torch.sparse.mm(csr, x).backward(grad)

    bytes_moved = 2 * graph.indices.shape[0] * 64 * 4  # rows gathered, forward and backward
    return [Case("graph propagation fwd+bwd (LightGCN layer)", label,
                 {"recops": ours, "torch.sparse.mm (COO)": sp_coo, "torch.sparse.mm (CSR)": sp_csr},
                 bytes_moved=bytes_moved)]
