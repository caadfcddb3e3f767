# SPDX-License-Identifier: Apache-2.0
"""Small nn.Modules over recops.ops."""

from .ordinal import GNOLRHead, OrdinalHead, thresholds_from_positive_rates

__all__ = ["GNOLRHead", "OrdinalHead", "thresholds_from_positive_rates"]
