# SPDX-License-Identifier: Apache-2.0
"""Item sampling probabilities for the logQ correction of sampled / in-batch softmax (Yi et al., "Sampling-Bias-
Corrected Neural Modeling for Large Corpus Item Recommendations", RecSys 2019).

`StreamingFrequencyEstimator` estimates, for a stream whose item counts are unknown, each item's average number
of steps between occurrences (delta) in hashed buckets; its sampling probability per step is 1 / delta.
`log_q_from_counts` gives the exact log-probabilities when the vocabulary and counts are known. Either feeds
`recops.ops.sampled_softmax_loss(..., log_q=...)`."""

import math
import torch
from torch import Tensor, nn

from .dynamic import route


class StreamingFrequencyEstimator(nn.Module):
    """Yi et al.'s streaming estimator over `num_buckets` hashed buckets (ids of any int64 value).

    Per call of update(ids) (one training step t = 1, 2, ...), for each distinct bucket h of the batch's ids:
    B[h] <- (1 - alpha) B[h] + alpha (t - A[h]); A[h] <- t (the paper's update; a batch counts an id once). A
    bucket's first sighting sets B[h] = t (the steps it waited) instead of averaging from an arbitrary start,
    which would bias rare items for ~1/alpha sightings; a bucket never seen reads B = max(t, 1). log_q(ids) =
    -log B[h] (the per-step probability 1 / delta; constants shift every logit alike and cancel in the softmax).
    Collisions make two ids share an estimate (the paper's trade-off; size the buckets to the vocabulary).
    State (A, B, step) is in state_dict()."""

    def __init__(self, num_buckets: int, alpha: float = 0.01):
        super().__init__()
        if isinstance(num_buckets, bool) or not isinstance(num_buckets, int) or num_buckets < 1:
            raise ValueError(f"StreamingFrequencyEstimator: num_buckets must be an int >= 1, got {num_buckets!r}")
        if not (0 < alpha <= 1):
            raise ValueError(f"StreamingFrequencyEstimator: alpha must be in (0, 1], got {alpha}")
        self.num_buckets, self.alpha = num_buckets, float(alpha)
        self.register_buffer("last_step", torch.zeros(num_buckets, dtype=torch.float64))
        self.register_buffer("delta", torch.zeros(num_buckets, dtype=torch.float64))  # 0: never seen
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))

    def buckets(self, ids: Tensor) -> Tensor:
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"StreamingFrequencyEstimator: ids must be an integer tensor, got {ids.dtype}")
        return route(ids.reshape(-1), self.num_buckets).to(self.delta.device).view(ids.shape)

    @torch.no_grad()
    def update(self, ids: Tensor) -> None:
        """One step: the batch's ids (any shape) were sampled."""
        self.step += 1
        t = float(self.step)
        h = torch.unique(self.buckets(ids))
        gap = t - self.last_step[h]
        first = self.delta[h] == 0
        self.delta[h] = torch.where(first, gap, (1 - self.alpha) * self.delta[h] + self.alpha * gap)
        self.last_step[h] = t

    def log_q(self, ids: Tensor) -> Tensor:
        """log of each id's estimated sampling probability per step (float32, ids' shape)."""
        d = self.delta[self.buckets(ids)]
        d = torch.where(d == 0, torch.full_like(d, max(float(self.step), 1.0)), d)
        return (-torch.log(d.clamp(min=1.0))).float()

    def forward(self, ids: Tensor) -> Tensor:
        """update(ids) (in training mode), then log_q(ids)."""
        if self.training:
            self.update(ids)
        return self.log_q(ids)


def log_q_from_counts(counts: Tensor, smoothing: float = 1.0) -> Tensor:
    """Exact log sampling probabilities log((c_i + smoothing) / sum(c + smoothing)) for a known vocabulary, e.g.
    the items' training counts for in-batch softmax (positives are drawn in proportion to them). float32 [V]."""
    counts = counts.to(torch.float64)
    if counts.dim() != 1 or counts.numel() == 0:
        raise ValueError(f"log_q_from_counts: counts must be 1-D and non-empty, got shape {tuple(counts.shape)}")
    if bool((counts < 0).any()) or not math.isfinite(smoothing) or smoothing < 0:
        raise ValueError("log_q_from_counts: counts must be >= 0 and smoothing finite and >= 0")
    c = counts + smoothing
    if float(c.sum()) <= 0:
        raise ValueError("log_q_from_counts: every count is 0 and smoothing is 0")
    return torch.log(c / c.sum()).float()
