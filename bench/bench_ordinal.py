# SPDX-License-Identifier: Apache-2.0
"""pytest-benchmark view of the ordinal cases (same cases as `python -m recops.bench --families ordinal`).

    pytest bench/bench_ordinal.py --benchmark-only --benchmark-autosave
"""

import functools

import pytest
import torch

from recops.bench.ordinal import SHAPES, ordinal_cases

IMPLS = ["recops", "torch eager", "torch.compile", "copy (bandwidth)"]
OPS = ["gnolr_loss fwd+bwd", "ordinal_logistic_loss fwd+bwd"]


@functools.lru_cache(maxsize=2)
def _cases(device):
    return {(c.op.split(" (")[0], c.shape): c for c in ordinal_cases(torch.device(device), quick=False)}


@pytest.mark.parametrize("shape", [f"B={b},T={t},fp32" for b, t in SHAPES])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op", OPS)
def test_ordinal(time_case, device, op, impl, shape):
    case = _cases(str(device))[(op, shape)]
    time_case(case, impl, 20, 2)
