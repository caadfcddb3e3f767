# SPDX-License-Identifier: Apache-2.0
"""Small nn.Modules over recops.ops."""

from .hstu import HSTULayer
from .ordinal import GNOLRHead, OrdinalHead, thresholds_from_positive_rates

__all__ = ["GNOLRHead", "HSTULayer", "OrdinalHead", "thresholds_from_positive_rates"]
