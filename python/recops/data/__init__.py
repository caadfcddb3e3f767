# SPDX-License-Identifier: Apache-2.0
"""Batch containers, collate helpers and (later) data readers and synthetic generators."""

from .jagged import Jagged
from .keyed_jagged import KeyedJagged

__all__ = ["Jagged", "KeyedJagged"]
