# SPDX-License-Identifier: Apache-2.0
"""Ordinal heads over recops.ops.ordinal: single-score OLR (OrdinalHead) and GNOLR (GNOLRHead)."""

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.ordinal import gnolr_loss, ordinal_logistic_loss



def _softplus_inv(y: float) -> float:
    return math.log(math.expm1(y))


def _as_vector(name: str, value, size: int) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.expand(size).clone()
    if t.numel() != size:
        raise ValueError(f"{name} must have {size} elements, got {t.numel()}")
    return t


def _check_increasing(name: str, t: Tensor) -> None:
    if t.numel() > 1 and not bool((t[1:] > t[:-1]).all()):
        raise ValueError(f"{name} must be strictly increasing, got {t.tolist()}")


def thresholds_from_positive_rates(positive_rates) -> Tensor:
    """GNOLR's default thresholds a_t = log((1 - r_t) / r_t) from the positive rate r_t = P(k >= t) of each
    level (so that sigmoid(-a_t) = r_t at zero similarity). positive_rates: T values in (0, 1)."""
    r = torch.as_tensor(positive_rates, dtype=torch.float64).flatten()
    if r.numel() and not bool(((r > 0) & (r < 1)).all()):
        raise ValueError(f"positive_rates must be in (0, 1), got {r.tolist()}")
    return torch.log((1 - r) / r).float()


class OrdinalHead(nn.Module):
    """Proportional-odds head: loss = ordinal_logistic_loss(gamma * scores, thresholds, labels).

    Args:
        num_levels: K ordered classes (K - 1 thresholds).
        thresholds: "learned" (kept strictly increasing as a_1 + cumsum(min_step + softplus(rho)), initialised
            1 apart and centred on 0) or a tensor of K - 1 strictly increasing fixed thresholds (a buffer).
        gamma: fixed scale of the scores (the inverse temperature).
        min_step: the smallest gap between learned thresholds; keeps them strictly increasing in floating point
            when softplus underflows (the op rejects tied thresholds).
    """

    def __init__(self, num_levels: int, thresholds: Union[str, Tensor, Sequence[float]] = "learned",
                 gamma: float = 1.0, min_step: float = 1e-3):
        super().__init__()
        if not 0 < min_step < 1:
            raise ValueError(f"OrdinalHead: min_step must be in (0, 1), got {min_step}")
        self.min_step = float(min_step)
        if num_levels < 1:
            raise ValueError(f"OrdinalHead: num_levels must be >= 1, got {num_levels}")
        self.num_levels = num_levels
        self.gamma = float(gamma)
        self.learned = isinstance(thresholds, str)
        if self.learned:
            if thresholds != "learned":
                raise ValueError(f"OrdinalHead: thresholds must be 'learned' or a tensor, got {thresholds!r}")
            self.first = nn.Parameter(torch.zeros(()))
            self.raw_increments = nn.Parameter(torch.zeros(max(num_levels - 2, 0)))
            self.reset_parameters()
        else:
            fixed = torch.as_tensor(thresholds, dtype=torch.float32).flatten()
            if fixed.numel() != num_levels - 1:
                raise ValueError(f"OrdinalHead: thresholds must have num_levels - 1 = {num_levels - 1} elements, "
                                 f"got {fixed.numel()}")
            _check_increasing("OrdinalHead: thresholds", fixed)
            self.register_buffer("fixed_thresholds", fixed)

    def reset_parameters(self) -> None:
        if self.learned:
            with torch.no_grad():
                self.first.fill_(-(self.num_levels - 2) / 2)
                self.raw_increments.fill_(_softplus_inv(1.0 - self.min_step))

    def thresholds(self) -> Tensor:
        """The K - 1 strictly increasing thresholds."""
        if not self.learned:
            return self.fixed_thresholds
        if self.num_levels == 1:
            return self.first.new_zeros(0)
        steps = torch.cumsum(self.min_step + F.softplus(self.raw_increments), 0)
        return self.first + torch.cat([self.first.new_zeros(1), steps])

    def forward(self, scores: Tensor, labels: Tensor, reduction: str = "mean",
                weights: Optional[Tensor] = None) -> Tensor:
        """scores [B] float, labels [B] int64 in [0, K) -> loss (scalar, or [B] for reduction 'none')."""
        th = self.thresholds().to(scores.dtype)
        return ordinal_logistic_loss(self.gamma * scores, th, labels, reduction, weights)

    def probabilities(self, scores: Tensor) -> Tensor:
        """P(y = k) [B, K] (rows sum to 1)."""
        th = self.thresholds().to(scores.dtype)
        le = torch.sigmoid(th[None, :] - self.gamma * scores[:, None])  # P(y <= k), k < K - 1
        le = torch.cat([le.new_zeros(le.shape[0], 1), le, le.new_ones(le.shape[0], 1)], dim=1)
        return le[:, 1:] - le[:, :-1]

    def extra_repr(self) -> str:
        return f"num_levels={self.num_levels}, thresholds={'learned' if self.learned else 'fixed'}, gamma={self.gamma}"


