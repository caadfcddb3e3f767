# SPDX-License-Identifier: Apache-2.0
"""Small nn.Modules over recops ops."""

from .hstu import HSTULayer

__all__ = ["HSTULayer"]
