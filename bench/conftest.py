# SPDX-License-Identifier: Apache-2.0
import pytest
import torch

import recops


def _devices():
    devs = ["cpu"]
    if recops.has_cuda() and torch.cuda.is_available():
        devs.append("cuda")
    return devs


@pytest.fixture(params=_devices())
def device(request):
    return torch.device(request.param)


@pytest.fixture
def time_case(benchmark, device):
    """time_case(case, impl, rounds, warmup_rounds): pytest-benchmark timing of one implementation of a
    recops.bench Case (CUDA-synchronised), grouped by op, shape and device, with GB/s when the case counts bytes."""

    def run_case(case, impl, rounds, warmup_rounds):
        fn = case.impls[impl]
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        benchmark.group = f"{case.op} {case.shape} {device.type}"

        def run():
            fn()
            sync()

        benchmark.pedantic(run, rounds=rounds, warmup_rounds=warmup_rounds)
        if case.bytes_moved:
            benchmark.extra_info["bytes"] = case.bytes_moved
            benchmark.extra_info["GB/s"] = case.bytes_moved / benchmark.stats.stats.median / 1e9

    return run_case
