# SPDX-License-Identifier: Apache-2.0
"""Benchmark cases: each recops op timed against named baselines in the same process.

Used by the runner (`python -m recops.bench`) and by the pytest-benchmark files in bench/. Every family adds a
`<family>_cases(device, quick)` function returning `Case`s and registers it in CASE_BUILDERS.
"""

import dataclasses
from typing import Callable, Dict, List

import torch

from .attention import attention_cases
from .bf16 import bf16_cases, bf16_model_cases
from .dlrm import dlrm_cases
from .dynamic import dynamic_cases
from .embedding import embedding_cases
from .graph import graph_cases
from .hstu import hstu_cases
from .jagged import jagged_cases
from .models import models_cases
from .ordinal import ordinal_cases
from .retrieval import retrieval_cases
from .sampled_softmax import sampled_softmax_cases


@dataclasses.dataclass
class Case:
    """One op at one shape. impls maps an implementation name to a zero-argument callable (inputs prebuilt);
    "recops" is the op under test, every other entry a baseline (a case without "recops" is a machine
    reference, e.g. matmul GFLOP/s). bytes_moved gives GB/s, flops GFLOP/s (useful work only)."""

    op: str
    shape: str
    impls: Dict[str, Callable[[], object]]
    bytes_moved: int = 0  # for GB/s; 0 when not meaningful
    flops: float = 0  # for GFLOP/s; 0 when not meaningful
    sequences: int = 0  # for sequences/s (model-level cases)
    samples: int = 0  # for samples/s (model-level cases)
    # The first call of an implementation after another one ran rebuilds its state (DLRM: only one model fits in
    # memory): the runner then starts every block with an untimed call and times at least MIN_SWITCH_CALLS calls.
    switch_cost: bool = False


CASE_BUILDERS: Dict[str, Callable[[torch.device, bool], List[Case]]] = {
    "jagged": jagged_cases,
    "hstu": hstu_cases,
    "attention": attention_cases,
    "bf16": bf16_cases,
    "bf16_models": bf16_model_cases,
    "models": models_cases,
    "ordinal": ordinal_cases,
    "embedding": embedding_cases,
    "retrieval": retrieval_cases,
    "dlrm": dlrm_cases,
    "sampled_softmax": sampled_softmax_cases,
    "dynamic": dynamic_cases,
    "graph": graph_cases,
}
