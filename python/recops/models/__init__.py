# SPDX-License-Identifier: Apache-2.0
"""Recommenders composed from recops.nn (no kernels here)."""

from .sequential import HSTU, SASRec, SeqConfig, build_model, sampled_softmax_loss

__all__ = ["HSTU", "SASRec", "SeqConfig", "build_model", "sampled_softmax_loss"]
