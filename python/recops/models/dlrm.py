# SPDX-License-Identifier: Apache-2.0
"""DLRM (Naumov et al. 2019): embedding bags for categorical features, a bottom MLP for dense features, pairwise
dot-product interaction and a top MLP giving one click logit."""

import dataclasses
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from ..data.criteo import SPARSE_KEYS
from ..data.keyed_jagged import KeyedJagged
from ..nn.dynamic import DynamicTable
from ..nn.embedding import EmbeddingBagCollection, EmbeddingBagConfig, FusedOptimizer
from ._checkpoint import ConfigDict


@dataclasses.dataclass
class DLRMConfig(ConfigDict):
    """Sizes of a DLRM. bottom_mlp ends with embedding_dim (its output joins the interaction); top_mlp's last
    layer is followed by a 1-unit output layer. embedding_optimizer is fused into the embedding backward.

    dynamic: None (tables of table_sizes rows, ids are rows) or the options of collisionless tables over raw
    64-bit ids (recops.nn.DynamicTable: admit_after, ttl, eviction, and max_growth = max_capacity / capacity,
    default 1), table_sizes then being their capacities."""

    table_sizes: List[int]
    embedding_dim: int = 64
    num_dense: int = 13
    bottom_mlp: Sequence[int] = (512, 256, 64)
    top_mlp: Sequence[int] = (512, 256)
    embedding_optimizer: Optional[FusedOptimizer] = dataclasses.field(
        default_factory=lambda: FusedOptimizer("rowwise_adagrad", lr=0.05))
    sparse_keys: Optional[List[str]] = None
    dynamic: Optional[Dict[str, Any]] = None

    def __post_init__(self):
        self.bottom_mlp, self.top_mlp = tuple(self.bottom_mlp), tuple(self.top_mlp)
        if not self.bottom_mlp or self.bottom_mlp[-1] != self.embedding_dim:
            raise ValueError(f"DLRMConfig: bottom_mlp must end with embedding_dim={self.embedding_dim}, "
                             f"got {self.bottom_mlp}")
        if self.sparse_keys is None:
            self.sparse_keys = (SPARSE_KEYS if len(self.table_sizes) == len(SPARSE_KEYS)
                                else [f"C{i + 1}" for i in range(len(self.table_sizes))])
        if len(self.sparse_keys) != len(self.table_sizes):
            raise ValueError(f"DLRMConfig: {len(self.sparse_keys)} sparse_keys for {len(self.table_sizes)} tables")
        if self.dynamic is not None:
            known = {"admit_after", "ttl", "eviction", "max_growth"}
            if not isinstance(self.dynamic, dict) or set(self.dynamic) - known:
                raise ValueError(f"DLRMConfig: dynamic must be a dict with keys in {sorted(known)}, got "
                                 f"{self.dynamic!r}")
            self.dynamic_tables(1)  # validates the options

    def dynamic_tables(self, dim: int) -> Optional[List[DynamicTable]]:
        """The DynamicTable of every table (None without `dynamic`)."""
        if self.dynamic is None:
            return None
        opts = dict(self.dynamic)
        growth = opts.pop("max_growth", 1)
        if isinstance(growth, bool) or not isinstance(growth, int) or growth < 1:
            raise ValueError(f"DLRMConfig: dynamic max_growth must be an int >= 1, got {growth!r}")
        return [DynamicTable(int(v), max_capacity=int(v) * growth, **opts) for v in self.table_sizes]


def _tables(config: "DLRMConfig", dim: int) -> List[EmbeddingBagConfig]:
    dyn = config.dynamic_tables(dim) or [None] * len(config.table_sizes)
    return [EmbeddingBagConfig(f"t_{k}", v, dim, feature_names=[k], dynamic=dt)
            for k, v, dt in zip(config.sparse_keys, config.table_sizes, dyn)]



def mlp(sizes: Sequence[int], last_relu: bool) -> nn.Sequential:
    layers: List[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or last_relu:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def dot_interaction(dense: Tensor, embeddings: Tensor) -> Tensor:
    """dense [B, D], embeddings [B, F, D] -> [B, D + (F+1)F/2]: dense followed by the dot products of every pair
    of the F + 1 vectors (strictly lower triangle, row-major), DLRM's "dot" interaction."""
    x = torch.cat([dense.unsqueeze(1), embeddings], dim=1)
    z = torch.bmm(x, x.transpose(1, 2))
    n = x.shape[1]
    li, lj = torch.tril_indices(n, n, offset=-1, device=x.device)
    return torch.cat([dense, z[:, li, lj]], dim=1)


class DLRM(nn.Module):
    """forward(dense [B, num_dense], sparse KeyedJagged with the config's keys) -> click logits [B].

    The embedding tables live in one recops EmbeddingBagCollection (sum pooling); with an embedding_optimizer
    their update happens inside backward, so only the MLP parameters go to a torch optimizer
    (`dense_parameters()`)."""

    def __init__(self, config: DLRMConfig, device=None):
        super().__init__()
        self.config = config
        d = config.embedding_dim
        tables = _tables(config, d)
        self.embeddings = EmbeddingBagCollection(tables, optimizer=config.embedding_optimizer, device=device)
        self.bottom = mlp((config.num_dense,) + config.bottom_mlp, last_relu=True)
        f = len(config.table_sizes)
        self.top = mlp((d + (f + 1) * f // 2,) + config.top_mlp + (1,), last_relu=False)
        if device is not None:
            self.bottom.to(device)
            self.top.to(device)

    def dense_parameters(self):
        """The MLP parameters (everything a torch optimizer should step)."""
        return list(self.bottom.parameters()) + list(self.top.parameters())

    def forward(self, dense: Tensor, sparse: KeyedJagged) -> Tensor:
        if dense.dim() != 2 or dense.shape[1] != self.config.num_dense:
            raise ValueError(f"DLRM: dense must be [B, {self.config.num_dense}], got {tuple(dense.shape)}")
        if sparse.stride() != dense.shape[0]:
            raise ValueError(f"DLRM: sparse has batch {sparse.stride()}, dense {dense.shape[0]}")
        pooled = self.embeddings(sparse).concat()  # [B, F * D], tables in config order
        emb = pooled.view(pooled.shape[0], len(self.config.table_sizes), self.config.embedding_dim)
        x = self.bottom(dense)
        return self.top(dot_interaction(x, emb)).squeeze(1)


class LogisticCTR(nn.Module):
    """First-order baseline: logit = b + sum_f w_f[id_f] + <v, dense> (per-id weights in a recops
    EmbeddingBagCollection of dimension 1 with the same fused optimizer). It cannot model feature crosses."""

    def __init__(self, config: DLRMConfig, device=None):
        super().__init__()
        self.config = config
        tables = _tables(config, 1)
        self.embeddings = EmbeddingBagCollection(tables, optimizer=config.embedding_optimizer, device=device)
        with torch.no_grad():
            for t in tables:
                if t.dynamic is None:
                    self.embeddings.table(t.name).zero_()
        self.linear = nn.Linear(config.num_dense, 1, device=device)

    def dense_parameters(self):
        return list(self.linear.parameters())

    def forward(self, dense: Tensor, sparse: KeyedJagged) -> Tensor:
        return self.embeddings(sparse).concat().sum(1) + self.linear(dense).squeeze(1)
