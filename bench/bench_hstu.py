# SPDX-License-Identifier: Apache-2.0
"""pytest-benchmark view of the HSTU attention cases (same cases as `python -m recops.bench --families hstu`).

    pytest bench/bench_hstu.py --benchmark-only --benchmark-autosave
"""

import functools

import pytest
import torch

from recops.bench.hstu import SHAPES, hstu_cases

IMPLS = ["recops", "padded_ref", "sdpa_padded"]
OPS = ["hstu_attention fwd", "hstu_attention fwd+bwd"]
MATMUL = "fp32 matmul (machine reference)"


@functools.lru_cache(maxsize=2)
def _cases(device):
    return {(c.op, c.shape): c for c in hstu_cases(torch.device(device), quick=False)}


@pytest.mark.parametrize("shape", [s[0] for s in SHAPES])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op", OPS)
def test_hstu(time_case, device, op, impl, shape):
    case = _cases(str(device))[(op, shape)]
    time_case(case, impl, 5, 1)


def test_matmul_reference(time_case, device):
    """The machine's fp32 matmul GFLOP/s, to read the attention cases' GFLOP/s against."""
    (case,) = [c for (op, _), c in _cases(str(device)).items() if op == MATMUL]
    time_case(case, "torch.mm", 5, 1)
