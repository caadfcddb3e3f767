# SPDX-License-Identifier: Apache-2.0
"""Runtime glue shared by every op: thread count, CUDA device/stream, device error flags."""

import contextlib

import torch

from . import _C

_CHECKS = True


def checks_enabled() -> bool:
    """Whether CUDA ops read their device error flag after each call (one sync) to raise ValueError."""
    return _CHECKS


def set_checks(enabled: bool) -> None:
    """Turn the per-call read of CUDA error flags on or off. Kernels still bounds-check every index."""
    global _CHECKS
    _CHECKS = bool(enabled)


def num_threads() -> int:
    return torch.get_num_threads()


def eager(*tensors) -> bool:
    """True outside torch.compile when every tensor is a plain Tensor (or None): the op may then call its
    implementation directly and skip the torch.library dispatch (~60 us a call on the 2-core VM); the custom op
    stays the path for compile, export and tensor subclasses."""
    return not torch.compiler.is_compiling() and all(t is None or type(t) is torch.Tensor for t in tensors)


class Launch:
    """Context for one kernel call on `t`'s device.

    Inside, `stream` is torch's current CUDA stream (as an int) and `flag` a zeroed int32 [1] device tensor the
    kernels OR error bits into; on CPU both are 0/None. After the block, `error_bits()` returns the flag's value
    (0 when nothing went wrong, when checks are off, or during CUDA-graph capture).
    """

    def __init__(self, t: torch.Tensor):
        self.cuda = t.device.type == "cuda"
        self.device = t.device
        self.stream = 0
        self.flag = None
        self._guard = contextlib.nullcontext()
        if self.cuda:
            if not _C.has_cuda():
                raise TypeError(f"recops was built without CUDA; got a tensor on {t.device}")
            self._guard = torch.cuda.device(t.device)

    def __enter__(self):
        self._guard.__enter__()
        if self.cuda:
            self.stream = torch.cuda.current_stream(self.device).cuda_stream
            self.flag = torch.zeros(1, dtype=torch.int32, device=self.device)
        return self

    def __exit__(self, *exc):
        return self._guard.__exit__(*exc)

    def error_bits(self) -> int:
        if self.flag is None or not _CHECKS or torch.cuda.is_current_stream_capturing():
            return 0
        return int(self.flag.item())


# Error bits set by CUDA kernels (cuda/common/cuda_check.cuh).
ERR_BAD_OFFSETS = 1
ERR_TOO_LONG = 2
ERR_BAD_INDEX = 4
ERR_BAD_ORDER = 8
