# SPDX-License-Identifier: Apache-2.0
"""pytest-benchmark view of the retrieval cases (same cases as `python -m recops.bench --families retrieval`).

    pytest bench/bench_retrieval.py --benchmark-only --benchmark-autosave

Uses the quick sizes (N=20,000); the full 1M x 64 run is `python -m recops.bench --families retrieval`.
"""

import functools

import pytest
import torch

from recops.bench.retrieval import retrieval_cases


@functools.lru_cache(maxsize=1)
def _cases():
    return [(c, name) for c in retrieval_cases(torch.device("cpu"), quick=True) for name in c.impls]


@pytest.mark.parametrize("index", range(16))
def test_retrieval(benchmark, index):
    cases = _cases()
    if index >= len(cases):
        pytest.skip("fewer cases here (hnswlib or faiss not installed)")
    case, name = cases[index]
    benchmark.group = f"{case.op} {case.shape.split(';')[0]}"
    benchmark.name = name
    if case.flops:
        benchmark.extra_info["flops"] = case.flops
    benchmark.pedantic(case.impls[name], rounds=5, warmup_rounds=1)
