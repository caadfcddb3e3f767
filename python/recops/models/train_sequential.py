# SPDX-License-Identifier: Apache-2.0
"""Moved to recops.train.sequential; this name keeps old imports working."""

from ..train.sequential import (KS, FitResult, evaluate, fit, load_checkpoint, popularity_metrics,  # noqa: F401
                                save_checkpoint)
