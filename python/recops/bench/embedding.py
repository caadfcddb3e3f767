# SPDX-License-Identifier: Apache-2.0
"""Embedding-bag benchmark cases: EmbeddingBagCollection vs per-table nn.EmbeddingBag (forward) and
nn.EmbeddingBag(sparse=True) + torch.optim.Adagrad (training step), FBGEMM's CPU TBE (fbgemm-gpu-cpu, optional
`bench` extra; skipped when absent), and a streaming copy as the machine's memory-bandwidth reference.

GB/s counts the embedding rows read (L * D * element size), so rows/s = GB/s / (D * element size); the train
step counts them twice (read + update). TBE runs on the multi-table shape (a) only: its own copy of shape (b)'s
5 GB table, next to ours and torch's dense Adagrad state, would not fit a 23 GB machine together with (a).
Full mode holds about 16 GB (the two 10M-row shapes share one table); quick mode uses 100k-row tables and finishes
in about 15 s."""

import torch

from ..data.keyed_jagged import KeyedJagged
from ..nn.embedding import EmbeddingBagCollection, EmbeddingBagConfig, FusedOptimizer

# (name, tables, rows per table, D, B, pooling factor, index distributions); the shapes (a) and (b).
SHAPES = [
    ("a: 8x1M D=64 B=2048 pf=20", 8, 1_000_000, 64, 2048, 20, ("uniform", "zipf")),
    ("b: 1x10M D=128 B=4096 pf=1", 1, 10_000_000, 128, 4096, 1, ("uniform",)),
    ("b: 1x10M D=128 B=4096 pf=50", 1, 10_000_000, 128, 4096, 50, ("uniform", "zipf")),
]
QUICK_SHAPES = [
    ("a-quick: 8x100k D=64 B=2048 pf=20", 8, 100_000, 64, 2048, 20, ("uniform",)),
]
LR = 0.01


def _indices(rows, n, dist, gen):
    if dist == "uniform":
        return torch.randint(0, rows, (n,), generator=gen)
    # Zipf(1.05) over ranks, ranks scattered over the table by a fixed permutation.
    ranks = torch.arange(1, rows + 1, dtype=torch.float64)
    picks = torch.multinomial(ranks.pow(-1.05), n, replacement=True, generator=gen)
    return torch.randperm(rows, generator=gen)[picks]


def _tbe(num_tables, rows, dim, weights):
    """FBGEMM's CPU TBE with fused EXACT_ROWWISE_ADAGRAD sharing our initial weights, or None."""
    try:
        from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation, PoolingMode
        from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
            ComputeDevice, OptimType, SplitTableBatchedEmbeddingBagsCodegen)
    except Exception:  # noqa: BLE001 - any import failure means "no baseline"
        return None
    try:
        tbe = SplitTableBatchedEmbeddingBagsCodegen(
            embedding_specs=[(rows, dim, EmbeddingLocation.HOST, ComputeDevice.CPU)] * num_tables,
            optimizer=OptimType.EXACT_ROWWISE_ADAGRAD, learning_rate=LR, eps=1e-8, pooling_mode=PoolingMode.SUM)
        with torch.no_grad():
            for t, w in enumerate(tbe.split_embedding_weights()):
                w.copy_(weights[t])
        return tbe
    except Exception:  # noqa: BLE001
        return None


def embedding_cases(device, quick):
    from . import Case

    cases = []
    gen = torch.Generator().manual_seed(0)
    built = {}  # shapes with the same tables share them (the two 10M-row shapes would not fit twice)
    for name, num_tables, rows, dim, batch, pf, dists in QUICK_SHAPES if quick else SHAPES:
        keys = [f"f{t}" for t in range(num_tables)]
        if (num_tables, rows, dim) not in built:
            configs = [EmbeddingBagConfig(k, rows, dim) for k in keys]
            ebc = EmbeddingBagCollection(configs, optimizer=FusedOptimizer("rowwise_adagrad", lr=LR), device=device)
            tables = [ebc.table(k) for k in keys]
            # torch baselines share our storage (from_pretrained keeps the tensor); steps mutate it, which is fine.
            torch_fwd = [torch.nn.EmbeddingBag.from_pretrained(w, freeze=True, mode="sum", include_last_offset=True)
                         for w in tables]
            torch_train = [torch.nn.EmbeddingBag.from_pretrained(w, freeze=False, mode="sum", sparse=True,
                                                                 include_last_offset=True) for w in tables]
            adagrad = torch.optim.Adagrad([m.weight for m in torch_train], lr=LR)
            tbe = _tbe(num_tables, rows, dim, tables) if device.type == "cpu" and num_tables > 1 else None
            built[(num_tables, rows, dim)] = (ebc, torch_fwd, torch_train, adagrad, tbe)
        ebc, torch_fwd, torch_train, adagrad, tbe = built[(num_tables, rows, dim)]
        for dist in dists:
            nnz = num_tables * batch * pf
            values = torch.cat([_indices(rows, batch * pf, dist, gen) for _ in keys]).to(device)
            offsets = torch.arange(0, nnz + 1, pf, dtype=torch.int64, device=device)
            kjt = KeyedJagged(keys, values, offsets)
            per_table = [(values[t * batch * pf:(t + 1) * batch * pf], offsets[:batch + 1]) for t in range(num_tables)]
            grad = torch.randn(batch, num_tables * dim, device=device)
            label = f"{name} {dist}"
            row_bytes = nnz * dim * 4

            def ours_fwd(e=ebc, k=kjt):
                with torch.no_grad():
                    return e(k).concat()

            def torch_fwd_fn(ms=torch_fwd, pt=per_table):
                with torch.no_grad():
                    return torch.cat([m(i, o) for m, (i, o) in zip(ms, pt)], dim=1)

            fwd = {"recops": ours_fwd, "nn.EmbeddingBag": torch_fwd_fn}

            def ours_step(e=ebc, k=kjt, g=grad):
                e(k).concat().backward(g)

            def torch_step(ms=torch_train, pt=per_table, g=grad, opt=adagrad):
                torch.cat([m(i, o) for m, (i, o) in zip(ms, pt)], dim=1).backward(g)
                opt.step()
                opt.zero_grad(set_to_none=True)

            train = {"recops": ours_step, "nn.EmbeddingBag(sparse)+Adagrad": torch_step}
            if tbe is not None:
                def tbe_fwd(m=tbe, v=values, o=offsets):
                    with torch.no_grad():
                        return m(v, o)

                def tbe_step(m=tbe, v=values, o=offsets, g=grad):
                    m(v, o).backward(g)

                fwd["fbgemm TBE"] = tbe_fwd
                train["fbgemm TBE rowwise_adagrad"] = tbe_step
            cases.append(Case("embedding_bags fwd", label, fwd, bytes_moved=row_bytes))
            cases.append(Case("embedding_bags train step (rowwise_adagrad)", label, train, bytes_moved=2 * row_bytes))
    # Memory-bandwidth reference: a streaming copy of 256 MiB (64 MiB quick), read + write bytes.
    n = (64 if quick else 256) * 2**20 // 4
    src, dst = torch.randn(n, device=device), torch.empty(n, device=device)
    cases.append(Case("memory bandwidth (copy)", f"{n * 4 // 2**20} MiB fp32", {"torch.copy_": lambda: dst.copy_(src)},
                      bytes_moved=2 * n * 4))
    return cases