class GNOLRHead(nn.Module):
    """GNOLR head (KDD 2025): T feedback levels, one embedding per level on each tower.

    cos_t = cosine(u_t, v_t), z_t = sum_{j<=t} gamma_j cos_j - a_t, P(k >= t) = sigmoid(z_t), and the loss is
    recops.ops.gnolr_loss. For serving, user_vectors (concat_j gamma_j u_j / |u_j|) dotted with item_vectors
    (concat_j v_j / |v_j|) is sum_j gamma_j cos_j = z_T + a_T: one index ranks by P(k >= T).

    Args:
        num_levels: T.
        gamma: fixed per-level scales (a float or T floats).
        thresholds: T fixed thresholds; when None they come from positive_rates.
        positive_rates: r_t = P(k >= t) per level, giving a_t = log((1 - r_t) / r_t).
        learn_thresholds: learn a = cumsum(exp(rho)) (positive, strictly increasing), initialised at the fixed
            thresholds above (which must then be positive and increasing).
        prior_weight: with learned thresholds, adds prior_weight * sum_t (a_t - prior_t)^2 to the loss.
        nested, min_gap: passed to gnolr_loss.
    """

    def __init__(self, num_levels: int, gamma: Union[float, Sequence[float]], thresholds=None,
                 positive_rates=None, learn_thresholds: bool = False, prior_weight: float = 0.0,
                 nested: bool = True, min_gap: float = 1e-6):
        super().__init__()
        if num_levels < 1:
            raise ValueError(f"GNOLRHead: num_levels must be >= 1, got {num_levels}")
        if thresholds is None and positive_rates is None:
            raise ValueError("GNOLRHead: give thresholds or positive_rates")
        self.num_levels = num_levels
        self.nested, self.min_gap, self.prior_weight = bool(nested), float(min_gap), float(prior_weight)
        self.register_buffer("gamma", _as_vector("GNOLRHead: gamma", gamma, num_levels))
        prior = (thresholds_from_positive_rates(positive_rates) if thresholds is None
                 else torch.as_tensor(thresholds, dtype=torch.float32).flatten())
        prior = _as_vector("GNOLRHead: thresholds", prior, num_levels)
        self.register_buffer("prior_thresholds", prior)
        self.learn_thresholds = bool(learn_thresholds)
        if self.learn_thresholds:
            if prior[0] <= 0:
                raise ValueError(f"GNOLRHead: learned thresholds start positive, got a_1 = {float(prior[0])}")
            _check_increasing("GNOLRHead: learned thresholds' initial values", prior)
            self.rho = nn.Parameter(torch.zeros(num_levels))
            self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.learn_thresholds:
            p = self.prior_thresholds
            with torch.no_grad():
                self.rho.copy_(torch.log(torch.cat([p[:1], p[1:] - p[:-1]])))

    def thresholds(self) -> Tensor:
        """a [T]."""
        return torch.cumsum(torch.exp(self.rho), 0) if self.learn_thresholds else self.prior_thresholds

    @staticmethod
    def cosines(user: Tensor, item: Tensor) -> Tensor:
        """user, item [B, T, d] -> per-level cosine similarities [B, T]."""
        return (F.normalize(user, dim=-1) * F.normalize(item, dim=-1)).sum(-1)

    def logits(self, user: Tensor, item: Tensor) -> Tensor:
        """z [B, T] (P(k >= t) = sigmoid(z_t))."""
        cos = self.cosines(user, item)
        return torch.cumsum(self.gamma.to(cos.dtype) * cos, 1) - self.thresholds().to(cos.dtype)

    def forward(self, user: Tensor, item: Tensor, levels: Tensor, reduction: str = "mean",
                weights: Optional[Tensor] = None) -> Tensor:
        """user, item [B, T, d], levels [B] int64 in [0, T] -> loss (scalar, or [B] for reduction 'none')."""
        cos = self.cosines(user, item)
        a = self.thresholds()
        loss = gnolr_loss(cos, self.gamma.to(cos.dtype), a.to(cos.dtype), levels, reduction, weights,
                          self.min_gap, self.nested)
        if self.learn_thresholds and self.prior_weight > 0:
            loss = loss + self.prior_weight * (a - self.prior_thresholds).square().sum().to(loss.dtype)
        return loss

    def user_vectors(self, user: Tensor) -> Tensor:
        """[B, T, d] -> serving vectors [B, T * d]: concat_j gamma_j u_j / |u_j|."""
        u = F.normalize(user, dim=-1) * self.gamma.to(user.dtype)[:, None]
        return u.flatten(-2)

    @staticmethod
    def item_vectors(item: Tensor) -> Tensor:
        """[B, T, d] -> serving vectors [B, T * d]: concat_j v_j / |v_j|."""
        return F.normalize(item, dim=-1).flatten(-2)

    def extra_repr(self) -> str:
        return (f"num_levels={self.num_levels}, nested={self.nested}, "
                f"thresholds={'learned' if self.learn_thresholds else 'fixed'}, prior_weight={self.prior_weight}")
