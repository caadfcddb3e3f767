# SPDX-License-Identifier: Apache-2.0
"""Moved to recops.train.ctr; this name keeps old imports working."""

from ..train.ctr import (CTR_MODELS, CTRFitResult, evaluate_ctr, fit_ctr, load_ctr_checkpoint,  # noqa: F401
                         save_ctr_checkpoint, train_step)
