# SPDX-License-Identifier: Apache-2.0
"""LightGCN (He et al., SIGIR 2020): user and item embeddings smoothed over the normalised user-item graph,
E = mean(E_0, A E_0, ..., A^K E_0), trained with BPR. The propagation runs through recops' embedding-bag kernel
(recops.nn.graph.propagate, forward and backward as one kernel each). It plugs into the two-tower family: one
shared index (the same vectors for every feedback level), and the two-tower evaluation (full ranking with
training items excluded, AUC / GAUC)."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.multibehavior import FeedbackData
from ..nn.graph import CSRGraph, bipartite_graph, lightgcn_embeddings


class LightGCN(nn.Module):
    """config: a TwoTowerConfig (num_users, num_items, num_levels, embedding_dim, num_layers). The graph of the
    training pairs (set_graph) is part of the state_dict, so a checkpoint serves without the data."""

    shared_index = True

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        n = cfg.num_users + cfg.num_items
        self.embedding = nn.Parameter(torch.randn(n, cfg.embedding_dim) * 0.1)
        for name, dtype in (("graph_indptr", torch.int64), ("graph_indices", torch.int64),
                            ("graph_weights", torch.float32)):
            self.register_buffer(name, torch.zeros(n + 1 if name == "graph_indptr" else 0, dtype=dtype))
        self._graph: Optional[CSRGraph] = None
        self._cache: Optional[Tensor] = None

    def dense_parameters(self):
        return [self.embedding]

    def set_graph(self, train: FeedbackData) -> None:
        """The normalised graph of every training pair (all levels: deeper and shallower behaviours alike)."""
        g = bipartite_graph(train.users, train.items, self.config.num_users, self.config.num_items)
        self.graph_indptr, self.graph_indices, self.graph_weights = g.indptr, g.indices, g.weights
        self._graph, self._cache = g, None

    def graph(self) -> CSRGraph:
        if self._graph is None:
            n = self.config.num_users + self.config.num_items
            self._graph = CSRGraph(self.graph_indptr, self.graph_indices, self.graph_weights, n, symmetric=True)
        return self._graph

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("graph_indptr", "graph_indices", "graph_weights"):  # sized by the data: take the saved shape
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        self._graph, self._cache = None, None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def final_embeddings(self) -> Tensor:
        """[U + I, D]: the layer mean (cached in eval mode until train() or a new graph)."""
        if not self.training and self._cache is not None:
            return self._cache
        e = lightgcn_embeddings(self.embedding, self.graph(), self.config.num_layers)
        if not self.training:
            self._cache = e.detach()
        return e

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def user_tower(self, users: Tensor) -> Tensor:
        return self.final_embeddings()[users]

    def item_tower(self, items: Tensor) -> Tensor:
        return self.final_embeddings()[self.config.num_users + items]

    def level_scores(self, user: Tensor, item: Tensor) -> Tensor:
        """[B, T]: the same inner product for every level (one index serves them all)."""
        return (user * item).sum(-1, keepdim=True).expand(-1, self.config.num_levels)

    @torch.no_grad()
    def user_vectors(self, users: Tensor, level: int) -> Tensor:
        return self.user_tower(users).detach()

    @torch.no_grad()
    def item_vectors(self, items: Tensor, level: int = 0) -> Tensor:
        return self.item_tower(items).detach()

    def bpr_loss(self, users: Tensor, pos: Tensor, neg: Tensor, reg: float = 1e-4) -> Tensor:
        """BPR over (user, positive, sampled negative) with L2 on the layer-0 rows used (LightGCN's recipe)."""
        e = self.final_embeddings()
        u, i, j = e[users], e[self.config.num_users + pos], e[self.config.num_users + neg]
        loss = F.softplus(-((u * i).sum(-1) - (u * j).sum(-1))).mean()
        e0 = self.embedding
        l2 = (e0[users].square().sum() + e0[self.config.num_users + pos].square().sum()
              + e0[self.config.num_users + neg].square().sum()) / (2 * users.shape[0])
        return loss + reg * l2


class NGCF(LightGCN):
    """NGCF (Wang et al., SIGIR 2019): per layer k, with L = A_hat (the normalised graph, no self loops),
    E_{k+1} = LeakyReLU((L E_k + E_k) W1_k + ((L E_k) * E_k) W2_k), message dropout after each layer (training
    only), final embeddings = the concatenation of E_0 .. E_K (each layer L2-normalised, as the authors' code does).
    The propagation L E_k is the same embedding-bag kernel as LightGCN's; the layer weights go to Adam with the
    embeddings."""

    def __init__(self, cfg, dropout: float = 0.1):
        super().__init__(cfg)
        d = cfg.embedding_dim
        self.w1 = nn.ModuleList([nn.Linear(d, d) for _ in range(cfg.num_layers)])
        self.w2 = nn.ModuleList([nn.Linear(d, d) for _ in range(cfg.num_layers)])
        self.dropout = dropout

    def dense_parameters(self):
        return [self.embedding] + list(self.w1.parameters()) + list(self.w2.parameters())

    def final_embeddings(self) -> Tensor:
        if not self.training and self._cache is not None:
            return self._cache
        from ..nn.graph import propagate

        e = self.embedding
        layers = [e]
        for w1, w2 in zip(self.w1, self.w2):
            side = propagate(e, self.graph())
            e = F.leaky_relu(w1(side + e) + w2(side * e), 0.2)
            e = F.dropout(e, self.dropout, self.training)
            layers.append(F.normalize(e, dim=1))
        out = torch.cat(layers, dim=1)
        if not self.training:
            self._cache = out.detach()
        return out
