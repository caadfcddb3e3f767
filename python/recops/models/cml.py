# SPDX-License-Identifier: Apache-2.0
"""CML (Hsieh et al., "Collaborative Metric Learning", WWW 2017): users and items as points in one Euclidean
space, pulled together for observed pairs and pushed a margin apart from sampled negatives.

Loss per (user u, positive i, U sampled negatives j): w(rank) * sum_j [margin + d(u,i)^2 - d(u,j)^2]_+ with the
WARP weight w = log(1 + rank), rank ~ floor(num_items * violating / U) estimated from the negatives that violate
the margin; plus lambda_c times the covariance regulariser (||C||_F - ||diag C||_2) / N over the batch's
points, which decorrelates the dimensions; every point is clipped back into the unit ball after each step.

Serving: the nearest items by -||u - v||^2 = 2 u.v - ||v||^2 - ||u||^2; for one user the last term is a constant,
so the ranking is the inner product of the augmented vectors [u, 1] and [2v, -||v||^2]: user_vectors /
item_vectors return those, and the existing ExactIndex, IVFIndex and fused top-k serve CML unchanged."""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CML(nn.Module):
    """config: a TwoTowerConfig (num_users, num_items, num_levels, embedding_dim) plus margin / negatives /
    cov_weight given to the trainer. One shared index for every level."""

    shared_index = True

    def __init__(self, cfg, margin: float = 1.0):
        super().__init__()
        self.config = cfg
        d = cfg.embedding_dim
        self.user = nn.Parameter(torch.randn(cfg.num_users, d) / math.sqrt(d))
        self.item = nn.Parameter(torch.randn(cfg.num_items, d) / math.sqrt(d))
        self.margin = margin
        self.clip()

    def dense_parameters(self):
        return [self.user, self.item]

    @torch.no_grad()
    def clip(self) -> None:
        """Every point back into the unit ball."""
        for p in (self.user, self.item):
            p.div_(p.norm(dim=1, keepdim=True).clamp(min=1.0))

    def user_tower(self, users: Tensor) -> Tensor:
        return self.user[users]

    def item_tower(self, items: Tensor) -> Tensor:
        return self.item[items]

    def level_scores(self, user: Tensor, item: Tensor) -> Tensor:
        return (-(user - item).square().sum(-1, keepdim=True)).expand(-1, self.config.num_levels)

    @torch.no_grad()
    def user_vectors(self, users: Tensor, level: int) -> Tensor:
        u = self.user[users]
        return torch.cat([u, torch.ones(u.shape[0], 1)], dim=1)

    @torch.no_grad()
    def item_vectors(self, items: Tensor, level: int = 0) -> Tensor:
        v = self.item[items]
        return torch.cat([2 * v, -v.square().sum(1, keepdim=True)], dim=1)

    def loss(self, users: Tensor, pos: Tensor, neg: Tensor, cov_weight: float = 10.0) -> Tensor:
        """users, pos [B]; neg [B, U] sampled items."""
        u, i, j = self.user[users], self.item[pos], self.item[neg]
        d_pos = (u - i).square().sum(-1)                       # [B]
        d_neg = (u.unsqueeze(1) - j).square().sum(-1)          # [B, U]
        hinge = F.relu(self.margin + d_pos.unsqueeze(1) - d_neg)
        violating = (hinge > 0).sum(1).float()
        rank = torch.floor(self.config.num_items * violating / neg.shape[1])
        w = torch.log1p(rank).detach()
        metric = (w * hinge.sum(1)).mean()
        pts = torch.cat([u, i])
        c = pts - pts.mean(0, keepdim=True)
        cov = c.t() @ c / pts.shape[0]
        cov_loss = (cov.norm() - cov.diagonal().norm()) / pts.shape[0]
        return metric + cov_weight * cov_loss
