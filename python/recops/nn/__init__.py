# SPDX-License-Identifier: Apache-2.0
"""Small nn.Modules over recops.ops."""

from .embedding import EmbeddingBagCollection, EmbeddingBagConfig, EmbeddingBagOutput, FusedOptimizer, TableGroup
from .hstu import HSTULayer
from .ordinal import GNOLRHead, OrdinalHead, thresholds_from_positive_rates

__all__ = [
    "EmbeddingBagCollection",
    "EmbeddingBagConfig",
    "EmbeddingBagOutput",
    "FusedOptimizer",
    "TableGroup",
    "GNOLRHead", "HSTULayer", "OrdinalHead", "thresholds_from_positive_rates"]
