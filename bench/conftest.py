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
