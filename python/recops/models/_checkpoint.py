# SPDX-License-Identifier: Apache-2.0
"""JSON round trip of the model configs (what recops.train.checkpoint writes into config.json)."""

import dataclasses

from ..nn.embedding import FusedOptimizer


class ConfigDict:
    """Mixin for model config dataclasses: JSON round trip, an `embedding_optimizer` field becomes a FusedOptimizer."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        if d.get("embedding_optimizer") is not None:
            d["embedding_optimizer"] = FusedOptimizer(**d["embedding_optimizer"])
        return cls(**d)
