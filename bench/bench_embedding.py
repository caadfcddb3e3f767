# SPDX-License-Identifier: Apache-2.0
"""pytest-benchmark view of the embedding cases (same cases as `python -m recops.bench --families embedding`).

    pytest bench/bench_embedding.py --benchmark-only --benchmark-autosave
"""

import functools

import pytest
import torch

from recops.bench.embedding import SHAPES, embedding_cases

OP_IMPLS = {
    "embedding_bags fwd": ["recops", "nn.EmbeddingBag", "fbgemm TBE"],
    "embedding_bags train step (rowwise_adagrad)": ["recops", "nn.EmbeddingBag(sparse)+Adagrad",
                                                    "fbgemm TBE rowwise_adagrad"],
}
PARAMS = [(op, impl) for op, impls in OP_IMPLS.items() for impl in impls]


@functools.lru_cache(maxsize=1)
def _cases(device):
    return {(c.op, c.shape): c for c in embedding_cases(torch.device(device), quick=False)}


@pytest.mark.parametrize("shape", [f"{name} {dist}" for name, *_, dists in SHAPES for dist in dists])
@pytest.mark.parametrize("op,impl", PARAMS)
def test_embedding(time_case, device, op, impl, shape):
    case = _cases(str(device))[(op, shape)]
    if impl not in case.impls:
        pytest.skip(f"{impl} is not available here (fbgemm-gpu-cpu missing, or not a CPU multi-table shape)")
    time_case(case, impl, 10, 1)
