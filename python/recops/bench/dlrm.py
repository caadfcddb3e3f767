# SPDX-License-Identifier: Apache-2.0
"""DLRM training-step throughput (samples/s): recops (EmbeddingBagCollection with fused rowwise Adagrad) vs the
same model built from one nn.EmbeddingBag(sparse=True) per table + torch.optim.Adagrad on the tables, same MLPs
(Adam) and same batch, same run.

Only one model lives at a time (each implementation builds its model on its first call and the previous one is
freed; the case is marked switch_cost, so the runner's blocks start with that call untimed), so 26 x 1M x 64
tables fit: recops holds the weights plus one accumulator per row; the torch baseline the
weights plus a dense Adagrad state of the same size."""

import gc

import torch
import torch.nn.functional as F
from torch import nn

from ..data.criteo import sparse_to_kjt
from ..models.dlrm import DLRM, DLRMConfig, dot_interaction, mlp
from ..nn.embedding import FusedOptimizer


class TorchDLRM(nn.Module):
    """The baseline: nn.EmbeddingBag(sparse=True) per table, the same bottom/top MLPs and dot interaction."""

    def __init__(self, cfg: DLRMConfig):
        super().__init__()
        self.tables = nn.ModuleList(nn.EmbeddingBag(v, cfg.embedding_dim, mode="sum", sparse=True,
                                                    include_last_offset=True) for v in cfg.table_sizes)
        for t, v in zip(self.tables, cfg.table_sizes):
            nn.init.uniform_(t.weight, -v ** -0.5, v ** -0.5)
        f = len(cfg.table_sizes)
        self.bottom = mlp((cfg.num_dense,) + cfg.bottom_mlp, last_relu=True)
        self.top = mlp((cfg.embedding_dim + (f + 1) * f // 2,) + cfg.top_mlp + (1,), last_relu=False)

    def forward(self, dense, kjt):
        b = dense.shape[0]
        embs = []
        for f, t in enumerate(self.tables):
            lo = kjt.offsets[f * b:(f + 1) * b + 1]
            embs.append(t(kjt.values[lo[0]:lo[-1]], lo - lo[0]))
        return self.top(dot_interaction(self.bottom(dense), torch.stack(embs, 1))).squeeze(1)


def _batch(sizes, batch, gen):
    sparse = torch.stack([torch.randint(0, v, (batch,), generator=gen) for v in sizes], 1)
    return torch.randn(batch, 13, generator=gen), sparse_to_kjt(sparse), (torch.rand(batch, generator=gen) < 0.25).float()


def dlrm_cases(device, quick):
    from . import Case

    if device.type != "cpu":
        return []
    rows = 100_000 if quick else 1_000_000
    batch, dim, tables = 4096, 64, 26
    cfg = DLRMConfig([rows] * tables, embedding_dim=dim, bottom_mlp=(512, 256, dim), top_mlp=(512, 256),
                     embedding_optimizer=FusedOptimizer("rowwise_adagrad", lr=0.01))
    gen = torch.Generator().manual_seed(0)
    batches = [_batch(cfg.table_sizes, batch, gen) for _ in range(4)]
    live = {"name": None, "step": None, "i": 0}

    def build(name):
        live["step"] = None
        gc.collect()
        torch.manual_seed(0)
        if name == "recops":
            model = DLRM(cfg)
            opts = [torch.optim.Adam(model.dense_parameters(), lr=1e-3)]
        else:
            model = TorchDLRM(cfg)
            opts = [torch.optim.Adam(list(model.bottom.parameters()) + list(model.top.parameters()), lr=1e-3),
                    torch.optim.Adagrad(list(model.tables.parameters()), lr=0.01)]

        def step():
            dense, kjt, labels = batches[live["i"] % len(batches)]
            live["i"] += 1
            for o in opts:
                o.zero_grad(set_to_none=True)
            F.binary_cross_entropy_with_logits(model(dense, kjt), labels).backward()
            for o in opts:
                o.step()

        live["name"], live["step"] = name, step

    def impl(name):
        def run():
            if live["name"] != name:
                build(name)
            live["step"]()
        return run

    shape = f"{tables} tables x {rows} rows x D={dim}, B={batch}, MLP 512-256"
    return [Case("DLRM train step", shape, {"recops": impl("recops"),
                                            "nn.EmbeddingBag(sparse)+Adagrad": impl("torch")}, samples=batch, switch_cost=True)]
