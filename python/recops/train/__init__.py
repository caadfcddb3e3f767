# SPDX-License-Identifier: Apache-2.0
"""Training of every model family on one epoch loop (`recops.train.loop`) and one checkpoint format
(`recops.train.checkpoint`): sequential (HSTU, SASRec), CTR ranking (DLRM, logistic) and two-tower retrieval
(GNOLR, per-feedback BCE). The trainers live in `recops.train.sequential`, `.ctr` and `.two_tower`."""

from . import checkpoint
from .loop import EpochStats, LoopResult, run_epochs

__all__ = ["EpochStats", "LoopResult", "checkpoint", "run_epochs"]
