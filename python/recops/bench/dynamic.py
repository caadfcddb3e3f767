# SPDX-License-Identifier: Apache-2.0
"""Dynamic (collisionless) tables: the training step of 8 dynamic tables holding 1M live raw 64-bit ids each
against the static EmbeddingBagCollection fed rows that were remapped beforehand (the issue's target: <= 1.3x its
time), and against the eager remapping users write today before a static collection: torch.searchsorted over the
sorted ids (TorchRec's sorted remapping) and a Python dict. Then insert throughput (new ids per second into an
empty table) against a Python dict.

Every implementation steps the same batch: forward + fused rowwise-Adagrad backward, B=2048, pooling 20, D=64,
ids uniform or Zipf(1.05) over the live vocabulary (no admission, eviction or ttl: the steady state of a table
whose vocabulary fits). Full mode holds about 6.5 GB; quick mode uses 100k ids per table."""

import torch

from ..data.keyed_jagged import KeyedJagged
from ..nn.dynamic import DynamicTable
from ..nn.embedding import EmbeddingBagCollection, EmbeddingBagConfig, FusedOptimizer
from .embedding import LR, _indices

SHAPES = [("8x1M live D=64 B=2048 pf=20", 8, 1_000_000, 64, 2048, 20, ("uniform", "zipf"))]
QUICK_SHAPES = [("8x100k live D=64 B=2048 pf=20", 8, 100_000, 64, 2048, 20, ("uniform",))]


def _raw_vocab(n, gen):
    """n distinct random 64-bit ids (negative ones included)."""
    ids = torch.randint(-2**63, 2**63 - 1, (n + n // 100 + 16,), generator=gen, dtype=torch.int64).unique()
    return ids[torch.randperm(ids.shape[0], generator=gen)[:n]]


def dynamic_cases(device, quick):
    from . import Case

    cases = []
    gen = torch.Generator().manual_seed(0)
    for name, num_tables, live, dim, batch, pf, dists in QUICK_SHAPES if quick else SHAPES:
        keys = [f"f{t}" for t in range(num_tables)]
        cap = 1 << (live - 1).bit_length()  # the next power of two: room, no eviction
        opt = FusedOptimizer("rowwise_adagrad", lr=LR)
        dyn = EmbeddingBagCollection([EmbeddingBagConfig(k, cap, dim, dynamic=DynamicTable(cap)) for k in keys],
                                     optimizer=opt, device=device)
        vocab = [_raw_vocab(live, gen) for _ in keys]
        # Fill: one training step over every id of every table (rows are assigned in vocabulary order).
        fill = KeyedJagged(keys, torch.cat(vocab), torch.tensor([0] + [live * (t + 1) for t in range(num_tables)]))
        dyn(fill).concat().sum().backward()
        static = EmbeddingBagCollection([EmbeddingBagConfig(k, live, dim) for k in keys], optimizer=opt,
                                        device=device)
        sorted_ids = [torch.sort(v) for v in vocab]  # (values, the row of each: its vocabulary position)
        id_dicts = [dict(zip(v.tolist(), range(live))) for v in vocab]
        for dist in dists:
            nnz = num_tables * batch * pf
            pos = [_indices(live, batch * pf, dist, gen) for _ in keys]  # vocabulary positions = static rows
            raw = torch.cat([v[p] for v, p in zip(vocab, pos)])
            rows = torch.cat(pos)
            offsets = torch.arange(0, nnz + 1, pf, dtype=torch.int64)
            kjt_raw = KeyedJagged(keys, raw.to(device), offsets.to(device))
            kjt_rows = KeyedJagged(keys, rows.to(device), offsets.to(device))
            grad = torch.randn(batch, num_tables * dim, device=device)
            n = batch * pf

            def dyn_step(e=dyn, k=kjt_raw, g=grad):
                e(k).concat().backward(g)

            def static_step(e=static, k=kjt_rows, g=grad):
                e(k).concat().backward(g)

            def searchsorted_step(e=static, r=raw, o=offsets, g=grad):
                parts = []
                for t, (sv, si) in enumerate(sorted_ids):
                    x = r[t * n:(t + 1) * n]
                    parts.append(si[torch.searchsorted(sv, x)])
                e(KeyedJagged(keys, torch.cat(parts).to(device), o.to(device))).concat().backward(g)

            def dict_step(e=static, r=raw, o=offsets, g=grad):
                parts = []
                for t, d in enumerate(id_dicts):
                    parts.append(torch.tensor([d[x] for x in r[t * n:(t + 1) * n].tolist()]))
                e(KeyedJagged(keys, torch.cat(parts).to(device), o.to(device))).concat().backward(g)

            cases.append(Case("dynamic tables train step (rowwise_adagrad)", f"{name} {dist}",
                              {"recops": dyn_step, "static EBC, rows remapped beforehand": static_step,
                               "torch.searchsorted remap + static EBC": searchsorted_step,
                               "Python dict remap + static EBC": dict_step},
                              bytes_moved=2 * nnz * dim * 4))
        del dyn, static
    # Insert throughput: 1M (100k quick) new ids into an empty table, map only.
    from .. import _C

    n_new = 100_000 if quick else 1_000_000
    new_ids = _raw_vocab(n_new, gen)
    rows, nr, ni = (torch.empty_like(new_ids) for _ in range(3))
    state = {}

    def insert():
        m = _C.DynamicIdMap(n_new, n_new, 1, None, 0, 0, 4)
        m.resolve(new_ids, rows, True, 1.0, torch.get_num_threads(), nr, ni)
        state["m"] = m

    lst = new_ids.tolist()

    def dict_insert():
        d = {}
        for i, x in enumerate(lst):
            d[x] = i
        state["d"] = d

    cases.append(Case("dynamic table insert (new ids)", f"{n_new} new ids, empty table",
                      {"recops": insert, "Python dict": dict_insert}))
    return cases
