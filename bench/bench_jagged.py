# SPDX-License-Identifier: Apache-2.0
"""pytest-benchmark view of the jagged cases (same cases as `python -m recops.bench --families jagged`).

    pytest bench --benchmark-only --benchmark-autosave
"""

import functools

import pytest
import torch

from recops.bench.jagged import SHAPES, jagged_cases

OP_IMPLS = {
    "jagged_to_padded": ["recops", "torch.nested", "pad_sequence", "index_scatter(ref)"],
    "padded_to_jagged": ["recops", "torch.nested", "bool_mask", "index_gather(ref)"],
    "jagged_to_padded fwd+bwd": ["recops", "index_scatter(ref)"],
}
PARAMS = [(op, impl) for op, impls in OP_IMPLS.items() for impl in impls]


@functools.lru_cache(maxsize=2)
def _cases(device):
    return {(c.op, c.shape): c for c in jagged_cases(torch.device(device), quick=False)}


@pytest.mark.parametrize("shape", [s[0] for s in SHAPES])
@pytest.mark.parametrize("op,impl", PARAMS)
def test_jagged(time_case, device, op, impl, shape):
    case = _cases(str(device))[(op, shape)]
    time_case(case, impl, 20, 2)
