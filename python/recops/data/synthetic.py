# SPDX-License-Identifier: Apache-2.0
"""Synthetic data generators for benchmarks and tests."""

from typing import Tuple

import numpy as np


def clustered_embeddings(num_items: int = 1_000_000, dim: int = 64, num_queries: int = 10_000,
                         num_clusters: int = 1000, norm_spread: float = 0.5, cluster_std: float = 0.6,
                         seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Item and query embeddings shaped like a trained two-tower model's, for retrieval benchmarks.

    Items come from a mixture of `num_clusters` Gaussian clusters around random unit directions (cluster sizes
    Zipf-like), with spread `cluster_std` relative to the centre norm. Item norms are log-normal and
    popularity-correlated: norm = exp(norm_spread * z) with z standardised log-popularity (cluster popularity
    plus item noise), so popular items have large norms, which is what makes inner-product search hard for
    distance-based indexes. norm_spread = 0 gives unit norms. Queries are unit vectors drawn from the same
    mixture (popular clusters more often).

    Returns:
        (items [num_items, dim] float32, queries [num_queries, dim] float32).
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, num_clusters + 1) ** 0.8
    weights /= weights.sum()

    def draw(n):
        cluster = rng.choice(num_clusters, n, p=weights)
        x = centres[cluster] + (cluster_std / np.sqrt(dim)) * rng.standard_normal((n, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True), cluster

    items, cluster = draw(num_items)
    log_pop = np.log(weights[cluster] * num_clusters) + rng.standard_normal(num_items)
    z = (log_pop - log_pop.mean()) / max(log_pop.std(), 1e-12)
    items *= np.exp(norm_spread * z).astype(np.float32)[:, None]
    queries, _ = draw(num_queries)
    return np.ascontiguousarray(items, np.float32), np.ascontiguousarray(queries, np.float32)
