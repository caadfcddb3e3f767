# SPDX-License-Identifier: Apache-2.0
"""Small nn.Modules over recops.ops."""

from .embedding import EmbeddingBagCollection, EmbeddingBagConfig, EmbeddingBagOutput, FusedOptimizer, TableGroup
from .dynamic import DynamicTable, IdMap, static_table
from .frequency import StreamingFrequencyEstimator, log_q_from_counts
from .graph import CSRGraph, bipartite_graph, lightgcn_embeddings, propagate
from .attention import Dropout, TransformerLayer, use_torch_dropout
from .hstu import HSTULayer
from .ordinal import GNOLRHead, OrdinalHead, thresholds_from_positive_rates

__all__ = [
    "EmbeddingBagCollection",
    "EmbeddingBagConfig",
    "EmbeddingBagOutput",
    "FusedOptimizer",
    "TableGroup",
    "DynamicTable", "IdMap", "static_table",
    "StreamingFrequencyEstimator", "log_q_from_counts",
    "CSRGraph", "bipartite_graph", "lightgcn_embeddings", "propagate",
    "Dropout", "GNOLRHead", "HSTULayer", "OrdinalHead", "TransformerLayer", "thresholds_from_positive_rates", "use_torch_dropout"]
