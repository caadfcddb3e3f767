# SPDX-License-Identifier: Apache-2.0
"""Batch containers, collate helpers, synthetic generators and (later) data readers."""

from .jagged import Jagged
from .synthetic import clustered_embeddings

__all__ = ["Jagged", "clustered_embeddings"]
