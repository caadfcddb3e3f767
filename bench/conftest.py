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
    recops.bench Case (CUDA-synchronised), grouped by op, shape and device, with GB/s when the case counts bytes
    and GFLOP/s when it counts FLOPs."""

    def run_case(case, impl, rounds, warmup_rounds):
        fn = case.impls[impl]
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        benchmark.group = f"{case.op} {case.shape} {device.type}"

        def run():
            fn()
            sync()

        benchmark.pedantic(run, rounds=rounds, warmup_rounds=warmup_rounds)
        median = benchmark.stats.stats.median if benchmark.stats else None  # no timing under --benchmark-disable
        for key, rate, amount in (("bytes", "GB/s", case.bytes_moved), ("flops", "GFLOP/s", case.flops)):
            if amount:
                benchmark.extra_info[key] = amount
                if median:
                    benchmark.extra_info[rate] = amount / median / 1e9

    return run_case
