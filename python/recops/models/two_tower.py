# SPDX-License-Identifier: Apache-2.0
"""Two-tower retrievers over multi-level implicit feedback: GNOLR (one ordinal loss, one embedding space, one
index for every level) and the per-feedback BCE baseline (one loss and one index per level)."""

import dataclasses
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.embedding import EmbeddingBagCollection, EmbeddingBagConfig, FusedOptimizer
from ..nn.ordinal import GNOLRHead, thresholds_from_positive_rates
from ._checkpoint import ConfigDict


@dataclasses.dataclass
class TwoTowerConfig(ConfigDict):
    """Towers: id embedding (embedding_dim, fused optimizer) -> MLP (hidden) -> num_levels heads of head_dim.
    gamma scales the per-level cosines; positive_rates (P(level >= t) among training pairs, negatives included)
    set the initial thresholds."""

    num_users: int
    num_items: int
    num_levels: int
    embedding_dim: int = 64
    hidden: Sequence[int] = (128,)
    head_dim: int = 32
    gamma: float = 4.0
    positive_rates: Optional[List[float]] = None
    embedding_optimizer: Optional[FusedOptimizer] = dataclasses.field(
        default_factory=lambda: FusedOptimizer("rowwise_adagrad", lr=0.05))
    num_layers: int = 3  # lightgcn: propagation layers



class Tower(nn.Module):
    """ids [B] -> [B, T, head_dim]: one recops embedding table, a shared MLP, one linear head per level."""

    def __init__(self, name: str, num_ids: int, cfg: TwoTowerConfig):
        super().__init__()
        self.name = name
        self.embeddings = EmbeddingBagCollection([EmbeddingBagConfig(name, num_ids, cfg.embedding_dim)],
                                                 optimizer=cfg.embedding_optimizer)
        with torch.no_grad():
            self.embeddings.table(name).normal_(0, 0.1)
        layers: List[nn.Module] = []
        width = cfg.embedding_dim
        for h in cfg.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.mlp = nn.Sequential(*layers)
        self.heads = nn.Linear(width, cfg.num_levels * cfg.head_dim)
        self.num_levels, self.head_dim = cfg.num_levels, cfg.head_dim

    def forward(self, ids: Tensor) -> Tensor:
        offsets = torch.arange(ids.shape[0] + 1, dtype=torch.int64, device=ids.device)
        x = self.embeddings({self.name: (ids, offsets)})[self.name]
        return self.heads(self.mlp(x)).view(ids.shape[0], self.num_levels, self.head_dim)


class _TwoTower(nn.Module):
    shared_index = False  # True: item_vectors are the same for every level (one index serves all levels)

    def __init__(self, cfg: TwoTowerConfig):
        super().__init__()
        self.config = cfg
        self.user_tower = Tower("user", cfg.num_users, cfg)
        self.item_tower = Tower("item", cfg.num_items, cfg)

    def dense_parameters(self):
        """Everything but the embedding tables (which the fused optimizer updates)."""
        return [p for n, p in self.named_parameters() if ".embeddings." not in n]

    def pair_loss(self, user: Tensor, item: Tensor, levels: Tensor) -> Tensor:
        raise NotImplementedError

    def level_scores(self, user: Tensor, item: Tensor) -> Tensor:
        """[B, T] score of each pair for each level (higher = more likely to reach that level)."""
        raise NotImplementedError

    def user_vectors(self, users: Tensor, level: int) -> Tensor:
        """Query vectors ranking items for level `level` (1-based) by inner product with item_vectors(level)."""
        raise NotImplementedError

    def item_vectors(self, items: Tensor, level: int) -> Tensor:
        raise NotImplementedError


class GNOLRTwoTower(_TwoTower):
    """GNOLR two-tower (KDD 2025): cos_t between the level-t heads, z_t = sum_{j<=t} gamma cos_j - a_t, nested
    ordinal loss (recops.ops.gnolr_loss via GNOLRHead). Serving: item vectors concat_j v_j/|v_j| are the same for
    every level; the level-t query keeps the first t blocks of concat_j gamma u_j/|u_j| and zeros the rest, so
    one index of item vectors ranks by z_t for every t."""

    shared_index = True

    def __init__(self, cfg: TwoTowerConfig):
        super().__init__(cfg)
        rates = cfg.positive_rates or [0.5 / (t + 1) for t in range(cfg.num_levels)]
        a = thresholds_from_positive_rates(torch.tensor(rates))
        # learned thresholds must start positive and strictly increasing
        self.head = GNOLRHead(cfg.num_levels, cfg.gamma, thresholds=a.clamp_min(0.05).cummax(0).values +
                              0.05 * torch.arange(cfg.num_levels), learn_thresholds=True)

    def pair_loss(self, user: Tensor, item: Tensor, levels: Tensor) -> Tensor:
        return self.head(user, item, levels)

    def level_scores(self, user: Tensor, item: Tensor) -> Tensor:
        return self.head.logits(user, item)

    def user_vectors(self, users: Tensor, level: int) -> Tensor:
        u = self.head.user_vectors(self.user_tower(users))
        u[:, level * self.config.head_dim:] = 0
        return u

    def item_vectors(self, items: Tensor, level: int = 0) -> Tensor:
        return self.head.item_vectors(self.item_tower(items))


class BCETwoTower(_TwoTower):
    """Per-feedback baseline: logit_t = gamma cos_t + b_t, binary cross-entropy on (level >= t) for every t, one
    index per level (the level-t heads)."""

    def __init__(self, cfg: TwoTowerConfig):
        super().__init__(cfg)
        rates = torch.tensor(cfg.positive_rates or [0.5 / (t + 1) for t in range(cfg.num_levels)])
        self.bias = nn.Parameter(torch.log(rates / (1 - rates)))

    def level_scores(self, user: Tensor, item: Tensor) -> Tensor:
        return self.config.gamma * GNOLRHead.cosines(user, item) + self.bias

    def pair_loss(self, user: Tensor, item: Tensor, levels: Tensor) -> Tensor:
        t = torch.arange(1, self.config.num_levels + 1, device=levels.device)
        target = (levels[:, None] >= t).to(user.dtype)
        return F.binary_cross_entropy_with_logits(self.level_scores(user, item), target, reduction="sum") / \
            levels.shape[0]

    def user_vectors(self, users: Tensor, level: int) -> Tensor:
        return F.normalize(self.user_tower(users)[:, level - 1], dim=-1)

    def item_vectors(self, items: Tensor, level: int) -> Tensor:
        return F.normalize(self.item_tower(items)[:, level - 1], dim=-1)


def _lightgcn(cfg):
    from .graph_cf import LightGCN
    return LightGCN(cfg)


def _ngcf(cfg):
    from .graph_cf import NGCF
    return NGCF(cfg)


def _cml(cfg):
    from .cml import CML
    return CML(cfg)


TWO_TOWER_MODELS = {"gnolr": GNOLRTwoTower, "bce": BCETwoTower, "lightgcn": _lightgcn, "ngcf": _ngcf,
                    "cml": _cml}
