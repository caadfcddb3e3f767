# SPDX-License-Identifier: Apache-2.0
"""Pure-PyTorch references of the ordinal losses, written naively from the definitions in float64.

They compute log(p1 - p2) directly, so they are exact for ordinary inputs and give inf/NaN for extreme ones
(|z| ~ 1e4, z_k <= z_{k+1}) where recops stays finite: that contrast is tested.
"""

from typing import Optional

import torch
from torch import Tensor


def _reduce(loss: Tensor, reduction: str, weights: Optional[Tensor]) -> Tensor:
    if weights is not None:
        loss = loss * weights.double()
    if reduction == "none":
        return loss
    total = loss.sum()
    return total / loss.shape[0] if reduction == "mean" and loss.shape[0] > 0 else total


def ordinal_logistic_loss(scores: Tensor, thresholds: Tensor, labels: Tensor, reduction: str = "mean",
                          weights: Optional[Tensor] = None, min_gap: float = 1e-6) -> Tensor:
    """Reference implementation; slow. See recops.ops.ordinal_logistic_loss (min_gap is unused: no clamp)."""
    f = scores.double()
    inf = torch.full((1,), float("inf"), dtype=torch.float64, device=scores.device)
    theta = torch.cat([-inf, thresholds.double(), inf])  # theta_0 .. theta_K
    cdf = torch.sigmoid(theta[None, :] - f[:, None])  # P(y <= k - 1) at column k
    k = labels[:, None]
    p = cdf.gather(1, k + 1) - cdf.gather(1, k)
    return _reduce(-torch.log(p[:, 0]), reduction, weights).to(scores.dtype)


def _level_probs(z: Tensor, num_levels: int) -> Tensor:
    """P(k) for k = 0..s over sub-task s = num_levels from cumulative P(k >= t) = sigmoid(z_t): [B, s + 1]."""
    ones = torch.ones_like(z[:, :1])
    ge = torch.cat([ones, torch.sigmoid(z[:, :num_levels]), torch.zeros_like(ones)], dim=1)  # P(k >= t), t=0..s+1
    return ge[:, :-1] - ge[:, 1:]


def gnolr_loss(cos: Tensor, gamma: Tensor, thresholds: Tensor, levels: Tensor, reduction: str = "mean",
               weights: Optional[Tensor] = None, min_gap: float = 1e-6, nested: bool = True) -> Tensor:
    """Reference implementation; slow. See recops.ops.gnolr_loss (min_gap is unused: no clamp)."""
    num_levels = cos.shape[1]
    z = torch.cumsum(gamma.double() * cos.double(), dim=1) - thresholds.double()
    if nested:
        loss = torch.zeros(cos.shape[0], dtype=torch.float64, device=cos.device)
        for s in range(1, num_levels + 1):  # sub-task s: an OLR over {0..s} with label min(k, s)
            p = _level_probs(z, s).gather(1, levels.clamp(max=s)[:, None])[:, 0]
            loss = loss - torch.log(p)
    else:
        loss = -torch.log(_level_probs(z, num_levels).gather(1, levels[:, None])[:, 0])
    return _reduce(loss, reduction, weights).to(cos.dtype)


def feedback_to_levels(labels: Tensor) -> Tensor:
    """Reference implementation; slow. See recops.ops.feedback_to_levels."""
    out = torch.zeros(labels.shape[0], dtype=torch.int64, device=labels.device)
    for t in range(labels.shape[1]):
        out = torch.where(labels[:, t] != 0, t + 1, out)
    return out
