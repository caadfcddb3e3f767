# SPDX-License-Identifier: Apache-2.0
"""recops operators (torch.library custom ops named recops::<op>)."""

from .embedding import (
    embedding_bag,
    embedding_bags,
    embedding_bags_backward,
    embedding_bags_fused,
    embedding_bags_fused_lookup,
    embedding_bags_fused_update,
)
from .attention import jagged_attention
from .dropout import dropout
from .hstu import cpu_bf16_unit, hstu_attention
from .jagged import (
    jagged_to_padded,
    jagged_to_padded_backward,
    lengths_to_offsets,
    offsets_to_lengths,
    padded_to_jagged,
)
from .retrieval import topk_inner_product
from .full_softmax import full_softmax_loss
from .sampled_softmax import sampled_softmax_loss
from .gbce import gbce_beta, gbce_loss
from .ordinal import (
    feedback_to_levels,
    gnolr_loss,
    gnolr_loss_backward,
    ordinal_logistic_loss,
    ordinal_logistic_loss_backward,
)

__all__ = [
    "dropout",
    "embedding_bag",
    "embedding_bags",
    "embedding_bags_backward",
    "embedding_bags_fused",
    "embedding_bags_fused_lookup",
    "embedding_bags_fused_update",
    "hstu_attention",
    "cpu_bf16_unit",
    "jagged_attention",
    "feedback_to_levels",
    "full_softmax_loss",
    "gnolr_loss",
    "gnolr_loss_backward",
    "jagged_to_padded",
    "jagged_to_padded_backward",
    "lengths_to_offsets",
    "offsets_to_lengths",
    "ordinal_logistic_loss",
    "ordinal_logistic_loss_backward",
    "padded_to_jagged",
    "sampled_softmax_loss",
    "gbce_beta",
    "gbce_loss",
    "topk_inner_product",
]
