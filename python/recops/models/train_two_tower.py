# SPDX-License-Identifier: Apache-2.0
"""Moved to recops.train.two_tower; this name keeps old imports working."""

from ..train.two_tower import (TwoTowerFitResult, build_two_tower, evaluate_two_tower, fit_two_tower,  # noqa: F401
                               load_two_tower_checkpoint, make_pairs, pair_rates, popularity_two_tower_metrics,
                               save_two_tower_checkpoint, train_step)
