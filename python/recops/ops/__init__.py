# SPDX-License-Identifier: Apache-2.0
"""recops operators (torch.library custom ops named recops::<op>)."""

from .hstu import hstu_attention
from .jagged import (
    jagged_to_padded,
    jagged_to_padded_backward,
    lengths_to_offsets,
    offsets_to_lengths,
    padded_to_jagged,
)

__all__ = [
    "hstu_attention",
    "jagged_to_padded",
    "jagged_to_padded_backward",
    "lengths_to_offsets",
    "offsets_to_lengths",
    "padded_to_jagged",
]
