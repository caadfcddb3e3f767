# SPDX-License-Identifier: Apache-2.0
import os

import pytest
import torch
from hypothesis import settings

import recops

settings.register_profile("dev", max_examples=20, deadline=None)
settings.register_profile("ci", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

CUDA_OK = recops.has_cuda() and torch.cuda.is_available()


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device and a CUDA build of recops")


def _devices():
    return ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
        not CUDA_OK, reason="needs a CUDA device and a CUDA build of recops")])]


@pytest.fixture(params=_devices())
def device(request):
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
