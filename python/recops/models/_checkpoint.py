# SPDX-License-Identifier: Apache-2.0
"""Checkpoints of the ranking and two-tower models: model.pt (state_dict, fused-optimizer state included),
config.json (family, model kind, config) and metrics.json (which also records the data spec for `recops eval`)."""

import dataclasses
import json
import os
from typing import Callable, Dict

import torch

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


def save_model(path: str, model, family: str, kind: str, metrics: dict) -> None:
    os.makedirs(path, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(path, "model.pt"))
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"family": family, "model": kind, "config": model.config.to_dict()}, f, indent=2)
    with open(os.path.join(path, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)


def load_model(path: str, builders: Dict[str, Callable], config_cls):
    """(model, spec) from a folder written by save_model; builders maps the model kind to its class."""
    with open(os.path.join(path, "config.json")) as f:
        spec = json.load(f)
    model = builders[spec["model"]](config_cls.from_dict(spec["config"]))
    model.load_state_dict(torch.load(os.path.join(path, "model.pt"), weights_only=True))
    return model, spec
