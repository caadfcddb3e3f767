# SPDX-License-Identifier: Apache-2.0
"""gBCE (Petrov & Macdonald, "gSASRec: Reducing Overconfidence in Sequential Recommendation Trained with Negative
Sampling", RecSys 2023): binary cross-entropy over one positive and k sampled negatives, with the positive's
probability raised to the power beta so the model is not over-confident after negative sampling:

    loss = -beta * log sigmoid(s+) - sum_j log(1 - sigmoid(s-_j)),
    alpha = k / (num_items - 1) (the negative sampling rate), beta = alpha * (t * (1 - 1/alpha) + 1/alpha),

t in [0, 1] the calibration parameter: t = 0 is plain BCE (beta = 1), t = 1 gives beta = alpha. Written with
softplus (log sigmoid(x) = -softplus(-x)), stable for any finite logit."""

import torch
import torch.nn.functional as F
from torch import Tensor


def gbce_beta(num_negatives: int, num_items: int, t: float) -> float:
    """beta of gBCE for k = num_negatives sampled among num_items."""
    if num_items < 2 or not 1 <= num_negatives <= num_items - 1:
        raise ValueError(f"gbce_loss: need 1 <= num_negatives <= num_items - 1, got {num_negatives} negatives for "
                         f"{num_items} items")
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"gbce_loss: t must be in [0, 1], got {t}")
    alpha = num_negatives / (num_items - 1)
    return alpha * (t * (1 - 1 / alpha) + 1 / alpha)


def gbce_loss(pos_logits: Tensor, neg_logits: Tensor, num_items: int, t: float = 0.75,
              reduction: str = "mean") -> Tensor:
    """pos_logits [L], neg_logits [L, k] -> gBCE per row ([L] for reduction "none"), mean or sum."""
    if pos_logits.dim() != 1 or neg_logits.dim() != 2 or neg_logits.shape[0] != pos_logits.shape[0]:
        raise ValueError(f"gbce_loss: pos_logits must be [L] and neg_logits [L, k], got {tuple(pos_logits.shape)} "
                         f"and {tuple(neg_logits.shape)}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"gbce_loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    beta = gbce_beta(neg_logits.shape[1], num_items, t)
    loss = beta * F.softplus(-pos_logits) + F.softplus(neg_logits).sum(1)
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss
