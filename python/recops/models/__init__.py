# SPDX-License-Identifier: Apache-2.0
"""Recommenders composed from recops.nn (no kernels here)."""

from .dlrm import DLRM, DLRMConfig, LogisticCTR, dot_interaction
from .sequential import BERT4Rec, HSTU, HSTUCache, HSTUServer, SASRec, SeqConfig, build_model, sampled_softmax_loss
from .two_tower import BCETwoTower, GNOLRTwoTower, TwoTowerConfig

__all__ = ["BERT4Rec", "HSTU", "HSTUCache", "HSTUServer", "SASRec", "SeqConfig", "build_model",
           "sampled_softmax_loss", "DLRM", "DLRMConfig", "LogisticCTR", "dot_interaction", "BCETwoTower", "GNOLRTwoTower", "TwoTowerConfig"]
